"""lm-eval's real task YAMLs, offline: ``datasets.load_dataset`` answered with synthetic rows.

Every hub dataset that the paper's benchmarks read gets rows with that dataset's real columns and
types (from the dataset cards and the columns lm-eval's YAMLs and ``utils.py`` use), so lm-eval's
own prompts, ``process_docs``, filters, metrics and group aggregation run unchanged.  Nothing is
downloaded: a dataset this module does not know is refused, loudly.

In-process: ``with offline_hub.installed(): ...`` (or the ``real_tasks`` pytest fixture).
Subprocesses (``lm_eval``, ``roma-eval``): ``env=offline_hub.subprocess_env()`` puts
``site/sitecustomize.py`` on PYTHONPATH, which installs the same patch at interpreter start.

Rows are deterministic (seeded by dataset, config and split).  Answers are fixed by construction
but meaningless to a random tiny model; what the tests check is that every stage agrees with
lm-eval, not accuracy.  ``ROWS_PER_SPLIT`` rows per split (MMLU's ``dev`` has 5, as on the hub).
"""

from __future__ import annotations

import os
import random
from contextlib import contextmanager
from pathlib import Path

ROWS_PER_SPLIT = int(os.environ.get("OFFLINE_HUB_ROWS", "8"))
SITE = Path(__file__).parent / "site"

_WORDS = ("river stone lamp garden violin copper meadow harbor pencil candle forest mirror ladder orchard "
          "window marble rocket saddle tunnel blanket").split()
_VERBS = "carries lifts paints follows answers measures builds opens cleans reads".split()


def _phrase(rng: random.Random, n: int = 3) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def _sentence(rng: random.Random) -> str:
    return f"The {rng.choice(_WORDS)} {rng.choice(_VERBS)} the {_phrase(rng, 2)}"


def _mmlu(rng, i, name, split):
    return {"question": f"{_sentence(rng)}. Which word fits best?", "subject": name,
            "choices": [_phrase(rng, 2) for _ in range(4)], "answer": rng.randrange(4)}


def _arc(rng, i, name, split):
    # ARC has 3-, 4- and 5-choice questions and letter or digit answer keys: rows cycle through all of them.
    n = (3, 4, 5, 4)[i % 4]
    labels = list("ABCDE"[:n]) if i % 3 else [str(k + 1) for k in range(n)]
    return {"id": f"{name}-{split}-{i}", "question": f"{_sentence(rng)}?",
            "choices": {"text": [_phrase(rng, 1 + k % 3) for k in range(n)], "label": labels},
            "answerKey": labels[rng.randrange(n)]}


def _hellaswag(rng, i, name, split):
    ctx_a, ctx_b = f"{_sentence(rng)}.", f"then the {_phrase(rng, 2)}"
    return {"ind": i, "activity_label": rng.choice(_WORDS).capitalize(), "ctx_a": ctx_a, "ctx_b": ctx_b,
            "ctx": f"{ctx_a} {ctx_b}", "endings": [f"{_phrase(rng, 3)} [title] {rng.choice(_WORDS)}." for _ in range(4)],
            "source_id": f"activitynet~v_{i}", "split": split, "split_type": "indomain",
            "label": str(rng.randrange(4)) if split != "test" else ""}


def _piqa(rng, i, name, split):
    return {"goal": f"How do you {rng.choice(_VERBS)[:-1]} a {rng.choice(_WORDS)}?",
            "sol1": f"Use the {_phrase(rng, 2)}.", "sol2": f"Use the {_phrase(rng, 3)}.", "label": rng.randrange(2)}


def _winogrande(rng, i, name, split):
    a, b = rng.sample(_WORDS, 2)
    return {"sentence": f"The {a} is taller than the {b} because the _ {rng.choice(_VERBS)} the {rng.choice(_WORDS)}.",
            "option1": a, "option2": b, "answer": rng.choice("12") if split != "test" else ""}


def _boolq(rng, i, name, split):
    return {"question": f"does the {rng.choice(_WORDS)} {rng.choice(_VERBS)[:-1]} the {rng.choice(_WORDS)}",
            "passage": f"{_sentence(rng)}. {_sentence(rng)}.", "idx": i, "label": rng.randrange(2)}


def _gsm8k(rng, i, name, split):
    a, b = rng.randrange(2, 20), rng.randrange(2, 20)
    return {"question": f"Ann has {a} {rng.choice(_WORDS)}s and buys {b} more. How many does she have?",
            "answer": f"Ann has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} of them.\n#### {a + b}"}


# hub dataset path -> row maker (rng, index, config name, split) -> row
DATASETS = {
    "cais/mmlu": _mmlu,
    "allenai/ai2_arc": _arc,
    "Rowan/hellaswag": _hellaswag,
    "baber/piqa": _piqa,
    "allenai/winogrande": _winogrande,
    "aps/super_glue": _boolq,
    "openai/gsm8k": _gsm8k,
}
_CONFIGS = {"aps/super_glue": {"boolq"}}  # datasets with several configs of which only some are synthesised
SPLITS = ("train", "validation", "test", "dev")


def rows(path: str, name: str | None, split: str, n: int = ROWS_PER_SPLIT) -> list[dict]:
    rng = random.Random(f"{path}/{name}/{split}")
    return [DATASETS[path](rng, i, name, split) for i in range(5 if split == "dev" else n)]


def load_dataset(path, name=None, *args, **kwargs):
    import datasets

    if path not in DATASETS or (path in _CONFIGS and name not in _CONFIGS[path]):
        raise RuntimeError(f"offline_hub has no synthetic rows for dataset {path!r} config {name!r}; "
                           "add a row maker to tests/offline_hub (tests never download)")
    return datasets.DatasetDict({split: datasets.Dataset.from_list(rows(path, name, split)) for split in SPLITS})


@contextmanager
def installed():
    """``datasets.load_dataset`` (which lm-eval calls) answers from the synthetic rows inside the block."""
    import datasets

    original = datasets.load_dataset
    datasets.load_dataset = load_dataset
    try:
        yield
    finally:
        datasets.load_dataset = original


def install() -> None:
    import datasets

    datasets.load_dataset = load_dataset


def subprocess_env(**extra) -> dict:
    """The environment for a child process that must see the synthetic datasets."""
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SITE), env.get("PYTHONPATH", "")) if p)
    return env

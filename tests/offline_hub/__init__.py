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
lm-eval, not accuracy.  ``ROWS_PER_SPLIT`` rows per split (MMLU's ``dev`` has 5, as on the hub);
``with offline_hub.more_rows(train=9000): ...`` asks for more rows in some splits (row ``i`` is the same
whatever the count, so the first rows never change).

The router-training mixture's sources (tasks/roma_paper_train) are here too.  Their training rows can
*collide* with the evaluation benchmarks: every ``COLLIDE_EVERY``-th training row (index 3, 53, 103, ...)
copies an evaluation document's question text (``COLLISIONS`` says which source copies which
benchmark; BIG-Bench's rows embed it in their formatted ``inputs`` with words around it), so a test of
the mixture's decontamination has something to find.
"""

from __future__ import annotations

import functools
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
            "ctx": f"{ctx_a} {ctx_b}",
            "endings": [f"{_phrase(rng, 3)} [title] {rng.choice(_WORDS)}." for _ in range(4)],
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


# ---- the router-training mixture's sources (tasks/roma_paper_train) ------------------------------------

COLLIDE_EVERY = 50
# mixture source -> the evaluation benchmark whose question text some of its training rows copy:
# (eval dataset path, config, split, column), as lm-eval's roma_paper tasks read them.
COLLISIONS = {
    "commonsense_qa": ("cais/mmlu", "anatomy", "test", "question"),
    "superglue_rte": ("Rowan/hellaswag", None, "validation", "ctx"),
    "sciq": ("allenai/ai2_arc", "ARC-Challenge", "test", "question"),
    "openbookqa": ("allenai/ai2_arc", "ARC-Easy", "test", "question"),
    "social_iqa": ("baber/piqa", None, "validation", "goal"),
    "knowref": ("allenai/winogrande", "winogrande_xl", "validation", "sentence"),
    "multirc": ("aps/super_glue", "boolq", "validation", "question"),
    "bigbench": ("openai/gsm8k", "main", "test", "question"),
}


def _collision(source: str, i: int, split: str) -> str | None:
    """The evaluation question a training row copies, or None (most rows, and every non-training split)."""
    if split != "train" or i % COLLIDE_EVERY != 3:
        return None
    path, name, eval_split, column = COLLISIONS[source]
    return _default_rows(path, name, eval_split)[(i // COLLIDE_EVERY) % ROWS_PER_SPLIT][column]


@functools.cache
def _default_rows(path, name, split):
    return rows(path, name, split)


def _distinct(rng, k: int, n: int = 2) -> list[str]:
    out: list[str] = []
    while len(out) < k:
        phrase = _phrase(rng, n)
        if phrase not in out:
            out.append(phrase)
    return out


def _bigbench(rng, i, name, split):
    # hails/bigbench <task>_zero_shot: idx int32, inputs str, targets list[str], multiple_choice_targets
    # list[str], multiple_choice_scores list[int32] (1 marks a right choice).  Some BIG-Bench tasks mix in
    # free-form rows with no choices (lm-eval's bigbench utils.filter_multiple_choice drops them): every
    # 97th row here is one.
    copied = _collision("bigbench", i, split)  # inputs are formatted: a copy sits inside, words around it
    question = f"Q: From a quiz. {copied} Answer with a number.\nA:" if copied else f"Q: {_sentence(rng)}?\nA:"
    if i % 97 == 96:
        return {"idx": i, "inputs": question, "targets": [_phrase(rng, 2)], "multiple_choice_targets": [],
                "multiple_choice_scores": []}
    choices = _distinct(rng, 2 + i % 4)
    gold = rng.randrange(len(choices))
    return {"idx": i, "inputs": question, "targets": [choices[gold]], "multiple_choice_targets": choices,
            "multiple_choice_scores": [int(k == gold) for k in range(len(choices))]}


def _label(rng, split, k):
    return -1 if split == "test" else rng.randrange(k)  # SuperGLUE's test splits are unlabelled (-1)


def _cb(rng, i, name, split):
    # label: 0 entailment, 1 contradiction, 2 neutral
    return {"premise": f"{_sentence(rng)}.", "hypothesis": f"the {_phrase(rng, 2)} is {rng.choice(_WORDS)}",
            "idx": i, "label": _label(rng, split, 3)}


def _copa(rng, i, name, split):
    # label: 0 choice1, 1 choice2; question: "cause" or "effect"
    return {"premise": f"{_sentence(rng)}.", "choice1": f"{_sentence(rng)}.", "choice2": f"{_sentence(rng)}.",
            "question": rng.choice(("cause", "effect")), "idx": i, "label": _label(rng, split, 2)}


def _multirc(rng, i, name, split):
    # One row per (paragraph, question, candidate answer); label: 0 False, 1 True (the answer is correct).
    question = _collision("multirc", i, split) or f"what does the {rng.choice(_WORDS)} {rng.choice(_VERBS)[:-1]}"
    return {"paragraph": f"{_sentence(rng)}. {_sentence(rng)}.", "question": question,
            "answer": _phrase(rng, 2), "idx": {"paragraph": i // 6, "question": i // 3, "answer": i},
            "label": _label(rng, split, 2)}


def _record(rng, i, name, split):
    entities = _distinct(rng, 4, 1)
    passage = f"The {entities[0]} {rng.choice(_VERBS)} the {entities[1]}.\n@highlight\nThe {entities[2]} waits"
    spans = {"text": entities, "start": [0] * 4, "end": [1] * 4}  # offsets unused by lm-eval and by us
    answers = [] if split == "test" else [rng.choice(entities)]
    if answers and i % 2:  # ReCoRD lists the text of every mention of the answer: every other row has two,
        other = entities[(entities.index(answers[0]) + 1) % 4]  # one of them (i % 4 == 3) unlike any entity
        answers.append(f"the {other.capitalize()}." if i % 4 == 3 else other)  # but for SQuAD's normalisation
    return {"passage": passage, "query": f"The @placeholder {rng.choice(_VERBS)} the {entities[3]}.",
            "entities": entities + [entities[0]], "entity_spans": spans, "answers": answers,
            "idx": {"passage": i, "query": i}}


def _rte(rng, i, name, split):
    # label: 0 entailment, 1 not_entailment
    premise = _collision("superglue_rte", i, split) or f"{_sentence(rng)}."
    return {"premise": premise, "hypothesis": f"{_sentence(rng)}.", "idx": i, "label": _label(rng, split, 2)}


def _wic(rng, i, name, split):
    # label: 0 False, 1 True; start/end: character offsets of the word in each sentence
    word = rng.choice(_WORDS)
    s1, s2 = f"The {word} {rng.choice(_VERBS)} the {_phrase(rng, 2)}.", f"A {_phrase(rng, 1)} near the {word}."
    return {"word": word, "sentence1": s1, "sentence2": s2, "start1": 4, "end1": 4 + len(word),
            "start2": s2.index(word), "end2": s2.index(word) + len(word), "idx": i, "label": _label(rng, split, 2)}


def _wsc(rng, i, name, split):
    # wsc.fixed: span indices are *word* indices into text (lm-eval's preprocess_wsc relies on that)
    a, b = _distinct(rng, 2, 1)
    words = ["The", a, rng.choice(_VERBS), "the", b, "because", "it", "was", rng.choice(_WORDS) + "."]
    return {"text": " ".join(words), "span1_index": 1, "span2_index": 6, "span1_text": a, "span2_text": "it",
            "idx": i, "label": _label(rng, split, 2)}


_SUPER_GLUE = {"boolq": _boolq, "cb": _cb, "copa": _copa, "multirc": _multirc, "record": _record, "rte": _rte,
               "wic": _wic, "wsc.fixed": _wsc}


def _super_glue(rng, i, name, split):
    return _SUPER_GLUE[name](rng, i, name, split)


def _commonsense_qa(rng, i, name, split):
    question = _collision("commonsense_qa", i, split) or f"Where would you find a {rng.choice(_WORDS)}?"
    return {"id": f"csqa-{split}-{i}", "question": question, "question_concept": rng.choice(_WORDS),
            "choices": {"label": list("ABCDE"), "text": _distinct(rng, 5, 1)},
            "answerKey": "" if split == "test" else rng.choice("ABCDE")}  # the hub's test split is unlabelled


def _siqa(rng, i, name, split):
    # lighteval/siqa: label is a string, "1".."3"
    context = _collision("social_iqa", i, split) or f"Sam {rng.choice(_VERBS)} the {_phrase(rng, 2)}."
    return {"context": context, "question": "How would Sam feel afterwards?", "answerA": _phrase(rng, 1),
            "answerB": _phrase(rng, 2), "answerC": _phrase(rng, 3), "label": str(1 + rng.randrange(3))}


def _openbookqa(rng, i, name, split):
    stem = _collision("openbookqa", i, split) or f"{_sentence(rng)} because"
    return {"id": f"obqa-{split}-{i}", "question_stem": stem,
            "choices": {"text": _distinct(rng, 4), "label": list("ABCD")}, "answerKey": rng.choice("ABCD")}


def _sciq(rng, i, name, split):
    question = _collision("sciq", i, split) or f"What {rng.choice(_VERBS)} the {rng.choice(_WORDS)}?"
    d1, d2, d3, right = _distinct(rng, 4, 1)
    return {"question": question, "distractor3": d3, "distractor1": d1, "distractor2": d2, "correct_answer": right,
            "support": f"{_sentence(rng)}. {_sentence(rng)}."}


_NAMES = "Anna Ben Carla David Emma Frank Grace Henry".split()


def _knowref(rng, i, name, split):
    # coref-data/knowref_60k_raw: tokenized sentences (spaces around punctuation, "is n't"); the pronoun to
    # resolve is the one token in [square brackets] of swapped_sentence, whose names are the candidates.
    # correct_candidate: "candidate_0" or "candidate_1"; annotation_strength: "1".."5" (strings).
    a, b = rng.sample(_NAMES, 2)
    copied = _collision("knowref", i, split)
    if copied:  # a WinoGrande sentence, its blank turned into the bracketed pronoun
        swapped = copied.replace("_", "[he]").replace(".", " .")
    else:
        pronoun, rest = rng.choice((("[he]", f"{rng.choice(_VERBS)} the {rng.choice(_WORDS)}"),
                                    ("[his]", f"{rng.choice(_WORDS)} was {rng.choice(_WORDS)}"),
                                    ("[her]", "to the meadow"), ("[her]", f"{rng.choice(_WORDS)} is n't new")))
        swapped = f"{a} {rng.choice(_VERBS)} {b} , so {pronoun} {rest} ."
    return {"original_sentence": swapped.replace("[", "").replace("]", ""), "swapped_sentence": swapped,
            "candidate0": a, "candidate1": b, "correct_candidate": f"candidate_{rng.randrange(2)}",
            "annotation_strength": str(1 + rng.randrange(5))}


# The BIG-Bench configs tasks/roma_paper_train reads (hails/bigbench has one config per task).
BIGBENCH_TASKS = ("abstract_narrative_understanding", "bbq_lite_json", "epistemic_reasoning", "fact_checker",
                  "logical_deduction", "logical_fallacy_detection", "play_dialog_same_or_different",
                  "reasoning_about_colored_objects", "strategyqa", "tracking_shuffled_objects")

# hub dataset path -> row maker (rng, index, config name, split) -> row
DATASETS = {
    "cais/mmlu": _mmlu,
    "allenai/ai2_arc": _arc,
    "Rowan/hellaswag": _hellaswag,
    "baber/piqa": _piqa,
    "allenai/winogrande": _winogrande,
    "aps/super_glue": _super_glue,
    "openai/gsm8k": _gsm8k,
    "hails/bigbench": _bigbench,
    "tau/commonsense_qa": _commonsense_qa,
    "lighteval/siqa": _siqa,
    "allenai/openbookqa": _openbookqa,
    "allenai/sciq": _sciq,
    "coref-data/knowref_60k_raw": _knowref,
}
# datasets with several configs of which only some are synthesised
_CONFIGS = {"aps/super_glue": set(_SUPER_GLUE), "hails/bigbench": {f"{t}_zero_shot" for t in BIGBENCH_TASKS},
            "allenai/openbookqa": {"main"}}
SPLITS = ("train", "validation", "test", "dev")
_SPLITS = {"hails/bigbench": ("default", "train", "validation")}  # datasets whose splits differ from SPLITS


def rows(path: str, name: str | None, split: str, n: int = ROWS_PER_SPLIT) -> list[dict]:
    rng = random.Random(f"{path}/{name}/{split}")
    return [DATASETS[path](rng, i, name, split) for i in range(5 if split == "dev" else n)]


def _load(path, name, counts: dict[str, int], paths=None):
    import datasets

    if paths is not None and path not in paths:
        counts = {}

    if path not in DATASETS or (path in _CONFIGS and name not in _CONFIGS[path]):
        raise RuntimeError(f"offline_hub has no synthetic rows for dataset {path!r} config {name!r}; "
                           "add a row maker to tests/offline_hub (tests never download)")
    return datasets.DatasetDict({split: datasets.Dataset.from_list(rows(path, name, split, counts.get(split,
                                                                                                      ROWS_PER_SPLIT)))
                                 for split in _SPLITS.get(path, SPLITS)})


def load_dataset(path, name=None, *args, **kwargs):
    return _load(path, name, {})


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


@contextmanager
def more_rows(datasets_=None, **counts: int):
    """Inside the block, ``datasets.load_dataset`` answers with ``counts[split]`` rows in the named splits
    (``more_rows(train=9000)``), the others as usual; ``datasets_``, a set of hub paths, limits that to those
    datasets.  It installs a new loader function, so a cache keyed on the loader (tasks/roma_paper_train/
    utils.py keys its evaluation questions on it) sees the new data."""
    import datasets

    def load(path, name=None, *args, **kwargs):
        return _load(path, name, counts, datasets_)

    original = datasets.load_dataset
    datasets.load_dataset = load
    try:
        yield
    finally:
        datasets.load_dataset = original

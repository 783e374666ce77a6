"""The paper's 49k router-training mixture as lm-eval tasks (docs/tasks.md has the why of every choice).

Each source is an lm-eval task over the hub dataset's *training* split, whose documents are, in order:

1. the task's own ``process_docs`` (lm-eval's, e.g. BIG-Bench's filter that drops free-form rows);
2. decontaminated: a document one of whose text fields, normalised (lower case, letters and digits
   only), equals the question of an evaluation document of ``roma_paper`` is left out;
3. a seeded sample of ``metadata.sample_size`` documents (all of them when there are fewer), kept in
   the dataset's order.  The seed is ``sample_seed`` (_mixture_template: 1234) and the task's name,
   ``random.Random(f"{sample_seed}/{task}")``, so every run, machine and Python picks the same documents.

``MixtureTask`` is how a source reuses lm-eval's own YAML: ``lm_eval_task: commonsense_qa/default.yaml``
is loaded with lm-eval's YAML loader from the installed lm-eval and our keys override its keys, as
``include:`` would.  (``include:`` itself takes a path relative to the including YAML, and our tasks/
sit at different distances from lm_eval/tasks in a checkout and in a wheel.)
"""

from __future__ import annotations

import functools
import logging
import random
import re
from pathlib import Path

from lm_eval.api.task import ConfigurableTask
from lm_eval.utils import general_detokenize

log = logging.getLogger(__name__)

SEED = 1234  # default of the YAML key sample_seed (set in _mixture_template)
MIN_WORDS = 4  # evaluation questions shorter than this (after normalising) are too generic to match on

# The evaluation benchmarks (tasks/roma_paper) as lm-eval reads them: lm-eval task YAML (under
# lm_eval/tasks; its dataset, config and evaluated split are read from it) -> the column with the question.
EVAL_QUESTIONS = {
    "mmlu/default/mmlu_*.yaml": "question",
    "hellaswag/hellaswag.yaml": "ctx",
    "arc/arc_challenge.yaml": "question",
    "arc/arc_easy.yaml": "question",
    "piqa/piqa.yaml": "goal",
    "winogrande/default.yaml": "sentence",
    "super_glue/boolq/default.yaml": "question",
    "gsm8k/gsm8k.yaml": "question",
}


def lm_eval_tasks_dir() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


def lm_eval_config(relative: str, resolve_func: bool = True) -> dict:
    """An lm-eval task YAML (path under lm_eval/tasks), includes merged, as lm-eval's loader reads it."""
    from lm_eval.tasks._yaml_loader import load_yaml

    path = lm_eval_tasks_dir() / relative
    if not path.is_file():
        raise FileNotFoundError(f"lm-eval has no task YAML {relative} (looked in {lm_eval_tasks_dir()}); "
                                "tasks/roma_paper_train needs lm-eval >= 0.4.13")
    return load_yaml(path, resolve_func=resolve_func)


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


def eval_splits() -> list[tuple[str, str | None, str, str]]:
    """(dataset path, config, split, question column) of every evaluation benchmark, from lm-eval's YAMLs."""
    out = []
    for pattern, column in EVAL_QUESTIONS.items():
        for path in sorted(lm_eval_tasks_dir().glob(pattern)):
            cfg = lm_eval_config(str(path.relative_to(lm_eval_tasks_dir())), resolve_func=False)
            split = cfg.get("test_split") or cfg.get("validation_split")
            out.append((cfg["dataset_path"], cfg.get("dataset_name"), split, column))
    return out


def eval_questions() -> frozenset[str]:
    """Normalised questions of every evaluation document (cached per ``datasets.load_dataset`` function)."""
    import datasets

    return _eval_questions(datasets.load_dataset)


@functools.lru_cache(maxsize=2)
def _eval_questions(load_dataset) -> frozenset[str]:
    questions = set()
    for path, name, split, column in eval_splits():
        for text in load_dataset(path, name)[split][column]:
            if len(norm := normalise(text).split()) >= MIN_WORDS:
                questions.add(" ".join(norm))
    return frozenset(questions)


def contaminated(dataset, questions: frozenset[str]) -> list[int]:
    """Indices of the documents one of whose text columns is an evaluation question."""
    columns = [c for c, f in dataset.features.items() if getattr(f, "dtype", None) in ("string", "large_string")]
    if not columns:
        return []
    table = dataset.select_columns(columns)[:]  # one batch: column -> list (iterating a Column is per-row slow)
    values = zip(*(table[c] for c in columns))
    return [i for i, row in enumerate(values) if any(isinstance(v, str) and normalise(v) in questions for v in row)]


class MixtureDocs:
    """process_docs of a mixture task: the task's own process_docs, decontamination, a seeded sample."""

    def __init__(self, task: str, size: int, base=None, seed: int = SEED):
        self.task, self.size, self.base, self.seed = task, int(size), base, seed
        self._done: dict = {}

    def __repr__(self) -> str:
        return (f"roma_paper_train: {self.size} documents sampled with random.Random('{self.seed}/{self.task}') "
                f"from the decontaminated {self.base.__name__ + ' of the ' if self.base else ''}training split")

    def __call__(self, dataset):
        # lm-eval calls process_docs once per use of the split (few-shot pool, training and evaluation docs).
        key = getattr(dataset, "_fingerprint", None) or id(dataset)
        if key not in self._done:
            self._done = {key: self._process(dataset)}
        return self._done[key]

    def _process(self, dataset):
        if self.base is not None:
            dataset = self.base(dataset)
        dropped = set(contaminated(dataset, eval_questions()))
        keep = [i for i in range(len(dataset)) if i not in dropped]
        if dropped:
            log.info("%s: %d of %d documents share a question with an evaluation benchmark and are left out",
                     self.task, len(dropped), len(dataset))
        if len(keep) < self.size:
            log.warning("%s: only %d documents for a sample of %d; all of them are used", self.task, len(keep),
                        self.size)
        else:
            keep = sorted(random.Random(f"{self.seed}/{self.task}").sample(keep, self.size))
        return dataset.select(keep)


class MixtureTask(ConfigurableTask):
    """A mixture source: lm-eval's YAML ``lm_eval_task`` (optional) under our keys, with MixtureDocs."""

    def __init__(self, config: dict | None = None, **kwargs):
        config = dict(config or {})
        config.pop("class", None)
        base_yaml = config.pop("lm_eval_task", None)
        seed = config.pop("sample_seed", SEED)
        base = lm_eval_config(base_yaml) if base_yaml else {}
        for key in ("tag", "group", "task_list", "include"):  # lm-eval's _build_task drops these too
            base.pop(key, None)
        merged = {**base, **config}
        meta = merged["metadata"] = {**(base.get("metadata") or {}), **(config.get("metadata") or {})}
        if base_yaml:
            meta["lm_eval_task"] = base_yaml
        meta["sample_seed"] = f"{seed}/{merged['task']}"
        merged["process_docs"] = MixtureDocs(merged["task"], meta["sample_size"], merged.get("process_docs"), seed)
        super().__init__(config=merged, **kwargs)


# ---- KnowRef (coref-data/knowref_60k_raw): no lm-eval task exists ----------------------------------------
# Rows are tokenized sentences whose pronoun is the one [bracketed] token of swapped_sentence; the two
# candidates are names in that sentence.  They become WinoGrande's columns (sentence with a "_" blank,
# option1, option2, answer "1"/"2") and are scored by lm-eval's own winogrande functions: one prompt per
# candidate (the sentence up to the pronoun, the candidate in its place), the rest as the continuation.

_POSSESSIVE = {"his", "its", "their", "my", "our", "your"}
# "her" is possessive unless the next token is one of these (or punctuation, or nothing): "told her to go".
_AFTER_OBJECT_HER = set("""to and that a an the in on at for with as from up out off down back about over into
onto by if when because so but or again away too very is was are were be has had will would can could should
not n't 's this these those than then there here what who how why while all both""".split())


def _her_is_possessive(following: list[str]) -> bool:
    return bool(following) and following[0].isalpha() and following[0].lower() not in _AFTER_OBJECT_HER


def _knowref_doc(doc: dict) -> dict:
    words = doc["swapped_sentence"].split()
    marked = [i for i, w in enumerate(words) if len(w) > 2 and w[0] == "[" and w[-1] == "]"]
    k = marked[0]
    pronoun = words[k][1:-1].lower()
    # The dataset card says candidate_0/candidate_1; the hub's rows (and the KnowRef60k source) say candidate0.
    options = [doc.get("candidate0", doc.get("candidate_0")), doc.get("candidate1", doc.get("candidate_1"))]
    if pronoun in _POSSESSIVE or (pronoun == "her" and _her_is_possessive(words[k + 1:])):
        options = [f"{o}'s" for o in options]
    words = [w.replace("_", " ") for w in words]  # the blank must be the only underscore
    sentence = general_detokenize(" ".join(words[:k] + ["_"] + words[k + 1:]))
    return {"sentence": sentence, "option1": options[0], "option2": options[1],
            "answer": "1" if doc["correct_candidate"] == "candidate_0" else "2"}


def knowref_docs(dataset):
    return dataset.map(_knowref_doc)


# ---- ReCoRD: lm-eval's super_glue/record YAML cannot load on transformers >= 5 ---------------------------
# (its util.py imports transformers.data.metrics.squad_metrics, which transformers 5 removed).  These are
# its prompt functions, unchanged (tests/test_paper_tasks.py checks them against lm-eval's source); the
# score is acc against the first answer, not lm-eval's squad em/f1, which needs that module.

def record_docs(dataset):
    def process(doc):
        return {"passage": doc["passage"], "query": doc["query"], "entities": sorted(set(doc["entities"])),
                "answers": sorted(set(doc["answers"]))}

    # Only documents whose first answer is one of the candidate entities have a gold choice.
    return dataset.map(process).filter(_record_has_gold)


def _record_has_gold(doc) -> bool:
    return bool(doc["answers"]) and doc["answers"][0] in doc["entities"]


def record_doc_to_text(doc):
    initial_text, *highlights = doc["passage"].strip().split("\n@highlight\n")
    text = initial_text + "\n\n"
    for highlight in highlights:
        text += f"  - {highlight}.\n"
    return text


def _format_answer(query, entity):
    return f"  - {query}".replace("@placeholder", entity)


def record_doc_to_target(doc):
    return _format_answer(query=doc["query"], entity=doc["answers"][0])


def record_doc_to_choice(doc):
    return [_format_answer(query=doc["query"], entity=ans) for ans in doc["entities"]]

"""The paper's 49k router-training mixture as lm-eval tasks (docs/tasks.md has the why of every choice).

Each source is an lm-eval task over the hub dataset's *training* split, whose documents are, in order:

1. the task's own ``process_docs`` (lm-eval's, e.g. BIG-Bench's filter that drops free-form rows);
2. decontaminated: a document is left out when one of its text fields, normalised (lower case, runs of
   letters and digits), repeats an evaluation question of ``roma_paper`` (``EvalQuestions``: a shared
   13-gram, or a shorter question whole, wherever it sits in the field -- inside BIG-Bench's formatted
   ``inputs`` too);
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
import string
from pathlib import Path

from lm_eval.api.task import ConfigurableTask
from lm_eval.utils import general_detokenize

log = logging.getLogger(__name__)

SEED = 1234  # default of the YAML key sample_seed (set in _mixture_template)
# Decontamination (EvalQuestions), in normalised words.  NGRAM: lm-eval's decontamination (and GPT-3's) n-gram.
NGRAM = 13
WHOLE_WORDS = 8  # a question of 8-12 words is found whole inside a field (GPT-3's smallest n, 8)
MIN_WORDS = 4  # a question of 4-7 words only as a whole field; shorter ones are too generic to match on

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


class EvalQuestions:
    """The evaluation questions, as decontamination looks for them in a training text (both normalised):

    - a question of ``NGRAM`` (13) words or more: any of its 13-grams (word runs) in the text -- a copy with words
      added, dropped or changed elsewhere still shares one, while two questions written independently share a
      13-word run only by a template;
    - a question of 8-12 words: the whole question in the text, at word boundaries;
    - a question of 4-7 words: a text that is the question and nothing else.

    Word runs are kept as hashes, with the hashes of their first 8 words to reject most text positions with one
    set lookup; a ~35k-question suite takes ~10^6 of each.
    """

    def __init__(self, questions):
        self.runs: set[int] = set()
        self.starts: set[int] = set()
        self.lengths: set[int] = set()
        self.exact: set[str] = set()
        for question in questions:
            words = normalise(question).split()
            if len(words) >= NGRAM:
                for i in range(len(words) - NGRAM + 1):
                    self._add(words[i:i + NGRAM])
            elif len(words) >= WHOLE_WORDS:
                self._add(words)
            elif len(words) >= MIN_WORDS:
                self.exact.add(" ".join(words))

    def _add(self, run: list[str]) -> None:
        self.runs.add(hash(tuple(run)))
        self.starts.add(hash(tuple(run[:WHOLE_WORDS])))
        self.lengths.add(len(run))

    def found_in(self, text: str) -> bool:
        """Does the text repeat an evaluation question?"""
        norm = normalise(text)
        if norm in self.exact:
            return True
        words = norm.split()
        for i in range(len(words) - WHOLE_WORDS + 1):
            if hash(tuple(words[i:i + WHOLE_WORDS])) in self.starts and any(
                    i + n <= len(words) and hash(tuple(words[i:i + n])) in self.runs for n in self.lengths):
                return True
        return False


def eval_questions() -> EvalQuestions:
    """Every evaluation document's question (cached per ``datasets.load_dataset`` function)."""
    import datasets

    return _eval_questions(datasets.load_dataset)


@functools.lru_cache(maxsize=2)
def _eval_questions(load_dataset) -> EvalQuestions:
    return EvalQuestions(text for path, name, split, column in eval_splits()
                         for text in load_dataset(path, name)[split][column])


def contaminated(dataset, questions: EvalQuestions) -> list[int]:
    """Indices of the documents one of whose text columns repeats an evaluation question."""
    columns = [c for c, f in dataset.features.items() if getattr(f, "dtype", None) in ("string", "large_string")]
    if not columns:
        return []
    table = dataset.select_columns(columns)[:]  # one batch: column -> list (iterating a Column is per-row slow)
    seen: dict[str, bool] = {}  # a text repeated across rows (MultiRC's paragraph, ReCoRD's passage) is read once

    def found(text: str) -> bool:
        if text not in seen:
            seen[text] = questions.found_in(text)
        return seen[text]

    return [i for i, row in enumerate(zip(*(table[c] for c in columns)))
            if any(isinstance(v, str) and found(v) for v in row)]


class MixtureDocs:
    """process_docs of a mixture task: the task's own process_docs, decontamination, a seeded sample."""

    def __init__(self, task: str, size: int, base=None, seed: int = SEED):
        self.task, self.size, self.base, self.seed = task, int(size), base, seed
        self._done: dict = {}
        self.decontaminated: tuple[int, int] | None = None  # (documents left out, of how many), once processed

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
        self.decontaminated = (len(dropped), len(dataset))
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
# its prompt functions, unchanged (tests/test_paper_tasks.py checks them against lm-eval's source).  Its
# metric, em, counts the prediction right when it equals *any* of the document's answers after SQuAD's
# normalisation; so does ours: doc_to_target lists every entity that em counts as right (lm-eval's
# multiple-target form, whose acc is "the prediction is one of them"), the first answer's entity first.

def record_docs(dataset):
    def process(doc):
        return {"passage": doc["passage"], "query": doc["query"], "entities": sorted(set(doc["entities"])),
                "answers": sorted(set(doc["answers"]))}

    # Only documents with a gold entity among the choices can be scored (all of the hub's should).
    return dataset.map(process).filter(lambda doc: bool(record_gold_entities(doc)))


def squad_normalise(text: str) -> str:
    """SQuAD's answer normalisation, as transformers' squad_metrics.normalize_answer (lm-eval's record em): lower
    case, punctuation removed, the articles a / an / the removed, whitespace collapsed."""
    text = "".join(c for c in text.lower() if c not in string.punctuation)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def record_gold_entities(doc) -> list[int]:
    """Indices of the entities lm-eval's em counts as right (equal to an answer once both are normalised), in the
    order of the answers (sorted, as lm-eval's process_docs leaves them), so the first is the first answer's."""
    entities = [squad_normalise(e) for e in doc["entities"]]
    return list(dict.fromkeys(i for answer in doc["answers"] for i, e in enumerate(entities)
                              if e == squad_normalise(answer)))


def record_doc_to_text(doc):
    initial_text, *highlights = doc["passage"].strip().split("\n@highlight\n")
    text = initial_text + "\n\n"
    for highlight in highlights:
        text += f"  - {highlight}.\n"
    return text


def _format_answer(query, entity):
    return f"  - {query}".replace("@placeholder", entity)


def record_doc_to_choice(doc):
    return [_format_answer(query=doc["query"], entity=ans) for ans in doc["entities"]]

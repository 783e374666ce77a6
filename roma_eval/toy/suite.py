"""The toy task suite: names, splits and the in-memory datasets behind the lm-eval YAMLs in tasks/toy/.

Everything is generated, deterministically, from the fixed tables of ``world.py``: no files, no
downloads.  ``GENERATOR_VERSION`` changes whenever the generated text changes, and is part of the
toy model's cache key.
"""

from __future__ import annotations

from functools import cache

from roma_eval.errors import RomaEvalError
from roma_eval.toy.benchmarks import BENCHMARKS, benchmark_docs, gsm8k_docs
from roma_eval.toy.families import FAMILIES, family_templates
from roma_eval.toy.templates import make_docs

GENERATOR_VERSION = "9"
SEED = f"roma-eval-toy-v{GENERATOR_VERSION}"
TEST_FRACTION = 0.2  # of each training family, held out as its lm-eval test split
FAMILY_SIZE = 800  # docs per training family: 640 train x 8 families = 5,120 training samples

EVAL_TASKS = tuple(f"toy_{name}" for name in BENCHMARKS) + ("toy_gsm8k",)
TRAIN_TASKS = tuple(f"toy_train_{name}" for name in FAMILIES)
ALL_TASKS = EVAL_TASKS + TRAIN_TASKS
EVAL_GROUP, TRAIN_GROUP = "toy_suite", "toy_train"


@cache
def task_splits(task: str) -> dict[str, tuple[dict, ...]]:
    """The docs of ``task`` by split: ``{"test": ...}`` for a benchmark, ``{"train", "test"}`` for a family."""
    if task == "toy_gsm8k":
        return {"test": tuple(gsm8k_docs(SEED))}
    if task.startswith("toy_train_") and task[len("toy_train_"):] in FAMILIES:
        docs = make_docs(task, family_templates(task[len("toy_train_"):]), SEED, limit=FAMILY_SIZE)
        n_test = round(len(docs) * TEST_FRACTION)
        # make_docs already shuffled: the first n_test docs are a random held-out set.
        return {"test": tuple(docs[:n_test]), "train": tuple(docs[n_test:])}
    if task.startswith("toy_") and task[len("toy_"):] in BENCHMARKS:
        return {"test": tuple(benchmark_docs(task[len("toy_"):], SEED))}
    raise RomaEvalError(f"unknown toy task {task!r}; choose one of {', '.join(ALL_TASKS)}")


def build_dataset(task: str):
    """``task``'s splits as a ``datasets.DatasetDict`` (what lm-eval's ``custom_dataset`` must return)."""
    import datasets

    return datasets.DatasetDict({split: datasets.Dataset.from_list(list(docs))
                                 for split, docs in task_splits(task).items()})


def mixture_training_docs() -> list[dict]:
    """The train splits of all training families, in a fixed order."""
    return [doc for task in TRAIN_TASKS for doc in task_splits(task)["train"]]

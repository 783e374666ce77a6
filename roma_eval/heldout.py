"""Held-out accuracy of a training mixture: did router training do anything, on documents it did not see?

A training task's held-out documents are its lm-eval evaluation split (``Task.eval_docs``: the test split, else the
validation split) when that split is not its training split; the toy mixture's families hold 20% out as their test
split.  A task whose evaluation split *is* its training split has none: the paper's mixture (tasks/roma_paper_train)
evaluates its own sampled training documents, by design (they are the successful set's candidates, Eq. 2).  For
such tasks the training documents are scored instead, and every caller says so: that figure shows the fit, not
generalisation.  Accuracy is lm-eval's ``acc`` (``scoring.score_samples``, tested equal to lm-eval per sample), the
mean over the documents.

`roma-eval train` and the other router-training verbs print it before and after training; the demo prints it per
router row, and the toy's router learning rates were chosen on it (docs/toy.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from roma_eval.samples import Sample


@dataclass(frozen=True)
class HeldoutSet:
    samples: list[Sample]
    tasks: list[str]  # the leaf tasks whose documents these are
    without: list[str]  # leaf tasks with no held-out split (their evaluation split is their training split)
    split: str  # "held-out": the tasks' evaluation splits; "train": their training documents (none had a held-out)

    def describe(self) -> str:
        """What the documents are, in words, for the line that prints the accuracy."""
        n = len(self.samples)
        if self.split == "train":
            return (f"{n} training documents: {_names(self.without)} evaluate their own training documents, so there "
                    "is no held-out split; this shows the fit, not generalisation")
        left_out = (f"; {_names(self.without)} left out (their evaluation split is their training split)"
                    if self.without else "")
        return f"{n} held-out documents of {_names(self.tasks)}{left_out}"


def _names(tasks: list[str], shown: int = 3) -> str:
    """Task names for a printed line: a mixture's 22 sources as three of them and a count."""
    more = f" and {len(tasks) - shown} more tasks" if len(tasks) > shown + 1 else ""
    return ", ".join(tasks if not more else tasks[:shown]) + more


def _eval_split(task) -> str | None:
    """The split lm-eval evaluates a task on (``Task.eval_docs``: the test split, else the validation split)."""
    return task.config.test_split if task.has_test_docs() else task.config.validation_split


def heldout_set(task_names: Sequence[str], include_path: Sequence[str | Path] = (),
                limit: int | None = None) -> HeldoutSet:
    """The multiple-choice documents of ``task_names`` (groups expanded) that training does not read: each task's
    evaluation split where it differs from its training split, the first ``limit`` of each; when no task has one,
    the training documents (``split="train"``)."""
    from roma_eval.harness import task_manager
    from roma_eval.samples import samples_from_task

    tasks = task_manager(include_path, task_names).load(list(task_names))["tasks"]
    held = sorted(n for n, t in tasks.items() if _eval_split(t) not in (None, t.config.training_split))
    without = sorted(set(tasks) - set(held))
    names, split = (held, "eval") if held else (without, "train")
    samples = [s for name in names for s in samples_from_task(tasks[name], split, limit)
               if s.output_type == "multiple_choice"]
    return HeldoutSet(samples, names, without, "held-out" if held else "train")


def accuracy(model, tokenizer, samples: Sequence[Sample], batch_size: int = 64) -> float:
    """Mean lm-eval ``acc`` of ``model`` as it is (routers included) on ``samples``."""
    from roma_eval.scoring import score_samples

    results = score_samples(model, tokenizer, samples, batch_size=batch_size)
    return sum(r.acc for r in results) / len(results)


def heldout_accuracy(model, tokenizer, task_names: Sequence[str], include_path: Sequence[str | Path] = (),
                     limit: int | None = None, batch_size: int = 64) -> tuple[float, int]:
    """(mean acc, documents) on ``heldout_set(task_names, include_path, limit)``."""
    held = heldout_set(task_names, include_path, limit)
    return accuracy(model, tokenizer, held.samples, batch_size), len(held.samples)

"""lm-eval tasks -> Samples, built with lm-eval's own prompt machinery so our prompts are lm-eval's.

For each document we call the task's ``fewshot_context`` and ``construct_requests`` exactly as
lm-eval's ``build_all_requests`` does, so a Sample's context and continuations are the strings that
lm-eval scores.  The text given to the embedding model is the task's ``doc_to_text`` (the
question as posed, without answer options), a choice the paper leaves open.

Multiple-input tasks (lm-eval's ``winogrande``, ``wsc273``; ``doc_to_text`` returns the gold index)
put the choices in the *context*: one prompt per choice, all scored on the same continuation.
Their Sample keeps the per-choice prompts in ``choice_contexts``; ``context`` is the part the
prompts share (their common prefix), and the embedded text is that prefix, a blank and the shared
continuation ("The trophy does not fit because the _ is too big."): the question without the
options, label-free, like ``doc_to_text`` of an ordinary task.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from roma_eval.errors import RomaEvalError

SPLITS = ("eval", "train")


@dataclass(frozen=True)
class Sample:
    task: str
    doc_id: int
    context: str  # the prompt (multiple-input tasks: the common prefix of the per-choice prompts)
    output_type: str  # "multiple_choice" or "generate_until"
    text: str  # what the embedding model sees
    continuations: tuple[str, ...] = ()  # multiple choice: target delimiter + choice, as lm-eval scores them
    choices: tuple[str, ...] = ()  # multiple choice: the raw choices (acc_norm divides by their length)
    gold: int | str = -1  # multiple choice: index of the right choice (the first, when several); generation: the target
    until: tuple[str, ...] = ()  # generation: stop sequences
    choice_contexts: tuple[str, ...] = ()  # multiple-input tasks: the prompt of each choice
    golds: tuple[int, ...] = ()  # several right choices (ReCoRD's gold entities): all of them, ``gold`` first

    def __post_init__(self):
        if self.golds and self.golds[0] != self.gold:
            raise ValueError(f"Sample {self.task}/{self.doc_id}: gold {self.gold} is not golds[0] ({self.golds})")

    @property
    def right_choices(self) -> tuple[int, ...]:
        """Every choice that counts as right: lm-eval's acc is 1 when the prediction is one of them."""
        return self.golds or (int(self.gold),)

    @property
    def contexts(self) -> tuple[str, ...]:
        """The prompt each choice is scored after (one per continuation)."""
        return self.choice_contexts or (self.context,) * len(self.continuations)

    @property
    def multiple_input(self) -> bool:
        return bool(self.choice_contexts)


def shared_prompt(contexts: Sequence[str]) -> str:
    """The part every prompt shares: the prompt itself, or the common prefix of several cut after its last
    whitespace (whole words: "the rocket" and "the river" share "the ", not "the r")."""
    distinct = list(dict.fromkeys(contexts))
    if len(distinct) == 1:
        return distinct[0]
    shared = os.path.commonprefix(distinct)
    return shared[: max(shared.rfind(space) for space in " \t\n") + 1]


def label_free_prompt(contexts: Sequence[str], continuation: str = "") -> str:
    """A prompt without an answer in it: the context its choices share, or (one prompt per choice) their
    shared part, a blank "_" and the shared ``continuation`` -- the question as posed, no option filled in."""
    shared = shared_prompt(contexts)
    return shared if len(set(contexts)) == 1 else f"{shared}_{continuation}"


def _gold_indices(task_name, doc_id, target, choices) -> tuple[int, ...]:
    # lm-eval's process_results: the gold is an index, or a choice's text; multiple-input tasks give the
    # index through doc_to_text; a list of indices is several right choices (lm-eval's multiple_target:
    # acc = the prediction is one of them).
    targets = target if isinstance(target, list) and target else [target]
    found = [choices.index(t) if isinstance(t, str) and t in choices else t for t in targets]
    if all(isinstance(i, int) and 0 <= i < len(choices) for i in found):
        return tuple(dict.fromkeys(found))
    raise RomaEvalError(f"task {task_name} doc {doc_id} has no single gold label, nor a list of them, among its "
                        f"{len(choices)} choices (doc_to_target gave {target!r}); RoMA, C3PO and the oracle need "
                        "labelled tasks")


def _gold_fields(task_name, doc_id, target, choices) -> dict:
    """Sample's ``gold`` and ``golds`` (the latter only when several choices are right)."""
    golds = _gold_indices(task_name, doc_id, target, choices)
    return {"gold": golds[0], "golds": golds if len(golds) > 1 else ()}


def _docs(task, split: str):
    if split == "eval":
        return list(task.doc_iterator())
    if not task.has_training_docs():
        raise RomaEvalError(f"task {task.config.task} has no training split; use it for evaluation, "
                            "or give a task with a training_split for training")
    return list(enumerate(task.training_docs()))


def samples_from_task(task, split: str = "eval", limit: int | None = None) -> list[Sample]:
    name = task.config.task
    docs = _docs(task, split)[:limit]
    out = []
    for doc_id, doc in docs:
        ctx = task.fewshot_context(doc, num_fewshot=task.config.num_fewshot or 0, gen_prefix=task.doc_to_prefix(doc))
        requests = task.construct_requests(doc=doc, ctx=ctx, metadata=(name, doc_id, 1))
        requests = requests if isinstance(requests, list) else [requests]
        text = task.doc_to_text(doc)
        if task.OUTPUT_TYPE == "multiple_choice" and getattr(task, "multiple_input", 0):
            choices = tuple(task.doc_to_choice(doc))
            contexts = tuple(r.args[0] for r in requests[: len(choices)])
            continuation = requests[0].args[1]
            out.append(Sample(name, doc_id, shared_prompt(contexts), "multiple_choice",
                              label_free_prompt(contexts, continuation),
                              continuations=(continuation,) * len(choices), choices=choices,
                              choice_contexts=contexts, **_gold_fields(name, doc_id, text, list(choices))))
        elif task.OUTPUT_TYPE == "multiple_choice":
            choices = tuple(task.doc_to_choice(doc))
            out.append(Sample(name, doc_id, ctx, "multiple_choice", text if isinstance(text, str) else ctx,
                              continuations=tuple(r.args[1] for r in requests[: len(choices)]), choices=choices,
                              **_gold_fields(name, doc_id, task.doc_to_target(doc), list(choices))))
        elif task.OUTPUT_TYPE == "generate_until":
            gen_kwargs = requests[0].args[1]
            out.append(Sample(name, doc_id, ctx, "generate_until", text if isinstance(text, str) else ctx,
                              gold=str(task.doc_to_target(doc)),
                              until=tuple(gen_kwargs.get("until", ()))))
        else:
            raise RomaEvalError(f"task {name} has output_type {task.OUTPUT_TYPE}; roma-eval handles "
                                "multiple_choice and generate_until tasks")
    return out


def load_samples(task_names: Sequence[str], split: str = "eval", include_path: Sequence[str | Path] = (),
                 limit: int | None = None) -> list[Sample]:
    """Samples of the named lm-eval tasks or groups (group members expanded), in task order."""
    if split not in SPLITS:
        raise RomaEvalError(f"split {split!r} is unknown; use one of {', '.join(SPLITS)}")
    from roma_eval.harness import task_manager

    manager = task_manager(include_path, task_names)
    tasks = manager.load(list(task_names))["tasks"]  # leaf tasks, groups expanded
    samples = [s for name in sorted(tasks) for s in samples_from_task(tasks[name], split, limit)]
    if not samples:
        raise RomaEvalError(f"tasks {', '.join(task_names)} have no documents in the {split} split")
    return samples

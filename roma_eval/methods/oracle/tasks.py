"""The oracle's view of lm-eval tasks: loading them (groups kept, for lm-eval's own aggregation), the gold
label of a document, a ``Sample`` from the requests lm-eval built for it, and the tasks' filter pipelines.

The oracle changes only what the model computes: lm-eval builds every request (prompts, few-shot examples,
multiple-input choices), and lm-eval scores every answer (filters, ``process_results``, aggregation, groups).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from roma_eval.errors import RomaEvalError
from roma_eval.harness import check_limit, task_items, task_manager
from roma_eval.samples import (
    SPLITS,
    Sample,
    _gold_fields,
    label_free_prompt,
    shared_prompt,
)

OUTPUT_TYPES = ("multiple_choice", "generate_until")


@dataclass
class OracleTasks:
    """What ``lm_eval.simple_evaluate`` is given: the top-level tasks and groups as asked (``items``), their
    TaskManager, the documents to run on (``split``, ``limit``) and how their prompts are built (``chat_template``)."""

    names: list[str]
    items: list  # lm-eval Task / Group objects, one per requested name (a tag gives its tasks)
    manager: object  # lm_eval.tasks.TaskManager
    split: str = "eval"
    limit: int | None = None
    loaded: dict = field(default_factory=dict)  # TaskManager.load(items): tasks, groups, group_map
    chat_template: dict = field(default_factory=dict)  # apply_chat_template / fewshot_as_multiturn keywords

    @property
    def tasks(self) -> dict:
        """Leaf task name -> lm-eval Task."""
        return self.loaded["tasks"]


def load_oracle_tasks(names: Sequence[str], include_path: Sequence[str | Path] = (), split: str = "eval",
                      limit: int | None = None, chat_template: dict | None = None) -> OracleTasks:
    """lm-eval's tasks and groups for ``names``, checked for what the oracle needs (labelled multiple-choice or
    generation tasks with documents in ``split``); ``split="train"`` evaluates the training documents.
    ``chat_template``: lm-eval's apply_chat_template / fewshot_as_multiturn keywords
    (``commands.options.chat_template_args``)."""
    if split not in SPLITS:
        raise RomaEvalError(f"split {split!r} is unknown; use one of {', '.join(SPLITS)}")
    check_limit(limit)
    names = list(dict.fromkeys(n for n in names if n))
    if not names:
        raise RomaEvalError("no tasks given; pass --tasks with lm-eval task or group names")
    manager = task_manager(include_path, names)
    try:
        loaded, items = task_items(manager, names)
    except ValueError as exc:  # lm-eval refuses a task asked for twice (as a task and inside a group)
        raise RomaEvalError(f"--tasks {','.join(names)}: {exc}; ask for each task once") from None
    for name, task in loaded["tasks"].items():
        if task.OUTPUT_TYPE not in OUTPUT_TYPES:
            raise RomaEvalError(f"task {name} has output_type {task.OUTPUT_TYPE}; the oracle handles "
                                "multiple_choice and generate_until tasks")
        if split == "train":
            if not task.has_training_docs():
                raise RomaEvalError(f"task {name} has no training split; drop it from --tasks or use --split eval")
            # lm-eval evaluates test docs first: point them at the training split (few-shot examples drawn
            # from that split then skip the document itself, as lm-eval does whenever the splits coincide).
            task.set_config(key="test_split", value=task.config.training_split)
        docs = list(task.doc_iterator(limit=limit))
        if not docs:
            raise RomaEvalError(f"task {name} has no documents in the {split} split; drop it from --tasks")
        if task.OUTPUT_TYPE == "multiple_choice":
            for doc_id, doc in docs:
                gold_fields(task, doc, doc_id)
    return OracleTasks(names, items, manager, split, limit, loaded, dict(chat_template or {}))


def multiple_input(task) -> bool:
    return task.OUTPUT_TYPE == "multiple_choice" and bool(getattr(task, "multiple_input", 0))


def reported_metrics(task) -> tuple[str, ...]:
    """The multiple-choice metrics the oracle steers for: acc and/or acc_norm, those the task reports."""
    reported = tuple(m for m in ("acc", "acc_norm") if m in task.aggregation())
    return reported or ("acc", "acc_norm")


def gold_fields(task, doc: dict, doc_id: int) -> dict:
    """A Sample's ``gold`` and ``golds``: the right choice(s), as lm-eval's ``process_results`` finds them
    (multiple-input tasks give it through ``doc_to_text``; ReCoRD has several)."""
    choices = list(task.doc_to_choice(doc))
    target = task.doc_to_text(doc) if multiple_input(task) else task.doc_to_target(doc)
    return _gold_fields(task.config.task, doc_id, target, choices)


def choice_sample(task, instances: Sequence) -> Sample:
    """A multiple-choice ``Sample`` from the requests lm-eval built for one document (sorted by ``idx``): the
    contexts and continuations are the very strings lm-eval asks the model to score."""
    first = instances[0]
    doc, doc_id = first.doc, first.doc_id
    choices = tuple(task.doc_to_choice(doc))
    if len(instances) != len(choices) or [i.idx for i in instances] != list(range(len(choices))):
        raise RomaEvalError(f"task {first.task_name} asks {len(instances)} log-likelihoods for a document with "
                            f"{len(choices)} choices (a metric such as acc_mutual_info); the oracle scores one "
                            "request per choice: drop that metric or the task")
    contexts = tuple(i.args[0] for i in instances)
    continuations = tuple(i.args[1] for i in instances)
    gold = gold_fields(task, doc, doc_id)
    text = label_free_prompt(contexts, continuations[0])
    if multiple_input(task):
        return Sample(first.task_name, doc_id, shared_prompt(contexts), "multiple_choice", text,
                      continuations=continuations, choices=choices, choice_contexts=contexts, **gold)
    return Sample(first.task_name, doc_id, contexts[0], "multiple_choice", text, continuations=continuations,
                  choices=choices, **gold)


def request_key(instances: Sequence) -> str:
    """A document's requests, hashed: a stored outcome is reused only for the very same prompts."""
    from hashlib import sha256

    text = json.dumps([list(i.args) for i in instances], sort_keys=True, default=str, ensure_ascii=False)
    return sha256(text.encode("utf-8")).hexdigest()[:16]


def filter_ensembles(task) -> list:
    """The task's filter pipelines, built from its config exactly as lm-eval's Task does ("none": take_first)."""
    from lm_eval.filters import build_filter_ensemble

    filter_list = task.config.filter_list
    if not filter_list:
        return [build_filter_ensemble("none", [["take_first", None]])]
    return [build_filter_ensemble(entry["name"], [[f["function"], {k: v for k, v in f.items() if k != "function"}]
                                                  for f in entry["filter"]]) for entry in filter_list]


def judge_generation(task, doc: dict, text: str, ensembles=None) -> dict[str, dict]:
    """filter name -> {"filtered": the filtered answer, "metrics": process_results of it}: what lm-eval's
    evaluator logs for one generated ``text``."""
    out = {}
    for ensemble in ensembles if ensembles is not None else filter_ensembles(task):
        responses = [[text]]
        for make in ensemble.filters:
            responses = make().apply(responses, [doc])
        filtered = list(responses)[0]
        out[ensemble.name] = {"filtered": filtered, "metrics": task.process_results(doc, [filtered])}
    return out


def marks(judged: dict[str, dict]) -> dict[str, bool]:
    """"metric,filter" -> full marks (the metric is 1) for a judged answer."""
    return {f"{metric},{name}": value == 1 for name, entry in judged.items()
            for metric, value in entry["metrics"].items()}

"""ICL through lm-eval: a few-shot sampler that hands lm-eval each document's retrieved examples, and the run.

lm-eval builds few-shot prompts in ``ConfigurableTask.fewshot_context``: the task description, then ``num_fewshot``
examples from ``task.sampler.sample(n, eval_doc)``, each written as few-shot ``doc_to_text`` + target delimiter +
``doc_to_target`` + few-shot delimiter, then the document itself.  ``install_demonstrations`` is a task transform
that keeps all of that and changes only where the examples come from:

  - ``task.sampler`` becomes a ``RetrievedSampler`` returning the document's retrieved examples (the sampler is
    handed the evaluation document because the few-shot split is set to the evaluated split);
  - the few-shot ``doc_to_text`` / ``doc_to_target`` read an example's question (with its own task's target
    delimiter) and answer, written by the example's own task (``demonstrations.demonstration``), so the few-shot
    target delimiter is "" (multiple-input tasks such as winogrande read the question as their one "choice");
  - ``num_fewshot`` becomes k (lm-eval records it as the run's n-shot).

``run_icl`` then lets lm-eval evaluate the base model (lm-eval's ``HFLM``, through ``harness``) on the transformed
tasks, groups kept, and writes what ``lm_eval --output_path OUT --log_samples`` writes, with ``config.model`` set
to "icl" (so ``roma-eval report`` labels the row), an ``icl`` block and ``icl_demonstrations.json`` beside it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from lm_eval.api.samplers import ContextSampler

from roma_eval.errors import RomaEvalError
from roma_eval.methods.icl.config import IclConfig
from roma_eval.methods.icl.demonstrations import Demonstrations, build_demonstrations


class RetrievedSampler(ContextSampler):
    """lm-eval's few-shot sampler, answering with the evaluation document's retrieved examples."""

    def __init__(self, demonstrations: Demonstrations, task_name: str, **kwargs):
        super().__init__([], **kwargs)
        self.demonstrations = demonstrations
        self.task_name = task_name

    def sample(self, n: int, eval_doc=None, df=None, **kwargs):
        if eval_doc is None:
            raise RomaEvalError(f"task {self.task_name}: lm-eval did not say which document the examples are for")
        examples = self.demonstrations.examples(self.task_name, eval_doc)
        if len(examples) < n:
            raise RomaEvalError(f"task {self.task_name}: {len(examples)} examples retrieved, {n} asked for")
        return examples[:n]


def _question(example: dict) -> str:
    return example["question"]


def _question_as_choice(example: dict) -> list[str]:
    return [example["question"]]


def _first(example: dict) -> int:
    return 0


def _answer(example: dict) -> str:
    return example["answer"]


def install_demonstrations(task, demonstrations: Demonstrations, k: int) -> None:
    """Make lm-eval's ``task`` build its prompts with ``k`` retrieved examples per document (module docstring)."""
    multiple = bool(getattr(task, "multiple_input", 0))
    fewshot = replace(task.fewshot_cfg, sampler="roma_eval_retrieved", split=task.config.test_split,
                      process_docs=None, fewshot_indices=None, samples=None,
                      doc_to_text=_first if multiple else _question,
                      doc_to_choice=_question_as_choice if multiple else None, doc_to_target=_answer,
                      gen_prefix=None, target_delimiter="")
    task.fewshot_cfg = task.config.fewshot_config = fewshot
    task.sampler = RetrievedSampler(demonstrations, task.config.task)
    task.set_config(key="num_fewshot", value=k)


@dataclass
class IclRun:
    results_file: Path
    results: dict
    demonstrations: Demonstrations


@dataclass(frozen=True)
class RunSettings:
    """How lm-eval runs and writes an ICL evaluation: what ``lm_eval --output_path out_dir --log_samples`` with
    ``--model_args pretrained=model_name`` writes, where, over which tasks and documents."""

    out_dir: str | Path  # lm-eval's --output_path: the run goes to out_dir/<model_name, sanitized>/
    model_name: str  # the base model's hub id or path, recorded as model_args pretrained=
    include_path: Sequence[str | Path] = ()  # extra directories of task YAMLs
    limit: int | None = None  # documents per task, as lm-eval's --limit
    overwrite: bool = False  # replace results already in the run directory
    chat_template: dict | None = None  # lm-eval's apply_chat_template / fewshot_as_multiturn keywords
    # (commands.options.chat_template_args)


def run_icl(model, tokenizer, tasks: Sequence[str], run: RunSettings, config: IclConfig | None = None, *,
            train_tasks: Sequence[str], embedder=None, progress: bool = True) -> IclRun:
    """ICL with the base ``model`` on lm-eval ``tasks`` (groups allowed), examples drawn from ``train_tasks``;
    evaluated and written as ``run`` says (``harness.evaluate``, as the lm_eval CLI writes)."""
    from roma_eval import __version__
    from roma_eval.harness import evaluate, hf_model, run_dir, task_items, task_manager

    config = config or IclConfig()
    directory = run_dir(run.out_dir, run.model_name)
    if not run.overwrite and directory.is_dir() and any(directory.glob("results_*.json")):
        raise RomaEvalError(f"{directory} already holds results; choose another --output_path or pass --overwrite")
    tasks, train_tasks = list(dict.fromkeys(tasks)), list(dict.fromkeys(train_tasks))
    manager = task_manager(run.include_path, [*tasks, *train_tasks])
    loaded, items = task_items(manager, tasks)
    train = manager.load(train_tasks)["tasks"]
    demonstrations = build_demonstrations(model, tokenizer, train, loaded["tasks"], config, limit=run.limit,
                                          embedder=embedder, progress=progress)
    for task in loaded["tasks"].values():
        install_demonstrations(task, demonstrations, config.k)

    settings = {"pretrained": run.model_name, "icl_k": config.k, "icl_order": config.order,
                "icl_train_tasks": ",".join(train_tasks)}
    evaluation = evaluate(hf_model(model, tokenizer, config.batch_size), run.out_dir, items, model_args=settings,
                          task_manager=manager, limit=run.limit, **(run.chat_template or {}))
    evaluation.results["config"]["model"] = "icl"
    evaluation.results["icl"] = {"config": config.to_dict(), "train_tasks": train_tasks,
                                 "summary": demonstrations.summary, "demonstrations": "icl_demonstrations.json",
                                 "roma_eval_version": __version__}
    results_file = evaluation.save()
    demonstrations.save(results_file.parent)
    return IclRun(results_file, json.loads(results_file.read_text(encoding="utf-8")), demonstrations)

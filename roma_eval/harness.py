"""The one boundary to lm-eval's public API: task managers and task items, evaluating, and writing what
``lm_eval --output_path OUT --log_samples`` writes, where it writes it.

Everything in roma-eval that evaluates, and the tests, go through here; besides this module only the lm-eval
models of ours (``methods/*/lm_eval.py``), the registration modules and the task readers (``samples.py``,
``methods/oracle/tasks.py``, ``methods/oracle/generation.py``) import lm-eval (tests/test_imports.py checks it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from roma_eval.errors import RomaEvalError


def check_limit(limit: int | None, flag: str = "--limit") -> None:
    """``--limit`` as lm-eval reads it: documents per task, at least one (None: all)."""
    if limit is not None and limit < 1:
        raise RomaEvalError(f"{flag} {limit}: give at least 1 document per task, or leave it out")


def parse_model_args(text: str) -> dict:
    """lm-eval's "k=v,k=v" model_args, its values typed as lm-eval types them."""
    from lm_eval.utils import simple_parse_args_string

    return simple_parse_args_string(text)


def typed_value(text: str):
    """One model_args value typed as lm-eval types it ("4" -> 4, "True" -> True)."""
    from lm_eval.utils import handle_arg_string

    return handle_arg_string(text)


def chat_template_flags(apply_chat_template: bool | str, fewshot_as_multiturn: bool) -> list[str]:
    """The command-line flags (lm_eval's and roma-eval's alike) for apply_chat_template / fewshot_as_multiturn."""
    if not apply_chat_template:
        return []
    named = [] if apply_chat_template is True else [str(apply_chat_template)]
    return ["--apply_chat_template", *named, "--fewshot_as_multiturn", str(fewshot_as_multiturn).lower()]


def run_dir(output_path: str | Path, model_name: str) -> Path:
    """Where lm-eval's ``EvaluationTracker`` writes a model's results under ``--output_path``."""
    from lm_eval.utils import sanitize_model_name

    return Path(output_path) / sanitize_model_name(model_name)


def task_manager(include_path: Sequence[str | Path] = (), task_names: Sequence[str] = ()):
    """A TaskManager over roma-eval's tasks/ plus ``include_path``; lm-eval's ~14k built-in YAMLs are
    indexed only when a requested task is not found without them (that indexing takes ~12 s)."""
    from lm_eval.tasks import TaskManager

    from roma_eval.resources import tasks_dir

    paths = [str(tasks_dir()), *map(str, include_path)]
    manager = TaskManager(include_path=paths, include_defaults=False)
    if all(_resolvable(manager, name) for name in task_names):
        return manager
    manager = TaskManager(include_path=paths)
    unknown = [name for name in task_names if name not in manager.all_tasks]
    if unknown:
        raise RomaEvalError(f"unknown task(s) {', '.join(unknown)}; check the names with `lm_eval ls tasks` "
                            "or pass --include_path DIR holding their YAMLs")
    return manager


def _resolvable(manager, name: str) -> bool:
    """Whether ``manager``'s index holds ``name`` and, for a group, every member it names (``roma_paper``
    lives in tasks/, its members are lm-eval's own tasks).  Inline member configs define themselves."""
    entry = manager.task_index.get(name)
    if entry is None:
        return False
    members = (entry.cfg or {}).get("task", []) if entry.kind.name == "GROUP" else []
    return all(_resolvable(manager, member) for member in members if isinstance(member, str))


def task_items(manager, names: Sequence[str]) -> tuple[dict, list]:
    """What ``simple_evaluate`` is given for ``names`` -- per name its group (kept for lm-eval's aggregation) or
    its tasks -- and the loaded tasks (lm-eval's ``TaskManager.load`` of those items: "tasks", "groups", ...)."""
    items = []
    for name in names:
        loaded = manager.load([name])
        items.extend([loaded["groups"][name]] if name in loaded["groups"] else loaded["tasks"].values())
    return manager.load(items), items


@dataclass
class Evaluation:
    """One lm-eval evaluation, not yet written: its results (without samples), its samples and the tracker
    that writes them as lm-eval's CLI does."""

    results: dict
    samples: dict
    tracker: object

    @property
    def results_file(self) -> Path:
        """The results JSON ``save`` writes (lm-eval's name: results_<date_id>.json in the model's run dir)."""
        directory = Path(self.tracker.output_path) / str(self.tracker.general_config_tracker.model_name_sanitized)
        return directory / f"results_{self.tracker.date_id}.json"

    def save(self) -> Path:
        """Write results_<date>.json and samples_<task>_<date>.jsonl; a failed write leaves no cut-off file."""
        from roma_eval.storage import save_lm_eval_outputs

        save_lm_eval_outputs(self.tracker, self.results, self.samples)
        if not self.results_file.is_file():
            raise RomaEvalError(f"lm-eval did not write {self.results_file}; check that "
                                f"{self.results_file.parent} is writable")
        return self.results_file


def evaluate(model, output_path: str | Path | None, tasks: Sequence, **options) -> Evaluation | None:
    """``lm_eval.simple_evaluate(model, tasks=tasks, log_samples=True, **options)`` with the tracker of
    ``lm_eval --output_path output_path`` (None: nothing is to be saved); ``options`` are simple_evaluate's own
    (model_args, task_manager, limit, batch_size, device, apply_chat_template, ...).  Under ``accelerate launch``
    lm-eval gathers the results on the main process; the others get None."""
    import lm_eval
    from lm_eval.loggers import EvaluationTracker

    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    tracker = EvaluationTracker(output_path=None if output_path is None else str(output_path))
    results = lm_eval.simple_evaluate(model=model, tasks=list(tasks), log_samples=True, evaluation_tracker=tracker,
                                      **options)
    if results is None:
        return None
    samples = results.pop("samples")
    return Evaluation(results, samples, tracker)


def evaluate_tasks(lm, task_dict: dict, limit: int | None = None, **options) -> dict:
    """lm-eval's ``evaluator.evaluate`` of loaded tasks with logged samples (no tracker, nothing written);
    ``options``: its own keywords (apply_chat_template, ...)."""
    from lm_eval import evaluator

    return evaluator.evaluate(lm=lm, task_dict=task_dict, limit=limit, log_samples=True, **options)


def hf_model(model, tokenizer, batch_size):
    """lm-eval's ``HFLM`` around an already loaded transformers model (the base model's own scoring)."""
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)


def tables(results: dict) -> str:
    """lm-eval's results table, then its groups table when a group has an aggregate score
    (``lm_eval.utils.make_table``, as lm-eval's CLI prints them after a run)."""
    from lm_eval.utils import make_table

    out = [make_table(results)]
    if "groups" in results:
        out.append(make_table(results, "groups"))
    return "\n".join(out)

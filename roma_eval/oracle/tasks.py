"""The oracle's view of lm-eval tasks: samples, their documents, and lm-eval's own per-sample metrics.

The oracle changes only what the model computes; everything after that is lm-eval's: a multiple-choice
sample is scored by the task's ``process_results`` on (log-likelihood, is_greedy) pairs, a generated
answer goes through the task's filter pipelines and then ``process_results``, exactly as lm-eval's
evaluator does, and a task's figure is its ``aggregation()`` with lm-eval's standard error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from roma_eval.errors import RomaEvalError
from roma_eval.samples import Sample, _docs, samples_from_task, task_manager


@dataclass
class OracleTask:
    name: str
    task: object  # lm-eval Task
    samples: list[Sample]
    docs: dict[int, dict]
    n_docs: int  # in the split, before --limit (lm-eval's n-samples "original")

    @property
    def generative(self) -> bool:
        return self.task.OUTPUT_TYPE == "generate_until"

    @property
    def filters(self) -> list[str]:
        """Names of the task's filter pipelines ("none" when it has none): one per-sample line each."""
        return [ensemble.name for ensemble in getattr(self.task, "_filters", [])] or ["none"]

    def instance(self, sample: Sample):
        """The lm-eval request of a generation sample, as lm-eval's ``build_all_requests`` makes it."""
        requests = self.task.construct_requests(doc=self.docs[sample.doc_id], ctx=sample.context,
                                                metadata=(self.name, sample.doc_id, 1))
        return requests[0] if isinstance(requests, list) else requests

    def choice_metrics(self, sample: Sample, scores: Sequence[float], greedy: Sequence[bool]) -> dict:
        return self.task.process_results(self.docs[sample.doc_id], list(zip(scores, greedy)))

    def generation_metrics(self, samples: Sequence[Sample], responses: Sequence[str]) -> list[dict[str, dict]]:
        """Per sample: filter name -> (filtered response, metrics), through the task's filter pipelines."""
        instances = [self.instance(sample) for sample in samples]
        for instance, response in zip(instances, responses):
            instance.resps.append(response)
        ensembles = getattr(self.task, "_filters", [])
        for ensemble in ensembles:
            ensemble.apply(instances)
        out = []
        for sample, instance in zip(samples, instances):
            doc = self.docs[sample.doc_id]
            by_filter = {}
            for name in self.filters:
                filtered = instance.filtered_resps[name] if ensembles else instance.resps[0]
                by_filter[name] = {"filtered": filtered, "metrics": self.task.process_results(doc, [filtered])}
            out.append(by_filter)
        return out

    def aggregate(self, values: dict[str, list]) -> dict[str, float]:
        """lm-eval's ``metric,filter`` and ``metric_stderr,filter`` entries from per-sample values."""
        from lm_eval.api.metrics import stderr_for_metric

        aggregation = self.task.aggregation()
        out = {}
        for key, items in values.items():
            metric, _, filter_name = key.partition(",")
            function = aggregation[metric]
            out[key] = function(items)
            stderr = stderr_for_metric(metric=function, bootstrap_iters=100000)
            out[f"{metric}_stderr,{filter_name}"] = stderr(items) if stderr and len(items) > 1 else "N/A"
        return out


def load_oracle_tasks(names: Sequence[str], include_path: Sequence[str | Path] = (), split: str = "eval",
                      limit: int | None = None) -> tuple[list[OracleTask], dict[str, list[str]]]:
    """The leaf tasks of ``names`` (groups expanded, like ``samples.load_samples``) and the group map."""
    manager = task_manager(include_path, names)
    loaded = manager.load(list(names))
    tasks = []
    for name in sorted(loaded["tasks"]):
        task = loaded["tasks"][name]
        if task.OUTPUT_TYPE not in ("multiple_choice", "generate_until"):
            raise RomaEvalError(f"task {name} has output_type {task.OUTPUT_TYPE}; the oracle handles "
                                "multiple_choice and generate_until tasks")
        samples = samples_from_task(task, split, limit)
        if not samples:
            raise RomaEvalError(f"task {name} has no documents in the {split} split; drop it from --tasks")
        all_docs = _docs(task, split)
        tasks.append(OracleTask(name, task, samples, dict(all_docs[:limit]), len(all_docs)))
    return tasks, {group: list(children) for group, children in loaded.get("group_map", {}).items()}


def sample_record(task: OracleTask, sample: Sample, filter_name: str, resps, filtered) -> dict:
    """The fields lm-eval's ``--log_samples`` writes for one document (without the metric values)."""
    from lm_eval.utils import handle_non_serializable, hash_string

    doc = task.docs[sample.doc_id]
    target = task.task.doc_to_target(doc)
    return {"doc_id": sample.doc_id, "doc": doc, "target": target, "resps": resps, "filtered_resps": filtered,
            "filter": filter_name,
            "doc_hash": hash_string(json.dumps(doc, indent=2, default=handle_non_serializable, ensure_ascii=False)),
            "prompt_hash": hash_string(sample.context), "target_hash": hash_string(str(target))}

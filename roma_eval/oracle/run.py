"""Run the oracle over lm-eval tasks and write lm-eval-style results (store.py), resumably."""

from __future__ import annotations

import json
import math
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from roma_eval.oracle.config import OracleConfig
from roma_eval.oracle.descent import Outcome, descend
from roma_eval.oracle.generation import full_marks, generate, teacher_forced_batch
from roma_eval.oracle.store import OracleStore
from roma_eval.oracle.tasks import OracleTask, sample_record
from roma_eval.routing import resolve_layers, router_fingerprint
from roma_eval.samples import Sample
from roma_eval.scoring import build_choice_batch


@dataclass
class OracleRun:
    results_file: Path
    results: dict  # the lm-eval-style results JSON
    resumed_complete: bool  # the directory already held this complete run: nothing was computed


def _round(values, digits: int = 6):
    return [round(float(v), digits) for v in values]


def _oracle_fields(outcome: Outcome | None, seconds: float) -> dict:
    if outcome is None:  # a generation sample whose base answer already scores full marks: kept, no descent
        return {"steps": 0, "converged": True, "reported_step": 0, "loss_before": None, "loss_after": None,
                "loss_min": None, "losses": [], "seconds": seconds}
    return {"steps": outcome.steps, "converged": outcome.converged, "reported_step": outcome.reported_step,
            "loss_before": outcome.losses[0], "loss_after": outcome.losses[outcome.reported_step],
            "loss_min": min(outcome.losses), "losses": _round(outcome.losses), "seconds": seconds}


def _routing_line(sample: Sample, outcome: Outcome) -> dict:
    return {"doc_id": sample.doc_id, "base": torch.round(outcome.before.routing, decimals=6).tolist(),
            "oracle": torch.round(outcome.after.routing, decimals=6).tolist(),
            "variables": torch.round(outcome.after.variables, decimals=6).tolist()}


def _choice_lines(lm, task: OracleTask, chunk: Sequence[Sample], config: OracleConfig, layers):
    """Per-sample lines and the (sample, outcome) pairs of one batch of a multiple-choice task."""
    batch = build_choice_batch(lm.tokenizer, chunk, lm.max_length, lm.add_bos_token)
    started = time.perf_counter()
    outcomes = descend(lm.model, batch, config, layers)
    seconds = (time.perf_counter() - started) / len(chunk)
    lines = []
    for sample, outcome in zip(chunk, outcomes):
        after = task.choice_metrics(sample, outcome.after.scores, outcome.after.greedy)
        before = task.choice_metrics(sample, outcome.before.scores, outcome.before.greedy)
        pairs = [[s, g] for s, g in zip(outcome.after.scores, outcome.after.greedy)]
        lines.append({**sample_record(task, sample, "none", [[p] for p in pairs], pairs), "metrics": list(after),
                      **after, **{f"{k}_before": v for k, v in before.items()}, **_oracle_fields(outcome, seconds)})
    return lines, list(zip(chunk, outcomes))


def _generation_lines(lm, task: OracleTask, chunk: Sequence[Sample], config: OracleConfig, layers):
    """Per-sample lines and the (sample, outcome) pairs of one batch of a generation task (generation.py)."""
    started = time.perf_counter()
    texts = generate(lm, task, chunk)
    before = task.generation_metrics(chunk, texts)
    # "Until the prediction is right": a base answer with full marks is kept as it is, at no cost.
    todo = [i for i, by_filter in enumerate(before) if not full_marks(by_filter)]
    outcomes, responses = {}, {}
    if todo:
        batch, gold = teacher_forced_batch(lm, task, [chunk[i] for i in todo])
        found = descend(lm.model, batch, config, layers, generative=True)
        steered = generate(lm, task, [chunk[i] for i in todo], torch.stack([o.after.variables for o in found]),
                           layers, config.tokens, config.variables)
        for i, outcome, text, response in zip(todo, found, steered, gold):
            outcomes[i], texts[i], responses[i] = outcome, text, response
    seconds = (time.perf_counter() - started) / len(chunk)
    after = task.generation_metrics(chunk, texts)
    lines = []
    for i, sample in enumerate(chunk):
        for name in task.filters:
            metrics = after[i][name]["metrics"]
            lines.append({**sample_record(task, sample, name, [[texts[i]]], [after[i][name]["filtered"]]),
                          "metrics": list(metrics), **metrics,
                          **{f"{k}_before": v for k, v in before[i][name]["metrics"].items()},
                          "gold_response": responses.get(i), **_oracle_fields(outcomes.get(i), seconds)})
    return lines, [(chunk[i], outcome) for i, outcome in outcomes.items()]


def _length(sample: Sample) -> tuple[int, int]:
    """Batch like lengths together (less padding): every step runs the longest answer of the batch, the
    prefix cache its longest context.  Longest first, like lm-eval, so memory runs out at once if at all."""
    answer = max(map(len, sample.continuations), default=len(str(sample.gold)))
    return -answer, -len(sample.context)


def summarise(task: OracleTask, lines: list[dict]) -> tuple[dict, dict, dict]:
    """(oracle metrics, base metrics, convergence) of one task, from its per-sample lines."""
    oracle, base = defaultdict(list), defaultdict(list)
    for line in lines:
        for metric in line["metrics"]:
            oracle[f"{metric},{line['filter']}"].append(line[metric])
            base[f"{metric},{line['filter']}"].append(line[f"{metric}_before"])
    per_doc = {line["doc_id"]: line for line in lines}.values()
    steps = [line["steps"] for line in per_doc]
    converged = [line["steps"] for line in per_doc if line["converged"]]
    convergence = {"samples": len(steps), "converged": len(converged),
                   "converged_share": len(converged) / len(steps), "mean_steps": statistics.fmean(steps),
                   "mean_steps_converged": statistics.fmean(converged) if converged else None,
                   "median_steps": statistics.median(steps),
                   "seconds": sum(line["seconds"] for line in per_doc)}
    return task.aggregate(oracle), task.aggregate(base), convergence


def _results_json(lm, tasks, group_map, config: OracleConfig, layers, store: OracleStore, summaries) -> dict:
    import lm_eval
    import transformers

    from roma_eval import __version__

    identity = store.manifest
    seconds = sum(convergence["seconds"] for _, _, convergence in summaries.values())
    return {
        "results": {t.name: {"name": t.name, "alias": t.name, "sample_len": summaries[t.name][2]["samples"],
                             **summaries[t.name][0]} for t in tasks},
        "group_subtasks": group_map,
        "configs": {t.name: t.task.dump_config() for t in tasks},
        "versions": {t.name: getattr(t.task, "VERSION", None) for t in tasks},
        "n-shot": {t.name: t.task.config.num_fewshot or 0 for t in tasks},
        "higher_is_better": {t.name: t.task.higher_is_better() for t in tasks},
        "n-samples": {t.name: {"original": t.n_docs, "effective": summaries[t.name][2]["samples"]} for t in tasks},
        "config": {"model": "oracle", "model_args": {"pretrained": identity["model"], **config.settings()},
                   "model_dtype": str(lm.model.dtype), "batch_size": config.batch_size, "device": str(lm.model.device),
                   "limit": identity["limit"], "random_seed": config.seed, "torch_seed": config.seed},
        "model_name": identity["model"],
        "model_name_sanitized": identity["model"].replace("/", "__"),
        "date": time.time(),
        "total_evaluation_time_seconds": str(seconds),
        "transformers_version": transformers.__version__,
        "lm_eval_version": lm_eval.__version__,
        "max_length": lm.max_length,
        "oracle": {"config": config.to_dict(), "layers": layers, "split": identity["split"],
                   "base_router_fingerprint": identity["base_router_fingerprint"], "roma_eval_version": __version__,
                   "torch_version": torch.__version__, "seed": config.seed,
                   "base": {name: summary[1] for name, summary in summaries.items()},
                   "convergence": {name: summary[2] for name, summary in summaries.items()}},
    }


def run_oracle(lm, tasks: Sequence[OracleTask], out_dir, config: OracleConfig | None = None, *, model_name: str,
               group_map: dict | None = None, split: str = "eval", limit: int | None = None,
               overwrite: bool = False, progress: bool = True) -> OracleRun:
    """The oracle on every sample of ``tasks`` with ``lm`` (an lm-eval ``HFLM``), written to ``out_dir``.

    Resumable: finished samples are appended per batch and skipped by a rerun with the same settings.
    """
    from tqdm.auto import tqdm


    config = config or OracleConfig()
    layers = resolve_layers(lm.model, config.layers)
    identity = {"model": model_name, "model_type": lm.model.config.model_type,
                "base_router_fingerprint": router_fingerprint(lm.model),
                "tasks": [t.name for t in tasks], "split": split, "limit": limit, "settings": config.settings()}
    store = OracleStore(out_dir, identity, overwrite)
    if store.complete:
        return OracleRun(store.results_path, json.loads(store.results_path.read_text(encoding="utf-8")), True)
    torch.manual_seed(config.seed)
    done = {t.name: {line["doc_id"] for line in store.lines(t.name, len(t.filters))} for t in tasks}
    pending = {t.name: [s for s in t.samples if s.doc_id not in done[t.name]] for t in tasks}
    bar = tqdm(total=sum(map(len, pending.values())), desc="oracle", unit="sample", disable=not progress)
    for task in tasks:
        bar.set_postfix_str(task.name)
        todo = sorted(pending[task.name], key=_length)
        for start in range(0, len(todo), config.batch_size):
            chunk = todo[start:start + config.batch_size]
            make_lines = _generation_lines if task.generative else _choice_lines
            lines, descended = make_lines(lm, task, chunk, config, layers)
            routing = [_routing_line(s, o) for s, o in descended] if config.save_routing else None
            store.append(task.name, lines, routing)
            bar.update(len(chunk))
    bar.close()
    summaries = {t.name: summarise(t, store.lines(t.name, len(t.filters))) for t in tasks}
    results = _results_json(lm, tasks, group_map or {}, config, layers, store, summaries)
    return OracleRun(store.finish(results), results, False)


def gap_table(results: dict) -> list[str]:
    """One line per task and metric: base -> oracle, the gap in points, and the convergence."""
    lines = []
    oracle = results["oracle"]
    for task, metrics in results["results"].items():
        convergence = oracle["convergence"][task]
        for key, value in metrics.items():
            if "," not in key or "_stderr," in key or not isinstance(value, (int, float)) or math.isnan(value):
                continue
            base = oracle["base"][task][key]
            lines.append(f"{task:<24} {key:<28} base {100 * base:6.2f}  oracle {100 * value:6.2f}  "
                         f"gap {100 * (value - base):+6.2f} pts   converged {convergence['converged']}/"
                         f"{convergence['samples']}, mean steps {convergence['mean_steps']:.1f}")
    return lines

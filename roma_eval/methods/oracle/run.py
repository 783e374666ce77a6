"""Run the oracle over lm-eval tasks through lm-eval itself, resumably.

``run_oracle`` hands lm-eval (``harness.evaluate``) an ``OracleLM`` (lm_eval.py): lm-eval builds the requests,
the oracle answers them at each document's oracle routing (solver.py), and lm-eval computes every metric, filter
and group aggregate (MMLU's size-weighted total included) and writes the results and samples files, in
``OUT/<model_name_sanitized>/``, exactly as ``lm_eval --output_path OUT --log_samples`` does.  The same documents
are then evaluated once more with the base answers (iterate 0, kept from the same descent: ``OracleLM.base_pass``),
so the base scores in the ``oracle`` block are lm-eval's aggregation too.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch

from roma_eval.devices import from_main_process, input_device, process_state
from roma_eval.harness import Evaluation, evaluate, evaluate_tasks, run_dir
from roma_eval.methods.oracle.config import OracleConfig
from roma_eval.methods.oracle.lm_eval import OracleLM
from roma_eval.methods.oracle.store import OracleStore
from roma_eval.methods.oracle.tasks import OracleTasks
from roma_eval.routing import resolve_layers, router_fingerprint


@dataclass
class OracleRun:
    results_file: Path
    results: dict  # lm-eval's results JSON, with the ``oracle`` block
    resumed_complete: bool  # the directory already held this complete run: nothing was computed


def convergence(records: list[dict]) -> dict:
    """A task's convergence statistics from its documents' records."""
    steps = [r["oracle"]["steps"] for r in records]
    converged = [r["oracle"]["steps"] for r in records if r["oracle"]["converged"]]
    return {"samples": len(steps), "converged": len(converged), "converged_share": len(converged) / len(steps),
            "mean_steps": statistics.fmean(steps),
            "mean_steps_converged": statistics.fmean(converged) if converged else None,
            "median_steps": statistics.median(steps),
            "seconds": sum(r["oracle"].get("seconds", 0.0) for r in records)}


def _annotate(samples: dict, base_samples: dict, store: OracleStore) -> None:
    """Add to each of lm-eval's sample lines an ``oracle`` object: the descent's record and the line's metrics
    at iterate 0 (``before``, from the base evaluation of the same document and filter)."""
    for task, lines in samples.items():
        before = {(line["doc_id"], line["filter"]): {m: line[m] for m in line["metrics"]}
                  for line in base_samples.get(task, [])}
        documents = store.documents(task)
        for line in lines:
            record = documents[line["doc_id"]]
            line["oracle"] = {**record["oracle"], "before": before.get((line["doc_id"], line["filter"]), {})}


def _base_evaluation(lm: OracleLM, tasks: OracleTasks, evaluation: Evaluation | None, dist) -> dict:
    """lm-eval's evaluation of the same documents with their base answers (every answer is iterate 0, from the
    store), with the few-shot examples of the oracle's evaluation."""
    fewshot_seed = from_main_process(evaluation.results["config"]["fewshot_seed"] if evaluation else None, dist)
    for task in tasks.tasks.values():
        task.set_fewshot_seed(seed=fewshot_seed)  # the same few-shot examples again
    return evaluate_tasks(lm.base_pass(), tasks.loaded, tasks.limit, **tasks.chat_template)


def _oracle_block(store: OracleStore, config: OracleConfig, layers: list[int], tasks: OracleTasks, dist,
                  base: dict) -> dict:
    """The ``oracle`` block of the results: the settings, where they ran, the base scores and the convergence."""
    from roma_eval import __version__

    return {"config": config.to_dict(), "layers": layers, "split": tasks.split,
            "base_router_fingerprint": store.identity["base_router_fingerprint"], "roma_eval_version": __version__,
            "torch_version": torch.__version__, "seed": config.seed, "processes": dist.num_processes,
            "base": base["results"],
            "convergence": {name: convergence(list(store.documents(name).values())) for name in sorted(tasks.tasks)}}


def run_oracle(model, tokenizer, tasks: OracleTasks, out_dir, config: OracleConfig | None = None, *,
               model_name: str, overwrite: bool = False, progress: bool = True) -> OracleRun:
    """The oracle on ``tasks`` (``load_oracle_tasks``, with its chat-template keywords) with ``model``, written under
    ``out_dir`` as lm-eval writes ``--output_path out_dir``.  Resumable: finished documents are stored per batch and
    not recomputed by a rerun with the same settings; a complete run is returned as it is."""
    dist = process_state()  # one process, or one of `accelerate launch`: lm-eval shards the documents
    config = (config or OracleConfig()).for_device(input_device(model))
    layers = resolve_layers(model, config.layers)
    identity = {"model": model_name, "model_type": model.config.model_type,
                "base_router_fingerprint": router_fingerprint(model), "tasks": list(tasks.names),
                "split": tasks.split, "limit": tasks.limit, "settings": config.settings()}
    directory = run_dir(out_dir, model_name)
    with dist.main_process_first():  # the main process clears (--overwrite) and creates; the others then open it
        store = OracleStore(directory, identity, overwrite and dist.is_main_process, rank=dist.process_index)
    if store.complete:
        return OracleRun(store.results_file, json.loads(store.results_file.read_text(encoding="utf-8")), True)
    if dist.is_main_process:
        store.clear_outputs()
    dist.wait_for_everyone()
    lm = OracleLM(model, tokenizer, tasks.tasks, config, layers, store, progress)
    evaluation = evaluate(lm, out_dir, tasks.items, model_args={"pretrained": model_name, **config.settings()},
                          task_manager=tasks.manager, limit=tasks.limit, torch_random_seed=config.seed,
                          **tasks.chat_template)
    base = _base_evaluation(lm, tasks, evaluation, dist)
    dist.wait_for_everyone()  # every process's documents are in the store
    if dist.is_main_process:
        store.refresh()
        _annotate(evaluation.samples, base["samples"], store)
        evaluation.results["config"]["model"] = "oracle"
        evaluation.results["oracle"] = _oracle_block(store, config, layers, tasks, dist, base)
        store.finish(evaluation.save())  # a failed write leaves no cut-off file
    dist.wait_for_everyone()
    if not dist.is_main_process:  # the main process wrote the run: read what it wrote
        store = OracleStore(directory, identity, rank=dist.process_index)
    return OracleRun(store.results_file, json.loads(store.results_file.read_text(encoding="utf-8")), False)

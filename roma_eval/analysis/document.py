"""``routing_analysis.json`` (version 1): one run's routing analysis as the report and `roma-eval check` read it
(``roma_eval.results.routing``; docs/analysis.md describes every field)."""

from __future__ import annotations

import numpy as np

from roma_eval.analysis import metrics
from roma_eval.analysis.collect import Routing
from roma_eval.analysis.config import AnalysisConfig
from roma_eval.analysis.dump import DUMP_NAME
from roma_eval.analysis.runs import RunToAnalyse
from roma_eval.results.routing import FORMAT, VERSION  # the reader's format: one definition


def checkpoint_digest(checkpoint) -> str | None:
    """sha256 of a router checkpoint's weights file (what its analysis depends on, wherever the checkpoint lies)."""
    import hashlib

    from roma_eval.checkpoint import WEIGHTS_NAME

    return None if checkpoint is None else hashlib.sha256((checkpoint / WEIGHTS_NAME).read_bytes()).hexdigest()


def identity(run: RunToAnalyse, layers: list[int], config: AnalysisConfig) -> dict:
    """What an analysis depends on: one with the same identity beside the run is not computed again (a copied or
    moved results tree included: the checkpoint counts by its content, the results file by its name)."""
    limit = run.limit if config.limit is None or (run.limit is not None and run.limit <= config.limit) \
        else config.limit
    return {"results_file": run.results_file.name, "model": run.source.pretrained,
            "router_checkpoint_sha256": checkpoint_digest(run.router_checkpoint), "tasks": run.tasks, "limit": limit,
            "layers": list(layers), "settings": config.settings()}


def layer_entry(routing: Routing, slot: int, base: Routing | None, overload_factor: float) -> dict:
    """One analysed layer (``slot`` of ``routing.layers``): loads, dead and overloaded experts, entropies, movement."""
    load_context = metrics.shares(routing.load_context[slot])
    return {
        "load_last": metrics.shares(routing.load_last[slot]).tolist(),
        "load_context": load_context.tolist(),
        "dead_experts": metrics.dead_experts(routing.load_context[slot]),
        "overloaded_experts": metrics.overloaded_experts(load_context, overload_factor),
        "load_entropy": float(metrics.normalised_entropy(load_context)),
        "routing_entropy": metrics.spread(metrics.normalised_entropy(routing.weights[:, slot])),
        "topk_margin": metrics.spread(routing.margin[:, slot]),
        "movement": None if base is None else metrics.movement(routing.weights[:, slot], base.weights[:, slot]),
    }


def alignment_entry(embedding: np.ndarray, vectors: np.ndarray, tasks: np.ndarray, config: AnalysisConfig) -> dict:
    """The alignment over all samples and within each task (a task of one sample has none)."""
    overall = metrics.alignment(embedding, vectors, config.k, config.bootstrap, config.seed)
    per_task = {}
    for task in sorted(set(tasks.tolist())):
        members = tasks == task
        found = metrics.alignment(embedding[members], vectors[members], config.k, config.bootstrap, config.seed)
        if found is not None:
            per_task[task] = found
    return {"overall": overall, "per_task": per_task}


def analysis_document(run: RunToAnalyse, routing: Routing, base: Routing | None, embedding: np.ndarray,
                      tasks: np.ndarray, config: AnalysisConfig) -> dict:
    """The analysis of ``run``: its ``routing``, the base model's on the same samples (None: the run is the base
    model's routers), the samples' embeddings and tasks."""
    found = identity(run, routing.layers, config)
    vectors = routing.vectors
    return {
        "format": FORMAT, "version": VERSION, "model": found["model"],
        "router_checkpoint": None if run.router_checkpoint is None else str(run.router_checkpoint),
        "method": run.method, "model_type": routing.model_type, "scoring": routing.scoring, "tasks": found["tasks"],
        "limit": found["limit"], "n_samples": len(vectors), "layers": found["layers"],
        "num_experts": routing.num_experts, "top_k": routing.top_k, "settings": found["settings"],
        "per_layer": {str(layer): layer_entry(routing, slot, base, config.overload_factor)
                      for slot, layer in enumerate(routing.layers)},
        "alignment": alignment_entry(embedding, vectors, tasks, config),
        "task_similarity": metrics.task_similarity(vectors, tasks),
        "routing_dump": DUMP_NAME, "results_file": found["results_file"],
        "router_checkpoint_sha256": found["router_checkpoint_sha256"],
    }

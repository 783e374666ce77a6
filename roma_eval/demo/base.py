"""The demo's first stages: the toy model (pretrained or cached), then the base model through lm-eval,
its routing-consistency figure and its routing dump (the report's routing-manifold figure)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from roma_eval.demo.context import DemoContext, headline
from roma_eval.pipeline import stages
from roma_eval.toy.suite import EVAL_GROUP

DUMP_NAME = "routing_toy_suite.npz"  # beside the stage's lm-eval results JSON, where the report looks

logger = logging.getLogger(__name__)


def toy_model_stage(ctx: DemoContext) -> None:
    """The toy MoE: shipped with the package (the default preset), else from the cache, else pretrained now."""
    from roma_eval.toy.cache import ensure_model, is_built, read_record, shipped_dir

    cached = is_built(ctx.toy)
    ctx.pretrained = str(ensure_model(ctx.toy, progress=ctx.progress))
    training = read_record(ctx.model_dir)["training"]
    how = ("shipped with the package" if shipped_dir(ctx.toy) is not None else
           "loaded from the cache" if cached else f"pretrained in {training['seconds']:.0f} s")
    logger.info(f"toy model {how}: {ctx.model_dir}")


def base_stage(ctx: DemoContext) -> list[str]:
    """The base model on the eight benchmarks through lm-eval, and its routing consistency."""
    commands = stages.base_stage(ctx)
    ctx.columns["base"] = headline(ctx.results["base"])
    model, tokenizer = ctx.load_model()
    ctx.notes.append(consistency_line("base", routing_consistency(ctx, "base", model, tokenizer)))
    return commands


def consistency_line(method: str, figure: dict) -> str:
    return (f"routing consistency ({method}, last {len(figure['layers'])} layers, k={figure['k']} MiniLM neighbours, "
            f"{figure['samples']} samples): cos(r_i, r_j) neighbours {figure['neighbour_routing_cosine']:.3f} "
            f"vs random pairs {figure['random_routing_cosine']:.3f}; same top-1 expert in the last layer "
            f"{figure['neighbour_top1_agreement']:.0%} vs {figure['random_top1_agreement']:.0%}")


def results_dir(ctx: DemoContext, stage: str) -> Path:
    """The directory lm-eval wrote the stage's results JSON into (``<stage>/<model name>/``)."""
    return max(ctx.stage_dir(stage).rglob("results_*.json")).parent


def routing_consistency(ctx: DemoContext, stage: str, model, tokenizer) -> dict:
    """``model``'s routing on the suite: the figure of ``roma_eval.toy.consistency`` (kept in
    ``<stage>/routing_consistency.json``) and a routing dump for the report (``DUMP_NAME``)."""
    path = ctx.stage_dir(stage) / "routing_consistency.json"
    dump_path = results_dir(ctx, stage) / DUMP_NAME
    if path.exists() and dump_path.exists() and not ctx.overwrite:
        figure = json.loads(path.read_text())
        if figure.get("model_dir") == str(ctx.model_dir) and figure.get("limit") == ctx.limit:
            return figure
    import numpy as np

    from roma_eval.analysis.dump import RoutingDump, read_routing_dump, write_routing_dump
    from roma_eval.embedding import embed
    from roma_eval.routing import resolve_layers
    from roma_eval.samples import load_samples
    from roma_eval.storage import write_json
    from roma_eval.toy.consistency import consistency_figure, routing_vectors

    samples = load_samples([EVAL_GROUP], limit=ctx.limit)
    layers = resolve_layers(model, None)
    routing = routing_vectors(model, tokenizer, [s.context for s in samples], layers)
    base_dump = results_dir(ctx, "base") / DUMP_NAME  # the same samples: their embeddings do not change
    embeddings = (read_routing_dump(base_dump).embedding.astype(np.float32)
                  if stage != "base" and base_dump.exists() else embed([s.text for s in samples]))
    figure = {"model_dir": str(ctx.model_dir), "limit": ctx.limit, "layers": layers,
              **consistency_figure(routing, embeddings, len(layers), seed=ctx.seed)}
    write_routing_dump(dump_path, RoutingDump(embeddings, routing, np.array([s.task for s in samples])))
    write_json(path, figure)
    return figure

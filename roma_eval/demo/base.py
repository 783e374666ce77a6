"""The demo's first stages: the toy model (pretrained or cached), then the base model through lm-eval."""

from __future__ import annotations

import logging

from roma_eval.demo.context import DemoContext, headline
from roma_eval.pipeline import stages

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
    """The base model on the eight benchmarks through lm-eval."""
    commands = stages.base_stage(ctx)
    ctx.columns["base"] = headline(ctx.results["base"])
    return commands

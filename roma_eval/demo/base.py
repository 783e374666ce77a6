"""The demo's first stages: the toy model (pretrained or cached), then the base model through lm-eval
and its routing-consistency figure (docs/toy.md)."""

from __future__ import annotations

import json

from roma_eval.demo.context import DemoContext, evaluate_suite, headline
from roma_eval.toy.suite import EVAL_GROUP


def toy_model_stage(ctx: DemoContext) -> None:
    """Pretrain the toy MoE, or load it from the cache."""
    from roma_eval.toy.cache import ensure_model, is_built, read_record

    cached = is_built(ctx.toy)
    ctx.model_dir = ensure_model(ctx.toy, progress=ctx.progress)
    training = read_record(ctx.model_dir)["training"]
    how = "loaded from the cache" if cached else f"pretrained in {training['seconds']:.0f} s"
    print(f"toy model {how}: {ctx.model_dir}")


def base_stage(ctx: DemoContext) -> None:
    """The base model on the eight benchmarks through lm-eval, and its routing consistency."""
    results = evaluate_suite(ctx, "base", "hf", f"pretrained={ctx.model_dir}")
    ctx.columns["base"] = headline(results)
    figure = routing_consistency(ctx)
    ctx.notes.append(
        f"routing consistency (base, last {len(figure['layers'])} layers, k={figure['k']} MiniLM neighbours, "
        f"{figure['samples']} samples): cos(r_i, r_j) neighbours {figure['neighbour_routing_cosine']:.3f} "
        f"vs random pairs {figure['random_routing_cosine']:.3f}; same top-1 expert in the last layer "
        f"{figure['neighbour_top1_agreement']:.0%} vs {figure['random_top1_agreement']:.0%}")


def routing_consistency(ctx: DemoContext) -> dict:
    """The figure of ``roma_eval.toy.consistency`` for the base model, kept in base/routing_consistency.json."""
    path = ctx.stage_dir("base") / "routing_consistency.json"
    if path.exists() and not ctx.overwrite:
        figure = json.loads(path.read_text())
        if figure.get("model_dir") == str(ctx.model_dir) and figure.get("limit") == ctx.limit:
            return figure
    from roma_eval.samples import load_samples
    from roma_eval.toy.consistency import routing_consistency as measure

    model, tokenizer = ctx.load_model()
    samples = load_samples([EVAL_GROUP], limit=ctx.limit)
    figure = {"model_dir": str(ctx.model_dir), "limit": ctx.limit,
              **measure(model, tokenizer, samples, seed=ctx.seed)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(figure, indent=2) + "\n")
    tmp.replace(path)
    return figure

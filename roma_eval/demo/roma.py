"""The demo's router-training stages: Router Tuning (the task loss only, the paper's baseline) and RoMA (with the
manifold regulariser), each the pipeline's (train the routers on the training mixture, `--model roma`); then per
benchmark the method − base (and RoMA − Router Tuning) with a paired-bootstrap 95% interval, whatever its sign; and
the accuracy on the mixture's held-out split, on which the learning rates were chosen.  Their routing is analysed by
the routing stage (routing.py)."""

from __future__ import annotations

import json

from roma_eval.demo.context import DemoContext, method_columns
from roma_eval.pipeline import stages
from roma_eval.toy.suite import TRAIN_GROUP

HELDOUT = "heldout_mixture.json"


def router_tuning_stage(ctx: DemoContext) -> list[str]:
    commands = stages.router_tuning_stage(ctx)
    method_columns(ctx, "router_tuning")
    ctx.notes.append(training_line(ctx, "router_tuning", ctx.router_tuning))
    return commands


def roma_stage(ctx: DemoContext) -> list[str]:
    commands = stages.roma_stage(ctx)
    method_columns(ctx, "roma", baselines=("base", "router_tuning"))
    ctx.notes.append(training_line(ctx, "roma", ctx.roma))
    return commands


def training_line(ctx: DemoContext, stage: str, config) -> str:
    checkpoint = ctx.stage_dir(stage) / stages.CHECKPOINT
    s = json.loads((checkpoint / "router_config.json").read_text())["training_config"]["summary"]
    heldout = heldout_mixture(ctx, stage)
    regulariser = (f"λ {config.lam} after {warmup_words(config.lam_warmup_steps, config.lam_warmup_ratio)}, "
                   f"k {config.k}" if config.regulariser == "manifold" else "no regulariser")
    return (f"{stage} training: {s['training_samples']} samples, success set {s['success_set_size']} "
            f"(base train acc {100 * s['base_train_accuracy']:.1f}%), {s['steps']} steps, layers {s['tuned_layers']}, "
            f"lr {config.lr} ({config.lr_schedule} after {warmup_words(config.warmup_steps, config.warmup_ratio)}), "
            f"{regulariser}; held-out mixture acc {100 * heldout['base']:.1f} (base) -> "
            f"{100 * heldout['tuned']:.1f} ({heldout['samples']} samples)")


def warmup_words(steps: int, ratio: float | None) -> str:
    """A warm-up as the config gives it (training/schedule.py): a share of the steps, or steps with their cap."""
    from roma_eval.training.schedule import MAX_WARMUP_SHARE

    if ratio is not None:
        return f"a warm-up over {ratio:.0%} of the steps"
    return f"a warm-up over {steps} steps (at most {MAX_WARMUP_SHARE:.0%} of the run)"


def heldout_accuracy(model, tokenizer, limit: int | None = None) -> tuple[float, int]:
    """Mean acc on the toy mixture's held-out (test) split: where router learning rates are chosen
    (``roma_eval.heldout``, which `roma-eval train` prints too)."""
    from roma_eval.heldout import heldout_accuracy as mixture_heldout_accuracy

    return mixture_heldout_accuracy(model, tokenizer, [TRAIN_GROUP], limit=limit)


def heldout_mixture(ctx: DemoContext, stage: str) -> dict:
    """Held-out mixture accuracy of base and of the stage's routers (kept in ``<stage>/heldout_mixture.json``, keyed
    on what it depends on by content, so that a copied output directory reuses it)."""
    import hashlib

    from roma_eval.checkpoint import apply_router_checkpoint, load_router_checkpoint
    from roma_eval.storage import write_json

    path = ctx.stage_dir(stage) / HELDOUT
    checkpoint = ctx.stage_dir(stage) / stages.CHECKPOINT
    weights = hashlib.sha256((checkpoint / "router_model.safetensors").read_bytes()).hexdigest()
    identity = {"model": ctx.model_identity or ctx.pretrained, "limit": ctx.train_limit, "checkpoint": weights}
    if path.exists() and not ctx.overwrite:
        found = json.loads(path.read_text())
        if found.get("identity") == identity:
            return found
    model, tokenizer = ctx.load_model()
    base, n = heldout_accuracy(model, tokenizer, ctx.train_limit)
    apply_router_checkpoint(model, load_router_checkpoint(checkpoint))
    tuned, _ = heldout_accuracy(model, tokenizer, ctx.train_limit)
    figure = {"identity": identity, "base": base, "tuned": tuned, "samples": n}
    write_json(path, figure)
    return figure

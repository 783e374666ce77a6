"""The demo's RoMA stage: the pipeline's (train the routers on the training mixture, `--model roma`), then
RoMA − base per benchmark with a paired-bootstrap 95% interval, whatever its sign, and RoMA's routing
consistency (the paper's Figure 3 question: does the routing manifold align with the embedding manifold?)."""

from __future__ import annotations

import json

from roma_eval.demo.base import consistency_line, routing_consistency
from roma_eval.demo.context import DemoContext, method_columns
from roma_eval.pipeline import stages


def roma_stage(ctx: DemoContext) -> list[str]:
    from roma_eval.checkpoint import apply_router_checkpoint, load_router_checkpoint

    commands = stages.roma_stage(ctx)
    method_columns(ctx, "roma")
    checkpoint = ctx.stage_dir("roma") / stages.CHECKPOINT
    s = json.loads((checkpoint / "router_config.json").read_text())["training_config"]["summary"]
    ctx.notes.append(f"RoMA training: {s['training_samples']} samples, success set {s['success_set_size']} "
                     f"(base train acc {100 * s['base_train_accuracy']:.1f}%), {s['steps']} steps, "
                     f"layers {s['tuned_layers']}, lr {ctx.roma.lr}, λ {ctx.roma.lam}, k {ctx.roma.k}")
    model, tokenizer = ctx.load_model()
    apply_router_checkpoint(model, load_router_checkpoint(checkpoint))
    ctx.notes.append(consistency_line("roma", routing_consistency(ctx, "roma", model, tokenizer)))
    return commands

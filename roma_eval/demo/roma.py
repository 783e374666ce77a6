"""The demo's RoMA stage: train the toy model's routers on the training mixture, evaluate `--model roma`.

Reuses the checkpoint and the lm-eval results of an earlier run unless ``ctx.overwrite``; prints
RoMA − base per benchmark with a paired-bootstrap 95% interval, whatever its sign.
"""

from __future__ import annotations

from roma_eval.demo.base import consistency_line, routing_consistency
from roma_eval.demo.context import DemoContext, method_stage
from roma_eval.methods.roma.config import RomaConfig

# The paper's configuration except the optimiser's step size and length: its lr 7e-5 for 3 epochs
# is tuned for OLMoE-1B-7B (49k samples); the toy routers need larger steps to move in a CPU budget.
DEMO_ROMA = {"default": dict(lr=3e-3, epochs=3, batch_size=32), "fast": dict(lr=3e-3, epochs=1, batch_size=32)}


def roma_stage(ctx: DemoContext) -> None:
    checkpoint = ctx.stage_dir("roma") / "router_checkpoint"
    method_stage(ctx, "roma", checkpoint, "router_config.json", _train,
                 f"pretrained={ctx.model_dir},router_checkpoint={checkpoint}")
    # Does RoMA align the routing manifold with the embedding manifold (the paper's Figure 3)?
    from roma_eval.checkpoint import apply_router_checkpoint, load_router_checkpoint

    model, tokenizer = ctx.load_model()
    apply_router_checkpoint(model, load_router_checkpoint(checkpoint))
    ctx.notes.append(consistency_line("roma", routing_consistency(ctx, "roma", model, tokenizer)))


def _train(ctx: DemoContext, checkpoint) -> None:
    from roma_eval.methods.roma.train import train_roma

    model, tokenizer = ctx.load_model()
    samples = ctx.training_samples()
    config = RomaConfig(seed=ctx.seed, **DEMO_ROMA[ctx.preset])
    result = train_roma(model, tokenizer, samples, checkpoint, config, base_model=str(ctx.model_dir),
                        overwrite=ctx.overwrite, progress=ctx.progress)
    s = result.summary
    ctx.notes.append(f"RoMA training: {s['training_samples']} samples, success set {s['success_set_size']} "
                     f"(base train acc {100 * s['base_train_accuracy']:.1f}%), {s['steps']} steps, "
                     f"layers {s['tuned_layers']}, lr {config.lr}, λ {config.lam}, k {config.k}")


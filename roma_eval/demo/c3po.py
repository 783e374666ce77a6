"""The demo's C3PO stage: the pipeline's (the reference set on the training mixture, `--model c3po`), then
C3PO − base per benchmark with a paired-bootstrap 95% interval, whatever its sign."""

from __future__ import annotations

from roma_eval.demo.context import DemoContext, method_columns
from roma_eval.pipeline import stages


def c3po_stage(ctx: DemoContext) -> list[str]:
    from roma_eval.methods.c3po import load_reference

    commands = stages.c3po_stage(ctx)
    method_columns(ctx, "c3po")
    meta = load_reference(ctx.stage_dir("c3po") / stages.REFERENCE).metadata
    ctx.notes.append(f"C3PO reference: {meta['n_references']} of {meta['n_training_samples']} training samples "
                     f"answered correctly by the base model; critical layers {meta['layers']}; {ctx.c3po_args}")
    return commands

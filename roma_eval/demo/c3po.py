"""The demo's C3PO stage: the reference set on the training mixture, then `--model c3po` on the toy suite.

Reuses the reference and the lm-eval results of an earlier run unless ``ctx.overwrite``; prints
C3PO − base per benchmark with a paired-bootstrap 95% interval, whatever its sign.
"""

from __future__ import annotations

from roma_eval.demo.context import DemoContext, method_stage

# The paper's best setting (NGD, k = 3, 10 steps, cosine lr 1e-2 -> 1e-5), as model_args; 32 test
# prompts optimised together (default 8, sized for real models' memory): 22% faster on the toy
# suite, the same pathways (each prompt has its own variables and gradient).
DEMO_C3PO = "c3po_method=ngd,c3po_k=3,c3po_steps=10,c3po_lr=0.01,c3po_lr_min=1e-05,c3po_group=32"


def c3po_stage(ctx: DemoContext) -> None:
    reference = ctx.stage_dir("c3po") / "reference"
    method_stage(ctx, "c3po", reference, "reference.json", _build,
                 f"pretrained={ctx.model_dir},reference={reference},{DEMO_C3PO}")


def _build(ctx: DemoContext, reference) -> None:
    from roma_eval.methods.c3po import build_reference, load_reference

    model, tokenizer = ctx.load_model()
    samples = ctx.training_samples()
    build_reference(model, tokenizer, samples, reference, base_model=str(ctx.model_dir), overwrite=ctx.overwrite,
                    progress=ctx.progress)
    meta = load_reference(reference).metadata
    ctx.notes.append(f"C3PO reference: {meta['n_references']} of {meta['n_training_samples']} training samples "
                     f"answered correctly by the base model; critical layers {meta['layers']}; {DEMO_C3PO}")

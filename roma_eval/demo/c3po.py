"""The demo's C3PO stage: the pipeline's (the reference set on the training mixture, `--model c3po`), then
C3PO − base per benchmark with a paired-bootstrap 95% interval, whatever its sign, and how far C3PO moved the
pathways: the distribution of ‖ω − ω0‖ over the test prompts (ω0 = the base routing at the last prompt token of
the critical layers, ω = C3PO's), beside the distance from ω0 to its neighbours' pathways (where NGD is pulled).
The routing stage (routing.py) sets it beside how far RoMA and Router Tuning moved the routing."""

from __future__ import annotations

import json
from contextlib import contextmanager

import numpy as np

from roma_eval.demo.context import DemoContext, method_columns
from roma_eval.pipeline import stages

MOVEMENT = "omega_movement.json"


@contextmanager
def recording_movement():
    """While inside, every ``C3PO.optimise`` call (the lm-eval ``c3po`` model's, in this process) records per test
    problem ‖ω − ω0‖ and the mean distance from ω0 to its k neighbours' pathways.  The method is wrapped, not
    changed: the pathways it returns are the same."""
    import torch

    from roma_eval.methods.c3po.engine import C3PO

    original = C3PO.optimise
    record = {"moved": [], "to_neighbours": []}

    def optimise(self, frozen, queries):
        omega, info = original(self, frozen, queries)
        omega0 = torch.stack([f.routing for f in frozen]).to(omega.device)
        record["moved"].extend((omega.detach() - omega0).flatten(1).norm(dim=1).tolist())
        neighbours = self.reference.routing[torch.as_tensor(info["neighbours"])].to(omega.device)  # (G, k, L, E)
        distance = (neighbours - omega0.unsqueeze(1)).flatten(2).norm(dim=2).mean(dim=1)
        record["to_neighbours"].extend(distance.tolist())
        return omega, info

    C3PO.optimise = optimise
    try:
        yield record
    finally:
        C3PO.optimise = original


def quantiles(values) -> dict:
    values = np.asarray(values, dtype=np.float64)
    q = np.quantile(values, [0, 0.1, 0.5, 0.9, 1]) if len(values) else [float("nan")] * 5
    return {"n": int(len(values)), "min": float(q[0]), "p10": float(q[1]), "median": float(q[2]),
            "p90": float(q[3]), "max": float(q[4]), "mean": float(values.mean()) if len(values) else float("nan")}


def c3po_stage(ctx: DemoContext) -> list[str]:
    from roma_eval.methods.c3po import load_reference
    from roma_eval.storage import write_json

    path = ctx.stage_dir("c3po") / MOVEMENT
    with recording_movement() as record:
        commands = stages.c3po_stage(ctx)
    if record["moved"]:  # computed now (a reused evaluation records nothing: the file of its run is kept)
        write_json(path, {"c3po_args": ctx.c3po_args, "moved": quantiles(record["moved"]),
                          "to_neighbours": quantiles(record["to_neighbours"])})
    method_columns(ctx, "c3po")
    meta = load_reference(ctx.stage_dir("c3po") / stages.REFERENCE).metadata
    ctx.notes.append(f"C3PO reference: {meta['n_references']} of {meta['n_training_samples']} training samples "
                     f"answered correctly by the base model; critical layers {meta['layers']}; {ctx.c3po_args}")
    if path.exists():
        ctx.notes.append(movement_line(json.loads(path.read_text())))
    return commands


def movement_line(movement: dict) -> str:
    m, d = movement["moved"], movement["to_neighbours"]
    return (f"C3PO pathway movement ‖ω − ω0‖ over {m['n']} test problems (critical layers concatenated, L2): "
            f"median {m['median']:.4f}, p10 {m['p10']:.4f}, p90 {m['p90']:.4f}, max {m['max']:.4f}; "
            f"ω0 to its neighbours' pathways: median {d['median']:.3f}")

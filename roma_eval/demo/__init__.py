"""`roma-eval demo`: the RoMA story on the embedded toy world, as a list of stages.

Each stage is a function of a ``DemoContext`` (context.py); it writes its outputs under
``ctx.output/<stage>/`` (lm-eval's own format wherever lm-eval runs) and adds a column to the table
printed at the end (table.py).

    base.py    the toy model, the base model through lm-eval, its routing consistency
    roma.py    RoMA router post-training on the training mixture, then `--model roma`
    oracle.py  the per-sample routing upper bound
    c3po.py    C3PO's reference set, then `--model c3po`
    report.py  report.md / .html / .tex and plots comparing them
"""

from __future__ import annotations

from typing import Callable

from roma_eval.demo.base import base_stage, toy_model_stage
from roma_eval.demo.c3po import c3po_stage
from roma_eval.demo.context import DemoContext
from roma_eval.demo.oracle import oracle_stage
from roma_eval.demo.report import report_stage
from roma_eval.demo.roma import roma_stage
from roma_eval.demo.table import format_table

Stage = Callable[[DemoContext], None]
STAGES: list[tuple[str, Stage]] = [("toy model", toy_model_stage), ("base", base_stage), ("roma", roma_stage),
                                   ("oracle", oracle_stage), ("c3po", c3po_stage), ("report", report_stage)]
__all__ = ["DemoContext", "STAGES", "run_demo"]


def run_demo(ctx: DemoContext, stages: list[tuple[str, Stage]] | None = None) -> DemoContext:
    import time

    ctx.claim_output()
    for name, stage in STAGES if stages is None else stages:
        print(f"\n== {name}")
        started = time.perf_counter()
        stage(ctx)
        print(f"({name}: {time.perf_counter() - started:.0f} s)")
    print(f"\n{ctx.preset} preset, seed {ctx.seed}; % per benchmark; outputs in {ctx.output}/")
    print(format_table(ctx))
    for note in ctx.notes:
        print(note)
    return ctx

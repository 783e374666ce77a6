"""`roma-eval demo`: the RoMA story on the embedded toy world, as a list of stages.

Each stage is a function of a ``DemoContext`` (context.py); it writes its outputs under
``ctx.output/<stage>/`` (lm-eval's own format wherever lm-eval runs) and adds a column to the table
printed at the end (table.py).

    base.py     the toy model (shipped in the package), the base model through lm-eval
    roma.py     Router Tuning and RoMA router post-training on the training mixture, then `--model roma`
    oracle.py   the per-sample routing upper bound
    c3po.py     C3PO's reference set, then `--model c3po`
    routing.py  the routing analysis of base, Router Tuning and RoMA (`roma-eval analyze`): alignment, movement
    report.py   report.md / .html / .tex and plots comparing them
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from roma_eval import registry
from roma_eval.demo.base import base_stage, toy_model_stage
from roma_eval.demo.c3po import c3po_stage
from roma_eval.demo.context import DemoContext
from roma_eval.demo.oracle import oracle_stage
from roma_eval.demo.report import report_stage
from roma_eval.demo.roma import roma_stage, router_tuning_stage
from roma_eval.demo.routing import routing_stage
from roma_eval.demo.table import format_table

Stage = Callable[[DemoContext], "list[str] | None"]
# The demo runs the registry's default rows (reproduce's default --methods), each as ``<name>_stage``.
_METHOD_STAGES = {stage.__name__.removesuffix("_stage"): stage
                  for stage in (base_stage, router_tuning_stage, roma_stage, oracle_stage, c3po_stage)}
STAGES: list[tuple[str, Stage]] = [("toy model", toy_model_stage),
                                   *((name, _METHOD_STAGES[name]) for name in registry.DEFAULT),
                                   ("routing", routing_stage), ("report", report_stage)]
__all__ = ["DemoContext", "STAGES", "run_demo", "summary"]
logger = logging.getLogger(__name__)


def run_demo(ctx: DemoContext, stages: list[tuple[str, Stage]] | None = None) -> DemoContext:
    """Run the stages (each logs what it does); ``summary(ctx)`` is the table to show at the end."""
    import time

    ctx.claim_output()
    for name, stage in STAGES if stages is None else stages:
        logger.info("\n== %s", name)
        started = time.perf_counter()
        commands = stage(ctx) or []
        ctx.record(name, time.perf_counter() - started, commands)
        logger.info("(%s: %.0f s)", name, time.perf_counter() - started)
    return ctx


def summary(ctx: DemoContext) -> str:
    """Per benchmark, chance and every method's headline value, then the stages' notes."""
    return "\n".join([f"{ctx.preset} preset, seed {ctx.seed}; % per benchmark; outputs in {ctx.output}/",
                      format_table(ctx), *ctx.notes])

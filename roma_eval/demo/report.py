"""The demo's last stage: report.{md,html,tex}, results.csv and plots/ in reports/demo/report/, rebuilt from
whatever rows exist on every run."""

from __future__ import annotations

from roma_eval import registry
from roma_eval.demo.context import DemoContext
from roma_eval.pipeline import report_stage as pipeline_report


def report_stage(ctx: DemoContext) -> list[str]:
    return pipeline_report(ctx, [m for m in registry.NAMES if m in ctx.columns],
                           "roma-eval demo: base, Router Tuning, RoMA, C3PO and the oracle")

"""The demo's last stage: report.{md,html,tex}, results.csv and plots/ beside the methods' result
directories (reports/demo/ by default), rebuilt from whatever rows exist on every run."""

from __future__ import annotations

import logging

from roma_eval.demo.context import DemoContext

METHODS = ("base", "roma", "c3po", "oracle")  # the stage directories the report reads

logger = logging.getLogger(__name__)


def report_stage(ctx: DemoContext) -> None:
    from roma_eval.report.demo import write_demo_report

    out = ctx.output
    written = write_demo_report(ctx.output, out, methods=[m for m in METHODS if m in ctx.columns], overwrite=True)
    logger.info(f"report: {len(written)} files in {out}/ (report.md, report.html, report.tex, plots/)")

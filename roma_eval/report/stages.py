"""The report an experiment ends with (`roma-eval reproduce`, `roma-eval demo`): one row per stage directory."""

from __future__ import annotations

from pathlib import Path

from roma_eval.errors import RomaEvalError
from roma_eval.report.build import PaperSource, build_report
from roma_eval.report.render import write_report
from roma_eval.results import load_run, results_files


def write_stage_report(results_dir: Path, out_dir: Path, methods: list[str] | None = None, *,
                       title: str = "roma-eval: base, RoMA, C3PO and the oracle", paper_model: str | None = None,
                       overwrite: bool = False) -> list[Path]:
    """Report on ``results_dir``'s subdirectories, one per method (the subdirectory's name is the row label),
    each holding what lm-eval (or the oracle) wrote; methods not run yet are simply absent.
    ``methods`` restricts the rows to these subdirectories, in this order.  ``paper_model`` puts the paper's
    published rows of that model (olmoe, deepseekmoe, qwen3) beside ours; by default it is guessed from the
    model's name.

    Returns the files written under ``out_dir`` (report.md, report.html, report.tex, results.csv, plots/).
    """
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    method_dirs = sorted(p for p in results_dir.iterdir() if p.is_dir()) if results_dir.is_dir() else []
    if methods is not None:
        method_dirs = [results_dir / m for m in methods if (results_dir / m).is_dir()]
    runs = [load_run(file, label=d.name) for d in method_dirs for file in results_files(d)]
    if not runs:
        raise RomaEvalError(f"no method results under {results_dir}; run the experiment's evaluations first")
    report = build_report(runs, columns="present", title=title, paper_source=PaperSource(model=paper_model))
    return write_report(report, out_dir, overwrite=overwrite)

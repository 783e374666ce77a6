"""Render a report to Markdown, LaTeX (booktabs) and one HTML page, and write it with its figures.

The HTML page is self-contained (inline CSS, figures inlined as base64 SVG) and autoescaped.
"""

from __future__ import annotations

import base64
import csv
import io
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from roma_eval.report.build import Report
from roma_eval.report.output import refuse_existing, write_files
from roma_eval.report.templating import environment
from roma_eval.results import Score

OUTPUTS = {"md": "report.md", "tex": "report.tex", "html": "report.html"}
PLOTS_DIR = "plots"
TIDY_CSV = "results.csv"


@dataclass(frozen=True)
class FigureFiles:
    title: str
    png: str  # relative to the report
    svg: str
    svg_data_uri: str  # for the self-contained HTML page


def render(report: Report, kind: str, figures: dict[str, FigureFiles] | None = None) -> str:
    """The report as ``kind`` ("md", "tex" or "html") text; ``figures`` maps figure names to their files."""
    template = environment(kind).get_template(f"report.{kind}.j2")
    return template.render(report=report, figures=figures or {})


def tidy_csv(scores: list[Score]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[f.name for f in fields(Score)], lineterminator="\n")
    writer.writeheader()
    writer.writerows(asdict(s) for s in scores)
    return out.getvalue()


def write_report(report: Report, out_dir: Path, formats=tuple(OUTPUTS), overwrite: bool = False) -> list[Path]:
    """Write the report files, results.csv and the figures (PNG and SVG); nothing is written if one exists
    already and ``overwrite`` is off.  Everything is rendered first and written together (``storage.write_files``):
    a full disk leaves the previous files as they were and no new one."""
    figure_paths = {f.name: (out_dir / PLOTS_DIR / f"{f.name}.png", out_dir / PLOTS_DIR / f"{f.name}.svg")
                    for f in report.figures}
    targets = [out_dir / OUTPUTS[k] for k in formats] + [out_dir / TIDY_CSV]
    refuse_existing(targets + [p for pair in figure_paths.values() for p in pair], overwrite)

    files, figures = {}, {}
    for spec in report.figures:
        png, svg = figure_paths[spec.name]
        figure = spec.draw()
        files[png], files[svg] = _save(figure, "png"), _save(figure, "svg")
        svg_uri = "data:image/svg+xml;base64," + base64.b64encode(files[svg]).decode("ascii")
        figures[spec.name] = FigureFiles(spec.title, f"{PLOTS_DIR}/{png.name}", f"{PLOTS_DIR}/{svg.name}", svg_uri)
    for kind in formats:
        files[out_dir / OUTPUTS[kind]] = render(report, kind, figures)
    files[out_dir / TIDY_CSV] = tidy_csv(report.scores)
    return write_files(files)


def _save(figure, fmt: str) -> bytes:
    # Fixed metadata and hash salt: the same inputs give the same files.
    buffer = io.BytesIO()
    import matplotlib  # only when there are figures: matplotlib is the optional "plots" extra

    metadata = {"Date": None} if fmt == "svg" else {"Software": None}
    with matplotlib.rc_context({"svg.hashsalt": "roma-eval"}):
        figure.savefig(buffer, format=fmt, metadata=metadata, dpi=120)
    return buffer.getvalue()

"""The published numbers: RoMA's Table 1 (arXiv 2511.07419) and C3PO's Table 1 (arXiv 2504.07964).

The CSVs ship in ``published/`` (a copy of the project's ``paper/*.csv``) so ``roma-eval report
--paper`` works from an installed wheel; ``--paper-dir`` reads another copy.
"""

from __future__ import annotations

import csv
from pathlib import Path

from roma_eval.errors import RomaEvalError
from roma_eval.report.tables import Grid, fmt, method_name

PUBLISHED_DIR = Path(__file__).parent / "published"
PAPER_MODELS = {"olmoe": "OLMoE-1B-7B", "deepseekmoe": "DeepSeekMoE-16B", "qwen3": "Qwen3-30B-A3B"}
# Substrings of a model's name or hub id that identify the paper's models, for "ours vs paper".
_MODEL_HINTS = (("olmoe", "olmoe"), ("deepseek", "deepseekmoe"), ("qwen3", "qwen3"))


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The CSV's header and rows; a file that is not the published layout is a clear error."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            header = list(reader.fieldnames or [])
    except OSError as exc:
        raise RomaEvalError(f"cannot read {path} ({exc.strerror}); "
                            f"pass the paper's CSV directory with --paper-dir") from None
    if "method" not in header or "avg" not in header:
        raise RomaEvalError(f"{path} has no 'method' and 'avg' columns; it is not one of the paper's Table 1 CSVs")
    return header, rows


def _grid(path: Path, title: str, header: list[str], rows: list[dict[str, str]]) -> Grid:
    columns = tuple(c for c in header if c not in ("model", "method", "avg"))
    grid = Grid(title=title, columns=columns, values={}, suite="paper", keep_row_order=True)
    for line, row in enumerate(rows, start=2):
        try:
            grid.values[row["method"]] = {c: float(row[c]) for c in columns}
            grid.published_average[row["method"]] = float(row["avg"])
        except (TypeError, ValueError):
            raise RomaEvalError(f"line {line} of {path} has a missing or non-numeric value; "
                                f"restore the file from the paper") from None
    return grid


def table1_grids(paper_dir: Path = PUBLISHED_DIR) -> dict[str, Grid]:
    """RoMA's Table 1, one grid per model, from ``table1_<model>.csv``."""
    grids = {}
    for model, name in PAPER_MODELS.items():
        path = paper_dir / f"table1_{model}.csv"
        header, rows = read_rows(path)
        grids[model] = _grid(path, f"RoMA Table 1 — {name}", header, rows)
        grids[model].model = model
    return grids


def c3po_grids(paper_dir: Path = PUBLISHED_DIR) -> dict[str, Grid]:
    """C3PO's own Table 1 (six benchmarks), one grid per model, from ``c3po_table1.csv``."""
    path = paper_dir / "c3po_table1.csv"
    header, rows = read_rows(path)
    grids = {}
    for model in dict.fromkeys(row.get("model") for row in rows):
        if model not in PAPER_MODELS:
            raise RomaEvalError(f"{path} names model {model!r}; expected one of {', '.join(PAPER_MODELS)}")
        grids[model] = _grid(path, f"C3PO Table 1 — {PAPER_MODELS[model]}", header,
                             [row for row in rows if row.get("model") == model])
        grids[model].model = model
    return grids


def recomputed_average(grid: Grid, method: str) -> float:
    """The mean of the published (already rounded) columns: how the paper's Avg is made."""
    row = [grid.values[method][c] for c in grid.columns]
    return sum(row) / len(row)


def average_check_note(grid: Grid) -> str:
    """One sentence: do the recomputed averages round to the published ones?"""
    wrong = [f"{method_name(m)} {fmt(recomputed_average(grid, m))} vs {fmt(grid.published_average[m])}"
             for m in grid.methods if fmt(recomputed_average(grid, m)) != fmt(grid.published_average[m])]
    if wrong:
        return "Recomputed averages differ from the published ones: " + "; ".join(wrong) + "."
    return (f"Avg is the paper's; recomputed as the mean of the {len(grid.columns)} columns and rounded half up "
            f"to 0.1, it matches for all {len(grid.methods)} rows.")


def paper_model_for(model: str) -> str | None:
    """Which of the paper's models a model name or hub id refers to, if any."""
    lowered = model.lower()
    return next((paper for hint, paper in _MODEL_HINTS if hint in lowered), None)

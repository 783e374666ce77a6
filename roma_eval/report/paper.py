"""The published numbers: RoMA's Table 1 (arXiv 2511.07419) and C3PO's Table 1 (arXiv 2504.07964).

The CSVs ship in ``published/`` (RoMA's and C3PO's Table 1, docs/paper.md) so ``roma-eval report
--paper`` works from an installed wheel; ``--paper-dir`` reads another copy.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

from roma_eval.errors import RomaEvalError
from roma_eval.registry import label
from roma_eval.report.formatting import fmt
from roma_eval.report.tables import Grid

PUBLISHED_DIR = Path(__file__).parent / "published"
PAPER_MODELS = {"olmoe": "OLMoE-1B-7B", "deepseekmoe": "DeepSeekMoE-16B", "qwen3": "Qwen3-30B-A3B"}
# Substrings of a model's name or hub id that identify the paper's models, for "ours vs paper".
_MODEL_HINTS = (("olmoe", "olmoe"), ("deepseek", "deepseekmoe"), ("qwen3", "qwen3"))
BASE, POST_TRAINED = "base", "post-trained"
# Words of a checkpoint's name that say which variant it is (pretrained only, or chat / instruction tuned).
_VARIANT_WORDS = {"base": BASE, "instruct": POST_TRAINED, "chat": POST_TRAINED, "it": POST_TRAINED,
                  "sft": POST_TRAINED, "dpo": POST_TRAINED, "rlhf": POST_TRAINED}


@dataclass(frozen=True)
class PaperCheckpoint:
    """The checkpoint a model's published rows were measured on, as far as the evidence goes: the paper names the
    models (OLMoE-1B-7B, DeepSeekMoE-16B, Qwen3-30B-A3B) but not which variant."""

    hub_id: str
    evidence: str
    # The family's release names without a variant word, and what such a name is: OLMoE releases its pretrained-only
    # model as OLMoE-1B-7B-<MMYY> and Qwen3 its post-trained one as Qwen3-30B-A3B; DeepSeekMoE always says.
    plain_name: str
    plain_variant: str | None


PAPER_CHECKPOINTS = {
    "olmoe": PaperCheckpoint(
        "allenai/OLMoE-1B-7B-0125-Instruct",
        "RoMA's released trainer and C3PO's released optimiser both load it",
        r"olmoe-1b-7b(-\d{4})?", BASE),
    "deepseekmoe": PaperCheckpoint(
        "deepseek-ai/deepseek-moe-16b-chat",
        "the paper's Base GSM8K, 62.2, is DeepSeek's published figure for it, where deepseek-moe-16b-base has 18.8",
        r"deepseek-moe-16b", None),
    "qwen3": PaperCheckpoint(
        "Qwen/Qwen3-30B-A3B", "it is the post-trained release, whose pretrained-only sibling is Qwen3-30B-A3B-Base",
        r"qwen3-30b-a3b", POST_TRAINED),
}


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
    wrong = [f"{label(m)} {fmt(recomputed_average(grid, m))} vs {fmt(grid.published_average[m])}"
             for m in grid.methods if fmt(recomputed_average(grid, m)) != fmt(grid.published_average[m])]
    if wrong:
        return "Recomputed averages differ from the published ones: " + "; ".join(wrong) + "."
    return (f"Avg is the paper's; recomputed as the mean of the {len(grid.columns)} columns and rounded half up "
            f"to 0.1, it matches for all {len(grid.methods)} rows.")


def paper_model_for(model: str) -> str | None:
    """Which of the paper's models a model name or hub id refers to, if any."""
    lowered = model.lower()
    return next((paper for hint, paper in _MODEL_HINTS if hint in lowered), None)


def checkpoint_variant(checkpoint: str, paper_model: str) -> str | None:
    """BASE, POST_TRAINED or None (the name does not say) for a hub id or local directory of the paper's model family:
    a variant word in its last path component ("-Base", "-base", "-chat", "-Instruct", ...), else the family's
    release name without one ("OLMoE-1B-7B-0924": pretrained only), else the hub id a local directory's
    config.json records as ``_name_or_path`` (older transformers wrote it), judged the same way."""
    name = checkpoint.rstrip("/").split("/")[-1].lower()
    words = [_VARIANT_WORDS[w] for w in re.split(r"[-_.]", name) if w in _VARIANT_WORDS]
    if words:
        return words[-1]
    family = PAPER_CHECKPOINTS[paper_model]
    if re.fullmatch(family.plain_name, name):
        return family.plain_variant
    config = Path(checkpoint) / "config.json"
    try:
        recorded = json.loads(config.read_text(encoding="utf-8")).get("_name_or_path") if config.is_file() else None
    except (OSError, ValueError):
        recorded = None
    if isinstance(recorded, str) and recorded.rstrip("/") != checkpoint.rstrip("/"):
        return checkpoint_variant(recorded, paper_model)
    return None


def variant_note(checkpoints, paper_model: str) -> str | None:
    """One sentence for under "Ours vs paper" when our runs' checkpoints are another variant than the published
    rows' (base against post-trained), or cannot be told apart by name; None when they are the same variant."""
    paper = PAPER_CHECKPOINTS[paper_model]
    expected = checkpoint_variant(paper.hub_id, paper_model)
    found = {checkpoint: checkpoint_variant(checkpoint, paper_model) for checkpoint in sorted(checkpoints)}
    unknown = [c for c, variant in found.items() if variant is None]
    other = [c for c, variant in found.items() if variant not in (None, expected)]
    if not unknown and not other:
        return None
    said = (f"The paper does not name the variant of {PAPER_MODELS[paper_model]}; its rows are taken to be "
            f"{paper.hub_id}, a {expected} model: {paper.evidence}.")
    if other:
        return (f"{said} These runs evaluate {', '.join(other)}, a {found[other[0]]} model: the differences in this "
                f"table include the difference between the two variants, and are not the methods' alone.")
    return (f"{said} Whether {', '.join(unknown)} is a base or a post-trained model cannot be told from its name; "
            "compare with care.")

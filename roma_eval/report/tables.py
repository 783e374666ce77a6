"""Tables of methods × benchmarks and their views (scores, Δ vs base, oracle gap closed, cost).

A :class:`Grid` holds the numbers (percent) of one model on one suite; the view functions turn it
into :class:`Table` s of already formatted cells, which the templates only lay out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from roma_eval.results import PAPER_COLUMNS, Run, TrainingCost, choose_metric, latest_cells

MISSING = "—"
UPPER_BOUND = "oracle"  # an upper bound, not a competitor: never bold (as in the paper's Table 1)
# The rows of the paper's Table 1, in its order (tests check it against the published CSVs).
METHOD_ORDER = ("base", "oracle", "icl", "c3po", "router_tuning", "oracle_tuning", "prefix_tuning", "prompt_tuning",
                "dense_bp", "roma")
METHOD_NAMES = {
    "base": "Base", "roma": "RoMA", "c3po": "C3PO", "oracle": "Oracle", "icl": "ICL",
    "router_tuning": "Router Tuning", "oracle_tuning": "Oracle Tuning", "prefix_tuning": "Prefix Tuning",
    "prompt_tuning": "Prompt Tuning", "dense_bp": "Dense BP", "mode_finding": "Mode Finding",
    "kernel_regression": "Kernel Regression", "ngd": "NGD",
}
COLUMN_NAMES = {
    "mmlu": "MMLU", "hellaswag": "HellaSwag", "arc_challenge": "ARC-C", "arc_easy": "ARC-E", "piqa": "PIQA",
    "winogrande": "WinoGrande", "boolq": "BoolQ", "gsm8k": "GSM8K",
}
SUITE_NAMES = {"paper": "paper benchmarks", "toy": "toy suite"}
AVERAGE = "Avg"


@dataclass(frozen=True)
class Cell:
    text: str
    bold: bool = False


@dataclass(frozen=True)
class Table:
    title: str
    columns: tuple[str, ...]  # display names; the row label column is implicit
    rows: tuple[tuple[str, tuple[Cell, ...]], ...]
    notes: tuple[str, ...] = ()


@dataclass
class Grid:
    """One model on one suite: method -> column -> score in percent."""

    title: str
    columns: tuple[str, ...]
    values: dict[str, dict[str, float]]
    metrics: dict[str, list[str]] = field(default_factory=dict)  # column -> metric keys used, for a footnote
    seconds_per_sample: dict[str, float] = field(default_factory=dict)
    training: dict[str, TrainingCost] = field(default_factory=dict)  # method -> its artefact's training cost
    published_average: dict[str, float] = field(default_factory=dict)  # the paper's own Avg column
    # column -> method -> how its run was evaluated (Run.settings: n-shot, limit, version), for a footnote
    settings: dict[str, dict[str, dict[str, str | None]]] = field(default_factory=dict)
    checkpoints: set[str] = field(default_factory=set)  # the runs' hub ids or paths (Run.checkpoint)
    model: str = ""
    suite: str = ""
    keep_row_order: bool = False  # published tables keep the paper's row order

    @property
    def methods(self) -> list[str]:
        return list(self.values) if self.keep_row_order else ordered_methods(self.values)

    def value(self, method: str, column: str) -> float | None:
        return self.values.get(method, {}).get(column)

    def average(self, method: str) -> float | None:
        """The mean over all the table's columns, or None when one is missing (a partial mean misleads)."""
        if method in self.published_average:
            return self.published_average[method]
        row = [self.value(method, c) for c in self.columns]
        return sum(row) / len(row) if row and None not in row else None


def ordered_methods(methods) -> list[str]:
    """The paper's Table 1 rows in its order (Base, Oracle, ICL, C3PO, Router Tuning, Oracle Tuning, Prefix Tuning,
    Prompt Tuning, Dense BP, RoMA), then the rest as given."""
    methods = list(dict.fromkeys(methods))
    return [m for m in METHOD_ORDER if m in methods] + [m for m in methods if m not in METHOD_ORDER]


def method_name(method: str) -> str:
    return METHOD_NAMES.get(method, method)


def fmt(value: float | None, digits: int = 1, sign: bool = False, suffix: str = "") -> str:
    """Round half up, the convention of published tables (Python's round() is half-even on binary floats:
    round(2.675, 2) == 2.67); float noise is cut first, so a mean computed as 2.67499999 counts as 2.675."""
    if value is None:
        return MISSING
    quantum = Decimal(1).scaleb(-digits)
    text = str(Decimal(repr(round(value, 9))).quantize(quantum, rounding=ROUND_HALF_UP))
    if text.startswith("-") and Decimal(text) == 0:
        text = text[1:]  # no "-0.0"
    if sign and not text.startswith("-"):
        text = "+" + text
    return text + suffix


def grids_from_runs(runs: list[Run], prefs: dict[str, tuple[str, ...]], columns: str = "all") -> list[Grid]:
    """One grid per (model, suite) of the paper's columns; the latest run of a cell wins.

    ``columns="present"`` keeps only columns some method has (and averages over those).
    """
    cells = latest_cells(runs)
    grids: dict[tuple[str, str], Grid] = {}
    contributing: dict[tuple[str, str, str], dict[int, Run]] = {}
    for (model, method, suite, column), (run, bench) in cells.items():
        if suite not in SUITE_NAMES:
            continue
        metric = choose_metric(run.metrics(bench), column, prefs, bench.task)
        grid = grids.setdefault((model, suite), Grid(title=f"{model} — {SUITE_NAMES[suite]}", columns=PAPER_COLUMNS,
                                                    values={}, model=model, suite=suite))
        grid.values.setdefault(method, {})
        grid.checkpoints.add(run.checkpoint)
        if metric is None:
            continue
        grid.values[method][column] = 100 * run.metrics(bench)[metric]
        grid.settings.setdefault(column, {})[method] = run.settings(bench)
        if metric not in grid.metrics.setdefault(column, []):
            grid.metrics[column].append(metric)
        contributing.setdefault((model, suite, method), {})[id(run)] = run
    for (model, suite, method), by_id in contributing.items():
        latest = max(by_id.values(), key=lambda r: r.date)
        if latest.training is not None:
            grids[(model, suite)].training[method] = latest.training
        seconds = [r.evaluation_seconds for r in by_id.values()]
        documents = sum(r.documents for r in by_id.values())
        if None not in seconds and documents:
            grids[(model, suite)].seconds_per_sample[method] = sum(seconds) / documents
    if columns == "present":
        for grid in grids.values():
            grid.columns = tuple(c for c in PAPER_COLUMNS if any(c in row for row in grid.values.values()))
    return [grids[key] for key in sorted(grids)]


def _header(grid: Grid) -> tuple[str, ...]:
    return tuple(COLUMN_NAMES.get(c, c) for c in grid.columns) + (AVERAGE,)


def _best_per_column(methods: list[str], texts: list[list[str]]) -> list[list[bool]]:
    """Which cells to bold: the best displayed value per column among competing methods (ties all bold)."""
    bold = [[False] * len(row) for row in texts]
    competing = [i for i, m in enumerate(methods) if m != UPPER_BOUND]
    if len(competing) < 2:
        return bold
    for j in range(len(texts[0])):
        shown = {i: float(texts[i][j]) for i in competing if texts[i][j] != MISSING}
        for i, value in shown.items():
            bold[i][j] = value == max(shown.values())
    return bold


def scores_table(grid: Grid, title: str = "Accuracy (%)") -> Table:
    """The paper's Table 1 layout: methods × benchmarks and the average, best competitor in bold."""
    methods = grid.methods
    texts = [[fmt(grid.value(m, c)) for c in grid.columns] + [fmt(grid.average(m))] for m in methods]
    bold = _best_per_column(methods, texts)
    rows = tuple((method_name(m), tuple(Cell(t, b) for t, b in zip(row, flags, strict=True)))
                 for m, row, flags in zip(methods, texts, bold, strict=True))
    notes = [_metric_note(grid)] if grid.metrics else []
    if note := _settings_note(grid):
        notes.append(note)
    return Table(title=title, columns=_header(grid), rows=rows, notes=tuple(notes))


def delta_table(grid: Grid) -> Table | None:
    """Each method minus base, in points; None without a base row and another one."""
    if "base" not in grid.values or len(grid.values) < 2:
        return None
    rows = []
    for m in grid.methods:
        if m == "base":
            continue
        values = [_diff(grid.value(m, c), grid.value("base", c)) for c in grid.columns]
        values.append(_diff(grid.average(m), grid.average("base")))
        rows.append((method_name(m), tuple(Cell(fmt(v, sign=True)) for v in values)))
    return Table(title="Δ vs base (points)", columns=_header(grid), rows=tuple(rows))


def gap_closed_table(grid: Grid) -> Table | None:
    """Share of the oracle gap closed, (method − base)/(oracle − base); None without base, oracle and another row."""
    if "base" not in grid.values or UPPER_BOUND not in grid.values or len(grid.values) < 3:
        return None
    rows = []
    for m in grid.methods:
        if m in ("base", UPPER_BOUND):
            continue
        values = [_gap(grid.value(m, c), grid.value("base", c), grid.value(UPPER_BOUND, c)) for c in grid.columns]
        values.append(_gap(grid.average(m), grid.average("base"), grid.average(UPPER_BOUND)))
        rows.append((method_name(m), tuple(Cell(fmt(v, digits=0, suffix="%")) for v in values)))
    return Table(title="Share of the oracle gap closed, (method − base) / (oracle − base)",
                 columns=_header(grid), rows=tuple(rows))


def _count(value: int | None) -> str:
    return MISSING if value is None else f"{value:,}"


def cost_table(grid: Grid) -> Table | None:
    """Per method: trainable parameters and training time (from the evaluated artefact's own records), and the
    wall-clock seconds per sample lm-eval recorded, relative to base; None when nothing is recorded."""
    if not grid.seconds_per_sample and not grid.training:
        return None
    base = grid.seconds_per_sample.get("base")
    rows = []
    for m in grid.methods:
        seconds = grid.seconds_per_sample.get(m)
        relative = seconds / base if seconds is not None and base else None
        training = grid.training.get(m, TrainingCost(None))
        rows.append((method_name(m), (Cell(_count(training.trainable_parameters)),
                                      Cell(fmt(training.training_seconds, digits=1)),
                                      Cell(fmt(seconds, digits=3)), Cell(fmt(relative, digits=2, suffix="×")))))
    return Table(title="Cost", columns=("trainable parameters", "training (s)", "seconds / sample",
                                        "relative to base"), rows=tuple(rows),
                 notes=("Trainable parameters: the tuned routers' weights (layers × experts × hidden) of a router "
                        "checkpoint, a peft adapter's parameters, 0 for methods that train nothing. Training: the "
                        "summed wall-clock of the optimisation steps (training_log.jsonl), without what precedes them "
                        "(base pass, neighbour search, the oracle's run on the training data for Oracle Tuning).",
                        "Seconds / sample: lm-eval's total_evaluation_time_seconds (model loading included) divided by "
                        "the documents evaluated; compare runs made on the same hardware only."))


def side_by_side_table(ours: Grid, paper: Grid) -> Table | None:
    """Our numbers next to the paper's for the methods both have; None when they share none."""
    shared = [m for m in ours.methods if m in paper.values]
    if not shared:
        return None
    rows = []
    for m in shared:
        for source, grid in (("ours", ours), ("paper", paper)):
            values = [grid.value(m, c) for c in paper.columns] + [grid.average(m)]
            rows.append((f"{method_name(m)} ({source})", tuple(Cell(fmt(v)) for v in values)))
    return Table(title=f"Ours vs {paper.title}", columns=_header(paper), rows=tuple(rows))


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _gap(method: float | None, base: float | None, oracle: float | None) -> float | None:
    if method is None or base is None or oracle is None or abs(oracle - base) < 1e-9:
        return None
    return 100 * (method - base) / (oracle - base)


def _settings_note(grid: Grid) -> str | None:
    """Which columns compare methods evaluated differently (other few-shot examples, fewer documents, another
    task version), and how; None when they were all evaluated alike.  Columns whose methods differ the
    same way are named together."""
    columns_by_difference: dict[tuple[str, str], list[str]] = {}  # (setting, "Base 0, RoMA 5") -> columns
    for column in grid.columns:
        by_method = grid.settings.get(column, {})
        for name in dict.fromkeys(name for settings in by_method.values() for name in settings):
            values = {m: v for m, settings in by_method.items() if (v := settings[name]) is not None}
            if len(set(values.values())) > 1:
                described = ", ".join(f"{method_name(m)} {values[m]}" for m in ordered_methods(values))
                columns_by_difference.setdefault((name, described), []).append(COLUMN_NAMES.get(column, column))
    if not columns_by_difference:
        return None
    listed = "; ".join(f"{name} in {', '.join(columns)}: {described}"
                       for (name, described), columns in columns_by_difference.items())
    return f"Not evaluated alike ({grid.model}): {listed}."


def _metric_note(grid: Grid) -> str:
    parts = [f"{COLUMN_NAMES.get(c, c)}: {' / '.join(grid.metrics[c])}" for c in grid.columns if c in grid.metrics]
    return "Metrics (lm-eval metric,filter): " + "; ".join(parts) + "."

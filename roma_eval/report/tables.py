"""Tables of methods × benchmarks and their views (scores, Δ vs base, oracle gap closed, cost).

A :class:`Grid` holds the numbers (percent) of one model on one suite, and where each came from; the view
functions turn it into :class:`Table` s of already formatted cells, which the templates only lay out.

A row is one method, and one variant of it: runs of a method that evaluated something else (another router
checkpoint, other model_args, another limit or chat template) are separate rows, named by where they were read
from, never merged into one.  Re-runs of the same variant keep the latest per benchmark, and a note says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from roma_eval import registry
from roma_eval.report.formatting import MISSING, fmt, interval_text
from roma_eval.report.provenance import BACKEND_NAMES, model_title
from roma_eval.results import PAPER_COLUMNS, Benchmark, Run, TrainingCost, Variant, choose_metric

if TYPE_CHECKING:
    from roma_eval.report.check import Comparison

UPPER_BOUND = "oracle"  # an upper bound, not a competitor: never bold (as in the paper's Table 1)
# The rows of the paper's Table 1, in its order (tests check it against the published CSVs).
COLUMN_NAMES = {
    "mmlu": "MMLU", "hellaswag": "HellaSwag", "arc_challenge": "ARC-C", "arc_easy": "ARC-E", "piqa": "PIQA",
    "winogrande": "WinoGrande", "boolq": "BoolQ", "gsm8k": "GSM8K",
}
SUITE_NAMES = {"paper": "paper benchmarks", "toy": "toy suite"}
AVERAGE = "Avg"
AVERAGE_KEY = "average"  # a row's paired comparison of the average (check's name for it) in Grid.comparisons
# The oracle-gap share is shown only where the gap is real: the oracle at least this many points above base, and
# significantly so (its paired interval above 0).  A share of a gap within noise is noise (a 0.3-point gap turns a
# 1.4-point gain into 482%).
MIN_GAP_POINTS = 5.0
BETTER_MARK, WORSE_MARK = "↑", "↓"
LEVEL = "95%"  # of every interval (check's default alpha 0.05)


@dataclass(frozen=True)
class Cell:
    text: str
    bold: bool = False
    mark: str = ""  # significantly above / below base (BETTER_MARK, WORSE_MARK)
    detail: str = ""  # the paired interval, shown under or beside the number


@dataclass(frozen=True)
class Table:
    title: str
    columns: tuple[str, ...]  # display names; the row label column is implicit
    rows: tuple[tuple[str, tuple[Cell, ...]], ...]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class CellSource:
    """Where a cell's number comes from: the run, its benchmark and the metric chosen."""

    run: Run
    bench: Benchmark
    metric: str


@dataclass
class Grid:
    """One model on one suite: row -> column -> score in percent.  A row is a method (``row_methods`` maps the rows
    of a method shown as several variants to it; ``row_places`` holds where each such row was read from)."""

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
    heading: str = ""  # the model as a reader knows it (provenance.model_title), the title without the suite
    suite: str = ""
    keep_row_order: bool = False  # published tables keep the paper's row order
    row_methods: dict[str, str] = field(default_factory=dict)
    row_places: dict[str, str] = field(default_factory=dict)
    cells: dict[str, dict[str, CellSource]] = field(default_factory=dict)
    sources: dict[str, list[Run]] = field(default_factory=dict)  # row -> the runs behind it, oldest first
    # row -> column (or AVERAGE_KEY) -> the paired comparison with the base row (report.intervals)
    comparisons: dict[str, dict[str, Comparison]] = field(default_factory=dict)
    chance: dict[str, float] = field(default_factory=dict)  # column -> the score of guessing, percent
    notes: list[str] = field(default_factory=list)  # how the rows were formed (variants, re-runs)
    interval_notes: list[str] = field(default_factory=list)  # why an interval is missing, how documents paired

    @property
    def methods(self) -> list[str]:
        """The rows, in the paper's order of their methods (variants of one method in the order found)."""
        if self.keep_row_order:
            return list(self.values)
        order = {m: i for i, m in enumerate(ordered_methods(self.method_of(r) for r in self.values))}
        return sorted(self.values, key=lambda row: order[self.method_of(row)])

    def method_of(self, row: str) -> str:
        return self.row_methods.get(row, row)

    def row_name(self, row: str) -> str:
        place = self.row_places.get(row)
        return registry.label(self.method_of(row)) + (f" ({place})" if place else "")

    def row_of(self, method: str) -> str | None:
        """The one row of ``method``; None when it has none or several (variants)."""
        rows = [r for r in self.values if self.method_of(r) == method]
        return rows[0] if len(rows) == 1 else None

    @property
    def n(self) -> dict[str, str]:
        """column -> the documents behind it ("16", or "10–16" when the rows differ), and the Avg's total."""
        counts = {c: sorted({n for cells in self.cells.values() if c in cells
                             if (n := cells[c].run.n(cells[c].bench, cells[c].metric)) is not None})
                  for c in self.columns}
        out = {c: count_range(n) for c, n in counts.items()}
        out[AVERAGE_KEY] = (f"{sum(n[0] for n in counts.values()):,}" if all(len(n) == 1 for n in counts.values())
                            else MISSING)
        return out

    def value(self, method: str, column: str) -> float | None:
        return self.values.get(method, {}).get(column)

    def average(self, method: str) -> float | None:
        """The mean over all the table's columns, or None when one is missing (a partial mean misleads)."""
        if method in self.published_average:
            return self.published_average[method]
        row = [self.value(method, c) for c in self.columns]
        return sum(row) / len(row) if row and None not in row else None


def count_range(counts: list[int]) -> str:
    """Sorted counts as "16" or "10–16"; MISSING for none."""
    if not counts:
        return MISSING
    return f"{counts[0]:,}" if counts[0] == counts[-1] else f"{counts[0]:,}–{counts[-1]:,}"


def ordered_methods(methods) -> list[str]:
    """The paper's Table 1 rows in its order (Base, Oracle, ICL, C3PO, Router Tuning, Oracle Tuning, Prefix Tuning,
    Prompt Tuning, Dense BP, RoMA), then the rest as given."""
    methods = list(dict.fromkeys(methods))
    return [m for m in registry.NAMES if m in methods] + [m for m in methods if m not in registry.NAMES]


def grids_from_runs(runs: list[Run], prefs: dict[str, tuple[str, ...]], columns: str = "all") -> list[Grid]:
    """One grid per (model, suite) of the paper's columns; a row per method and variant (``Run.variant``); the
    latest run of a variant wins a cell it shares with an older one.

    ``columns="present"`` keeps only columns some method has (and averages over those).
    """
    groups: dict[tuple[str, str], dict[tuple[str, Variant], list[Run]]] = {}
    for run in sorted(runs, key=lambda r: r.date):
        for suite in dict.fromkeys(b.suite for b in run.benchmarks if b.suite in SUITE_NAMES):
            groups.setdefault((run.model, suite), {}).setdefault((run.method, run.variant), []).append(run)
    grids = []
    for (model, suite), variants in sorted(groups.items()):
        runs_here = [r for group in variants.values() for r in group]
        titles = sorted({model_title(r.checkpoint) for r in runs_here}, key=lambda t: ("/" not in t, t))
        grid = Grid(title=f"{titles[0]} — {SUITE_NAMES[suite]}", columns=PAPER_COLUMNS, values={}, model=model,
                    heading=titles[0], suite=suite)
        for method in dict.fromkeys(method for method, _ in variants):
            mine = [(variant, group) for (m, variant), group in variants.items() if m == method]
            places = _places([group for _, group in mine]) if len(mine) > 1 else [None]
            for (_, group), place in zip(mine, places, strict=True):
                row = method if place is None else f"{method} ({place})"
                grid.row_methods[row] = method
                if place is not None:
                    grid.row_places[row] = place
                _fill_row(grid, row, group, prefs)
            if len(mine) > 1:
                grid.notes.append(_variants_note(method, [variant for variant, _ in mine]))
        if len({run.backend for run in runs_here}) > 1:
            grid.notes.append(_backends_note(variants))
        if columns == "present":
            grid.columns = tuple(c for c in PAPER_COLUMNS if any(c in row for row in grid.values.values()))
        grids.append(grid)
    return grids


def _fill_row(grid: Grid, row: str, runs: list[Run], prefs: dict[str, tuple[str, ...]]) -> None:
    """The row's cells from its runs (oldest first): per column the latest run's preferred metric."""
    suite = grid.suite
    grid.values[row] = {}
    latest: dict[str, tuple[Run, Benchmark]] = {}
    superseded: dict[str, list[Run]] = {}
    for run in runs:
        for bench in run.benchmarks:
            if bench.suite == suite:
                if bench.name in latest:
                    superseded.setdefault(bench.name, []).append(latest[bench.name][0])
                latest[bench.name] = (run, bench)
    used: dict[int, Run] = {}
    for column, (run, bench) in latest.items():
        grid.checkpoints.add(run.checkpoint)
        metric = choose_metric(run.metrics(bench), column, prefs, bench.task)
        if metric is None:
            continue
        used[id(run)] = run
        grid.values[row][column] = 100 * run.metrics(bench)[metric]
        grid.cells.setdefault(row, {})[column] = CellSource(run, bench, metric)
        grid.settings.setdefault(column, {})[row] = run.settings(bench)
        if metric not in grid.metrics.setdefault(column, []):
            grid.metrics[column].append(metric)
    grid.sources[row] = list(used.values())
    if superseded:
        shown = ", ".join(COLUMN_NAMES.get(c, c) for c in PAPER_COLUMNS if c in superseded)
        files = sorted({r.results_file.name for group in superseded.values() for r in group})
        grid.notes.append(f"Re-runs: {grid.row_name(row)}'s {shown} from the latest of the runs with the same "
                          f"model_args; the earlier ones ({', '.join(files)}) are in results.csv.")
    if used:
        latest_run = max(used.values(), key=lambda r: r.date)
        if latest_run.training is not None:
            grid.training[row] = latest_run.training
        seconds = [r.evaluation_seconds for r in used.values()]
        documents = sum(r.documents for r in used.values())
        if None not in seconds and documents:
            grid.seconds_per_sample[row] = sum(seconds) / documents


def _places(groups: list[list[Run]]) -> list[str]:
    """Names telling apart the variants of one method: the paths they were given as, else their results
    directories, else their results files."""
    for place in (lambda r: r.source or str(r.results_file.parent), lambda r: str(r.results_file.parent),
                  lambda r: str(r.results_file)):
        names = [" + ".join(dict.fromkeys(place(r) for r in group)) for group in groups]
        if len(set(names)) == len(names):
            return names
    return [f"{i + 1}" for i in range(len(groups))]


def _variants_note(method: str, variants: list[Variant]) -> str:
    """Why a method has several rows: what differs between its runs."""
    named = {"lm-eval model": "model_type", "limit": "limit", "chat template": "chat_template"}
    differ = [label for label, key in named.items() if len({getattr(v, key) for v in variants}) > 1]
    args = [dict(v.model_args) for v in variants]
    differ += sorted({k for a in args for k in a if len({b.get(k) for b in args}) > 1})
    return (f"{registry.label(method)}: {len(variants)} runs that differ in {', '.join(differ)} are shown as separate "
            f"rows, named by where they were read from; name them with LABEL=PATH.")


def _backends_note(variants: dict[tuple[str, Variant], list[Run]]) -> str:
    """Which rows which engine computed, when a table mixes them (lm-eval's vllm model on an export beside
    transformers)."""
    rows: dict[str, list[str]] = {}
    for (method, _), group in variants.items():
        for backend in dict.fromkeys(run.backend for run in group):
            rows.setdefault(BACKEND_NAMES.get(backend, backend), []).append(registry.label(method))
    listed = "; ".join(f"{', '.join(dict.fromkeys(labels))} on {backend}" for backend, labels in rows.items())
    return (f"Rows computed by different engines ({listed}): kernels and batching move log-likelihoods a little, so a "
            f"small gap between rows of different engines is not the method's.")


def _header(grid: Grid) -> tuple[str, ...]:
    return tuple(COLUMN_NAMES.get(c, c) for c in grid.columns) + (AVERAGE,)


def _best_per_column(grid: Grid, methods: list[str], texts: list[list[str]]) -> list[list[bool]]:
    """Which cells to bold: the best displayed value per column among competing methods (ties all bold)."""
    bold = [[False] * len(row) for row in texts]
    competing = [i for i, m in enumerate(methods) if grid.method_of(m) != UPPER_BOUND]
    if len(competing) < 2:
        return bold
    for j in range(len(texts[0])):
        shown = {i: float(texts[i][j]) for i in competing if texts[i][j] != MISSING}
        for i, value in shown.items():
            bold[i][j] = value == max(shown.values())
    return bold


def _mark(grid: Grid, row: str, key: str) -> str:
    """BETTER_MARK / WORSE_MARK where the row's paired interval against base lies above / below 0."""
    comparison = grid.comparisons.get(row, {}).get(key)
    if comparison is None:
        return ""
    return BETTER_MARK if comparison.interval[0] > 0 else WORSE_MARK if comparison.interval[1] < 0 else ""


def scores_table(grid: Grid, title: str = "Accuracy (%)", paper_style: bool = False) -> Table:
    """Methods × benchmarks and the average, best competitor in bold.  Unless ``paper_style`` (the paper's Table 1
    layout, bare numbers), first the documents per benchmark (n) and the score of guessing (chance), and each
    score marked where it is significantly above or below base."""
    methods, keys = grid.methods, (*grid.columns, AVERAGE_KEY)
    texts = [[fmt(grid.value(m, c)) for c in grid.columns] + [fmt(grid.average(m))] for m in methods]
    bold = _best_per_column(grid, methods, texts)
    marks = [["" if paper_style else _mark(grid, m, k) for k in keys] for m in methods]
    rows = [(grid.row_name(m), tuple(Cell(t, b, mark) for t, b, mark in zip(row, flags, signs, strict=True)))
            for m, row, flags, signs in zip(methods, texts, bold, marks, strict=True)]
    notes = [_metric_note(grid)] if grid.metrics else []
    if note := _settings_note(grid):
        notes.append(note)
    if not paper_style and grid.cells:
        counts = grid.n
        chance = [grid.chance.get(c) for c in grid.columns]
        chance.append(sum(chance) / len(chance) if chance and None not in chance else None)
        rows[:0] = [("n", tuple(Cell(counts[k]) for k in keys))] + \
            ([("chance", tuple(Cell(fmt(v)) for v in chance))] if grid.chance else [])
        notes.append("n: documents per benchmark (Avg: all of them). Chance: the expected score of guessing, from "
                     "the documents evaluated (1 / the choices of a multiple-choice document; for a generation task "
                     "whose answers repeat, always giving the most common one).")
        if any(any(marks_row) for marks_row in marks):
            notes.append(f"{BETTER_MARK} / {WORSE_MARK}: significantly above / below base ({LEVEL} paired interval "
                         "of the Δ table below).")
    return Table(title=title, columns=_header(grid), rows=tuple(rows), notes=tuple(notes))


def delta_table(grid: Grid, paper_style: bool = False) -> Table | None:
    """Each method minus base, in points, with its paired interval (unless ``paper_style``); None without a base row
    and another one."""
    base = grid.row_of("base")
    if base is None or len(grid.values) < 2:
        return None
    keys, rows = (*grid.columns, AVERAGE_KEY), []
    for m in grid.methods:
        if m == base:
            continue
        values = [_diff(grid.value(m, c), grid.value(base, c)) for c in grid.columns]
        values.append(_diff(grid.average(m), grid.average(base)))
        cells = []
        for key, value in zip(keys, values, strict=True):
            comparison = grid.comparisons.get(m, {}).get(key)
            shown = not paper_style and comparison is not None and value is not None
            cells.append(Cell(fmt(value, sign=True), detail=interval_text(*comparison.interval) if shown else ""))
        rows.append((grid.row_name(m), tuple(cells)))
    if paper_style:
        return Table(title="Δ vs base (points)", columns=_header(grid), rows=tuple(rows))
    paired = {key: sorted({c.n for by_key in grid.comparisons.values() if (c := by_key.get(key))}) for key in keys}
    if any(paired.values()):
        rows.insert(0, ("n (paired)", tuple(Cell(count_range(paired[key])) for key in keys)))
    notes = (f"Interval: {LEVEL} of one two-sided paired test of method − base per benchmark, as roma-eval check "
             "runs it (exact McNemar with its Clopper-Pearson interval on 0/1 scores, else a paired bootstrap); "
             "Avg: a paired bootstrap of the mean over the benchmarks. n (paired): the documents both runs "
             "evaluated.", *grid.interval_notes)
    return Table(title=f"Δ vs base (points), {LEVEL} paired interval", columns=_header(grid), rows=tuple(rows),
                 notes=notes)


def gap_closed_table(grid: Grid) -> Table | None:
    """Share of the oracle gap closed, (method − base)/(oracle − base), where the gap is real (``MIN_GAP_POINTS``
    and significant); None without base, oracle and another row, or without any such benchmark."""
    base, oracle = grid.row_of("base"), grid.row_of(UPPER_BOUND)
    if base is None or oracle is None or len(grid.values) < 3:
        return None
    keys = (*grid.columns, AVERAGE_KEY)
    real = [k for k in keys if _real_gap(_value(grid, base, k), _value(grid, oracle, k),
                                         grid.comparisons.get(oracle, {}).get(k))]
    if not real:
        return None
    rows = []
    for m in grid.methods:
        if m in (base, oracle):
            continue
        shares = [_gap(*(_value(grid, r, k) for r in (m, base, oracle))) if k in real else None for k in keys]
        rows.append((grid.row_name(m), tuple(Cell(fmt(v, digits=0, suffix="%")) for v in shares)))
    return Table(title="Share of the oracle gap closed, (method − base) / (oracle − base)",
                 columns=_header(grid), rows=tuple(rows),
                 notes=(f"Shown where the oracle is at least {MIN_GAP_POINTS:g} points above base and significantly so "
                        f"({LEVEL} paired interval above 0); elsewhere {MISSING}: a share of a gap within noise is "
                        "noise.",))


def _value(grid: Grid, row: str, key: str) -> float | None:
    """A column's score, or the average's for AVERAGE_KEY."""
    return grid.average(row) if key == AVERAGE_KEY else grid.value(row, key)


def _real_gap(base: float | None, oracle: float | None, comparison: Comparison | None) -> bool:
    return (base is not None and oracle is not None and oracle - base >= MIN_GAP_POINTS
            and comparison is not None and comparison.interval[0] > 0)


def _count(value: int | None) -> str:
    return MISSING if value is None else f"{value:,}"


def cost_table(grid: Grid) -> Table | None:
    """Per method: trainable parameters and training time (from the evaluated artefact's own records), and the
    wall-clock seconds per sample lm-eval recorded, relative to base; None when nothing is recorded."""
    if not grid.seconds_per_sample and not grid.training:
        return None
    base = grid.seconds_per_sample.get(grid.row_of("base") or "")
    rows = []
    for m in grid.methods:
        seconds = grid.seconds_per_sample.get(m)
        relative = seconds / base if seconds is not None and base else None
        training = grid.training.get(m, TrainingCost(None))
        rows.append((grid.row_name(m), (Cell(_count(training.trainable_parameters)),
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
    shared = [m for m in ours.methods if ours.method_of(m) in paper.values]
    if not shared:
        return None
    rows = []
    for i, m in enumerate(shared):
        rows.append((f"{ours.row_name(m)} (ours)", tuple(Cell(fmt(v)) for v in
                                                        [ours.value(m, c) for c in paper.columns] + [ours.average(m)])))
        method = ours.method_of(m)
        if i + 1 == len(shared) or ours.method_of(shared[i + 1]) != method:  # the paper's row after the last variant
            values = [paper.value(method, c) for c in paper.columns] + [paper.average(method)]
            rows.append((f"{registry.label(method)} (paper)", tuple(Cell(fmt(v)) for v in values)))
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
                described = ", ".join(f"{grid.row_name(m)} {values[m]}" for m in grid.methods if m in values)
                columns_by_difference.setdefault((name, described), []).append(COLUMN_NAMES.get(column, column))
    if not columns_by_difference:
        return None
    listed = "; ".join(f"{name} in {', '.join(columns)}: {described}"
                       for (name, described), columns in columns_by_difference.items())
    return f"Not evaluated alike ({grid.model}): {listed}."


def _metric_note(grid: Grid) -> str:
    parts = [f"{COLUMN_NAMES.get(c, c)}: {' / '.join(grid.metrics[c])}" for c in grid.columns if c in grid.metrics]
    return "Metrics (lm-eval metric,filter): " + "; ".join(parts) + "."

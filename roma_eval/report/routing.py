"""The routing section's tables: per model, what each row's routers do, from the routing analysis `roma-eval analyze`
writes beside a run (``routing_analysis.json``, read by ``roma_eval.results.routing``).

* manifold alignment — RoMA's hypothesis (arXiv 2511.07419, Sec. 1 and 3) as numbers: the share of a sample's k
  nearest neighbours by task embedding that are also among its k nearest by routing weights, and how much more alike
  the routing of embedding neighbours is than that of random pairs, each with its bootstrap interval, overall and per
  benchmark column;
* movement: how far each layer's routing moved from the base model's (median and 90th percentile over samples);
* routing entropy per sample, and expert load: its entropy, dead and overloaded experts (the heatmap is
  ``plots.load_heatmaps``).

A row is a row of the model's accuracy tables (the registry's label, and the variant's place when a method has
several), in the registry's order; its analysis is that of its latest run that has one.  Numbers are shown as the
file holds them (fractions, three decimals).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from roma_eval import registry
from roma_eval.report.formatting import MISSING, fmt, interval_text
from roma_eval.report.plots import ROUTING_DUMP_GLOB
from roma_eval.report.tables import COLUMN_NAMES, Cell, Grid, Table, ordered_methods
from roma_eval.results import PAPER_COLUMNS, Alignment, LayerRouting, RoutingAnalysis, Run, column_of

DIGITS = 3  # fractions in [0, 1]: three decimals


@dataclass(frozen=True)
class RoutingRow:
    name: str  # the row's name in the model's tables
    method: str
    analysis: RoutingAnalysis | None
    dump: Path | None  # the routing dump the manifold figure draws (report.plots.RoutingDump)


@dataclass(frozen=True)
class ModelRouting:
    model: str  # Run.model
    heading: str  # the model as a reader knows it
    rows: tuple[RoutingRow, ...]

    @property
    def analysed(self) -> list[RoutingRow]:
        return [row for row in self.rows if row.analysis is not None]


def routing_by_model(grids: list[Grid]) -> list[ModelRouting]:
    """Per model of the grids whose rows have a routing analysis or dump, its rows in the registry's order.

    A row's runs are those behind its cells in every suite's table; the latest with an analysis gives its numbers,
    and its dump is the analysis' ``routing_dump``, else the last ``routing_*.npz`` beside its latest run having one.
    """
    found: dict[str, tuple[str, dict[str, tuple[str, list[Run]]]]] = {}
    for grid in grids:
        if not grid.model:
            continue  # the published tables
        _, rows = found.setdefault(grid.model, (grid.heading, {}))
        for row in grid.methods:
            _, runs = rows.setdefault(grid.row_name(row), (grid.method_of(row), []))
            runs.extend(run for run in grid.sources.get(row, []) if run not in runs)
    models = []
    for model, (heading, rows) in sorted(found.items()):
        order = {method: i for i, method in enumerate(ordered_methods(method for method, _ in rows.values()))}
        kept = sorted((_row(name, method, sorted(runs, key=lambda r: r.date)) for name, (method, runs) in rows.items()),
                      key=lambda row: order[row.method])
        if any(row.analysis or row.dump for row in kept):
            models.append(ModelRouting(model, heading, tuple(kept)))
    return models


def _row(name: str, method: str, runs: list[Run]) -> RoutingRow:
    analysis = next((run.routing_analysis for run in reversed(runs) if run.routing_analysis), None)
    dump = analysis.dump_path if analysis and analysis.dump_path and analysis.dump_path.is_file() else None
    if dump is None:  # a dump written without an analysis (the toy demo's)
        dump = next((dumps[-1] for run in reversed(runs)
                     if (dumps := sorted(run.results_file.parent.glob(ROUTING_DUMP_GLOB)))), None)
    return RoutingRow(name, method, analysis, dump)


def routing_tables(model: ModelRouting) -> list[Table]:
    """Alignment (kNN overlap, similarity gap), movement, routing entropy and expert load, for the analysed rows."""
    rows = model.analysed
    if not rows:
        return []
    tables = [_alignment_table(rows, "knn_overlap"), _alignment_table(rows, "similarity_gap"), _tasks_table(rows)]
    first = rows[0].analysis.layers[0]  # the movement table's first column, named in its note
    tables.append(_layer_table(
        rows, "Routing movement from base per layer: median over samples of the distance to base's routing (90th "
              "percentile)",
        lambda layer: layer.movement and Cell(fmt(layer.movement.median, DIGITS),
                                              detail=f"p90 {fmt(layer.movement.p90, DIGITS)}"),
        ("The Euclidean distance between a sample's routing weights in the layer, at its last context token, and "
         f"base's; base is the reference, so it has no row. L{first}: decoder layer {first}.",)))
    tables.append(_layer_table(
        rows, "Routing entropy per layer: mean over samples (10th–90th percentile)",
        lambda layer: Cell(fmt(layer.routing_entropy.mean, DIGITS),
                           detail=interval_text(layer.routing_entropy.p10, layer.routing_entropy.p90, DIGITS, False)),
        ("The entropy of a sample's routing distribution at its last context token over log(experts): 1 is "
         "uniform over all experts, 0 one expert.",)))
    factor = rows[0].analysis.settings.get("overload_factor")
    factor = "the analysis's overload factor" if factor is None else f"{factor:g}"
    tables.append(_layer_table(
        rows, "Expert load per layer: load entropy (dead, overloaded experts)",
        lambda layer: Cell(fmt(layer.load_entropy, DIGITS),
                           detail=f"{len(layer.dead_experts)} dead, {len(layer.overloaded_experts)} overloaded"),
        (f"Load: each expert's share of the top-k selections over all context tokens; its entropy over "
         f"log(experts): 1 is an even load. Dead: never selected; overloaded: a share above "
         f"{factor} times the even one.",)))
    return [table for table in tables if table.rows]


def routing_notes(model: ModelRouting) -> list[str]:
    """What was analysed, how rows were analysed differently, and which rows have no analysis."""
    rows = model.analysed
    notes = []
    if rows:
        first = rows[0].analysis
        notes.append(f"From each run's routing_analysis.json (roma-eval analyze): {first.num_experts} experts, "
                     f"top-{first.top_k}, {first.scoring} scoring; layers {_listed(first.layers)}; "
                     f"{first.n_samples:,} samples of {_listed(first.tasks)}.")
        if differ := _differences(rows):
            notes.append(f"Analysed differently: {differ}; compare these rows with care.")
    missing = {row.name: registry.no_single_routing(row.method) for row in model.rows if row.analysis is None}
    notes += [f"{name}: no single routing to analyse ({why})." for name, why in missing.items() if why]
    if writable := [name for name, why in missing.items() if not why]:
        notes.append(f"No routing analysis for {', '.join(writable)}: write one with `roma-eval analyze RUN` (the "
                     f"run's lm-eval output directory).")
    return notes


def _alignment_table(rows: list[RoutingRow], measure: str) -> Table:
    """One measure of the alignment per row: overall (with its n) and per benchmark column the analyses have."""
    tasks, others = _task_columns(rows)
    signed = measure == "similarity_gap"
    settings = rows[0].analysis.settings
    embedder = settings.get("embedder", "the analysis's embedder")
    k, level = settings.get("k"), "95%"
    if signed:
        title = f"Routing similarity of embedding neighbours minus random pairs (cosine), {level} bootstrap interval"
        notes = [f"Mean cosine similarity of the routing weights of each sample and its k = {k} embedding "
                 f"neighbours, minus that of random pairs: above 0, similar texts are routed alike."]
    else:
        title = f"Manifold alignment: kNN overlap (k = {k}), {level} bootstrap interval"
        notes = [f"Per sample, the share of its k = {k} nearest neighbours by task embedding "
                 f"({embedder}) that are also among its k nearest by "
                 f"routing weights (every analysed layer's, at the last context token), averaged; per benchmark, "
                 f"neighbours within it. If RoMA's diagnosis holds (arXiv 2511.07419: pretrained routers route "
                 f"similar samples dissimilarly), it rises under RoMA and not under Router Tuning."]
    notes.append(f"Intervals: percentile bootstrap over samples ({settings.get('bootstrap', '?')} resamples).")
    if others and not signed:  # said once, under the first of the two tables
        notes.append(f"Per-task figures of {_listed(others)} (no benchmark column) are in routing_analysis.json.")
    entries = {row.name: [row.analysis.overall, *(row.analysis.per_task.get(task) for task in tasks)] for row in rows}
    table_rows = [] if signed else [("chance", (Cell(""), *(_chance(column, k) for column in
                                                            zip(*entries.values(), strict=True))))]
    for name, found in entries.items():
        n = Cell(MISSING if found[0] is None else f"{found[0].n:,}")
        table_rows.append((name, (n, *(_alignment_cell(entry, measure, signed) for entry in found))))
    if not signed:
        notes.append("Chance: the overlap of k neighbours drawn at random, k / (n − 1).")
    return Table(title=title, columns=("n", "Overall", *tasks.values()), rows=tuple(table_rows), notes=tuple(notes))


def _tasks_table(rows: list[RoutingRow]) -> Table:
    """Routing similarity of pairs within a task and across tasks, for the rows that have both."""
    shown = [(row.name, tuple(Cell(fmt(row.analysis.task_similarity[key], DIGITS)) for key in ("within", "across")))
             for row in rows if None not in row.analysis.task_similarity.values()]
    return Table(title="Routing similarity within and across tasks (mean cosine of routing pairs)",
                 columns=("within", "across"), rows=tuple(shown),
                 notes=("Pairs of samples of one task, and of two different tasks: within above across, the routing "
                        "tells the tasks apart.",))


def _alignment_cell(alignment: Alignment | None, measure: str, signed: bool) -> Cell:
    if alignment is None:
        return Cell(MISSING)
    low, high = getattr(alignment, f"{measure}_interval")
    return Cell(fmt(getattr(alignment, measure), DIGITS, signed), detail=interval_text(low, high, DIGITS, signed))


def _chance(entries: tuple[Alignment | None, ...], k: int) -> Cell:
    """The kNN overlap of random neighbours: k of the n − 1 others (fewer when there are fewer), per row's n."""
    shares = sorted({min(k, e.n - 1) / (e.n - 1) for e in entries if e is not None and e.n > 1})
    if not shares:
        return Cell(MISSING)
    return Cell(fmt(shares[0], DIGITS) if len(shares) == 1 else f"{fmt(shares[0], DIGITS)}–{fmt(shares[-1], DIGITS)}")


def _task_columns(rows: list[RoutingRow]) -> tuple[dict[str, str], list[str]]:
    """The analyses' per-task entries that are benchmark columns (task -> column name, in the paper's order; task
    names where two suites share a column), and the other tasks."""
    tasks = sorted({task for row in rows for task in row.analysis.per_task})
    columns = {task: column_of(task) for task in tasks if column_of(task)}
    order = sorted(columns, key=lambda task: (PAPER_COLUMNS.index(columns[task][1]), columns[task][0]))
    names = [COLUMN_NAMES[columns[task][1]] for task in order]
    shown = dict(zip(order, names if len(set(names)) == len(names) else order, strict=True))
    return shown, [task for task in tasks if task not in columns]


def _layer_table(rows: list[RoutingRow], title: str, cell: Callable[[LayerRouting], Cell | None],
                 notes: tuple[str, ...]) -> Table:
    """Rows × analysed layers; a row without any cell (base's movement) is left out."""
    layers = sorted({layer for row in rows for layer in row.analysis.per_layer})
    table_rows = []
    for row in rows:
        per_layer = row.analysis.per_layer
        cells = [cell(per_layer[layer]) if layer in per_layer else None for layer in layers]
        if any(cells):
            table_rows.append((row.name, tuple(c or Cell(MISSING) for c in cells)))
    return Table(title=title, columns=tuple(f"L{layer}" for layer in layers), rows=tuple(table_rows), notes=notes)


def _differences(rows: list[RoutingRow]) -> str:
    """How the rows' analyses differ in what makes their numbers comparable, e.g. "k: Base 10, RoMA 5"."""
    aspects = {"k": lambda a: a.settings.get("k"), "embedder": lambda a: a.settings.get("embedder"),
               "layers": lambda a: _listed(a.layers), "tasks": lambda a: _listed(a.tasks),
               "limit": lambda a: a.limit}
    parts = []
    for aspect, value in aspects.items():
        values = {row.name: value(row.analysis) for row in rows}
        if len(set(map(str, values.values()))) > 1:
            parts.append(f"{aspect}: " + ", ".join(f"{name} {v}" for name, v in values.items()))
    return "; ".join(parts)


def _listed(items) -> str:
    items = [str(item) for item in items]
    return ", ".join(items) if len(items) <= 6 else f"{', '.join(items[:5])} and {len(items) - 5} more"

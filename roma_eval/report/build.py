"""Assemble a report: which tables, views and figures each model and suite gets."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from roma_eval.analysis.dump import read_routing_dump
from roma_eval.report import paper as published
from roma_eval.report.intervals import chance_levels, paired_intervals
from roma_eval.report.plots import (
    FigureSpec,
    bar_chart,
    load_heatmaps,
    manifold_figure,
)
from roma_eval.report.provenance import Provenance, provenance
from roma_eval.report.routing import ModelRouting, routing_by_model, routing_notes, routing_tables
from roma_eval.report.tables import (
    MIN_GAP_POINTS,
    UPPER_BOUND,
    Grid,
    Table,
    cost_table,
    delta_table,
    gap_closed_table,
    grids_from_runs,
    scores_table,
    side_by_side_table,
)
from roma_eval.results import Run, Score, metric_preferences, tidy


@dataclass
class Section:
    title: str
    tables: list[Table] = field(default_factory=list)
    figures: list[FigureSpec] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    provenance: list[Provenance] = field(default_factory=list)  # per row: how its numbers were produced


@dataclass
class Report:
    title: str
    sections: list[Section]
    scores: list[Score]  # the tidy table, written as results.csv
    generator: str = ""  # "roma-eval <version>", the report's writer

    @property
    def figures(self) -> list[FigureSpec]:
        return [f for s in self.sections for f in s.figures]


@dataclass(frozen=True)
class PaperSource:
    """Where the paper's published tables are read from, and which of its models our runs are set beside."""

    model: str | None = None  # one of the paper's models (default: recognised by the runs' model name)
    directory: Path = published.PUBLISHED_DIR  # table1_<model>.csv and c3po_table1.csv


def build_report(runs: list[Run], *, metric_overrides: dict[str, str] | None = None, columns: str = "all",
                 paper: bool = False, paper_source: PaperSource = PaperSource(), plots: bool = True,
                 title: str = "roma-eval report", paper_style: bool = False) -> Report:
    """Sections: one per (model, suite) of the runs, one per model on its routing (where runs have a routing analysis
    or dump), then (``paper``) the published tables.

    Our numbers are put next to the paper's (read as ``paper_source`` says) when a model is one of the paper's (by
    name, or ``paper_source.model``) and was run on the paper's benchmarks.  Every row gets its paired interval
    against base and every column its chance level; ``paper_style`` lays the tables out as the paper's Table 1
    (bare numbers).
    """
    prefs = metric_preferences(metric_overrides, runs)
    table1 = published.table1_grids(paper_source.directory) if runs or paper else {}
    grids = grids_from_runs(runs, prefs, columns)
    for grid in grids:
        paired_intervals(grid, prefs)
        grid.chance = chance_levels(grid)
    sections = [_results_section(grid, table1, paper_source.model, plots, paper_style) for grid in grids]
    sections.extend(section for model in routing_by_model(grids) if (section := _routing_section(model, plots)))
    if paper:
        sections.extend(_published_section(grid) for grid in table1.values())
        sections.extend(_published_section(grid) for grid in published.c3po_grids(paper_source.directory).values())
    return Report(title=title, sections=sections, scores=tidy(runs), generator=_generator())


def _generator() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"roma-eval {version('roma-eval')}"
    except PackageNotFoundError:
        return "roma-eval (version unknown)"


def _results_section(grid: Grid, table1: dict[str, Grid], paper_model: str | None, plots: bool,
                     paper_style: bool) -> Section:
    scores = scores_table(grid, paper_style=paper_style)
    prompts = _prompts_note(grid)
    notes = (*scores.notes, *([prompts] if prompts else []), *grid.notes)
    section = Section(title=grid.title, tables=[replace(scores, notes=notes)])
    if table := delta_table(grid, paper_style):
        section.tables.append(table)
    else:
        section.notes.append("Δ vs base needs one base run and another method; not shown.")
    if table := gap_closed_table(grid):
        section.tables.append(table)
    elif grid.row_of("base") and grid.row_of(UPPER_BOUND) and len(grid.values) > 2:
        section.notes.append(f"Share of the oracle gap closed: no benchmark where the oracle is at least "
                             f"{MIN_GAP_POINTS:g} points and significantly above base; not shown.")
    else:
        section.notes.append("The oracle-gap view needs one base run, one oracle run and another method; not shown.")
    if table := cost_table(grid):
        section.tables.append(table)
    model = paper_model or published.paper_model_for(grid.model)
    reference = table1.get(model or "")
    if grid.suite == "paper" and reference and (table := side_by_side_table(grid, reference)):
        silent = f"{prompts} The paper does not say whether it applied a chat template." if prompts else None
        notes = (published.variant_note(grid.checkpoints, model), silent)
        section.tables.append(replace(table, notes=(*table.notes, *(n for n in notes if n))))
    if plots:
        section.figures.append(bar_chart(grid, f"{slug(grid.model)}_{grid.suite}_bars"))
    section.provenance = [provenance(grid.row_name(row), grid.sources[row]) for row in grid.methods
                          if grid.sources.get(row)]
    return section


def _prompts_note(grid: Grid) -> str | None:
    """Which prompts the runs gave the model, plain or through its chat template (lm-eval's results record it);
    None when no results file says."""
    used = {settings["chat template"] for by_method in grid.settings.values() for settings in by_method.values()
            if settings.get("chat template") is not None}
    if not used:
        return None
    described = {"none": "lm-eval's plain prompts (no chat template)"}
    ours = "; ".join(described.get(u, f"the model's chat template ({u}: lm-eval --apply_chat_template)")
                     for u in sorted(used))
    return f"Prompts: {ours}."


def _routing_section(model: ModelRouting, plots: bool) -> Section | None:
    """The rows' routing analyses (tables, the expert-load heatmaps) and their routing dumps (the manifold figure);
    a model with dumps only (the toy demo's) gets the manifold figure alone."""
    section = Section(title=f"{model.heading} — routing" + ("" if model.analysed else " manifold"),
                      tables=routing_tables(model), notes=routing_notes(model))
    if plots and model.analysed:
        section.figures.append(load_heatmaps(model.heading, {row.name: row.analysis for row in model.analysed},
                                             f"{slug(model.model)}_load"))
    if plots and (dumped := [row for row in model.rows if row.dump]):
        dumps = {row.name: read_routing_dump(row.dump) for row in dumped}
        section.figures.append(manifold_figure(model.heading, dumps, f"{slug(model.model)}_manifold"))
    return section if section.tables or section.figures else None


def _published_section(grid: Grid) -> Section:
    return Section(title=f"{grid.title} (published)",
                   tables=[scores_table(grid, title="Accuracy (%), as published")],
                   notes=[published.average_check_note(grid)])


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "model"

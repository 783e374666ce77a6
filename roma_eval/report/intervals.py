"""What a report's numbers mean: each row's paired interval against base, and the score of guessing per benchmark.

The intervals are ``roma-eval check``'s (``check.compare``): per benchmark one two-sided paired test of row − base
on the documents both evaluated (exact McNemar with its Clopper-Pearson interval on 0/1 scores, a paired bootstrap
otherwise), and a paired bootstrap of the mean over the benchmarks.  The report computes nothing of its own, so
a table and a gate never disagree.  Chance is read from the same per-sample files: lm-eval logs one request per
choice of a multiple-choice document, and each document's gold answer.
"""

from __future__ import annotations

from collections import Counter

from roma_eval.errors import RomaEvalError
from roma_eval.report.tables import AVERAGE_KEY, COLUMN_NAMES, CellSource, Grid
from roma_eval.results import Run


def paired_intervals(grid: Grid, prefs: dict[str, tuple[str, ...]]) -> None:
    """Fill ``grid.comparisons`` (row -> column -> check's Comparison against the base row; AVERAGE_KEY when the
    row and base share every column) and say in ``grid.interval_notes`` where an interval could not be had."""
    from roma_eval.report.check import compare

    base = grid.row_of("base")
    if base is None:
        if sum(grid.method_of(r) == "base" for r in grid.values) > 1:
            grid.interval_notes.append("No intervals: several base rows; label the one to compare against base "
                                       "(base=PATH) and the others otherwise.")
        return
    for row in grid.methods:
        shared = [c for c in grid.columns if c in grid.cells.get(row, {}) and c in grid.cells.get(base, {})]
        if row == base or not shared:
            continue
        usable = [c for c in shared if _has_samples(grid.cells[row][c]) and _has_samples(grid.cells[base][c])]
        if missing := [c for c in shared if c not in usable]:
            grid.interval_notes.append(f"No interval for {grid.row_name(row)} in {_names(missing)}: no per-sample "
                                       "results (lm_eval --log_samples) on one side.")
        if not usable:
            continue
        task = {grid.cells[base][c].bench.task: c for c in usable}

        def check(columns: list[str], row=row):
            return compare(_runs(grid, base, columns), _runs(grid, row, columns), prefs=prefs, max_drop=100.0,
                           benchmarks=[grid.cells[base][c].bench.task for c in columns], allow_prompt_change=True,
                           allow_backend_change=True)

        try:
            found = check(usable)
            results = {task[c.benchmark]: c for c in found.comparisons}
            if found.average is not None and set(usable) == set(grid.columns):
                results[AVERAGE_KEY] = found.average
        except RomaEvalError:  # one benchmark cannot be paired (another dataset): the others still can
            results = {}
            for column in usable:
                try:
                    results[column] = check([column]).comparisons[0]
                except RomaEvalError as exc:
                    grid.interval_notes.append(f"No interval for {grid.row_name(row)} in {_names([column])}: {exc}.")
        grid.comparisons[row] = results
        grid.interval_notes.extend(f"{grid.row_name(row)}, {_names([column])}: {c.note}."
                                   for column, c in results.items() if c.note and column != AVERAGE_KEY)


def chance_levels(grid: Grid) -> dict[str, float]:
    """Column -> the expected score (percent) of guessing on the documents evaluated, from the first row (in the
    table's order) whose samples say: the mean of 1 / choices for a multiple-choice task, the share of its most
    common gold answer for a generation task whose answers repeat; other columns have none."""
    levels = {}
    for column in grid.columns:
        for row in grid.methods:
            cell = grid.cells.get(row, {}).get(column)
            if cell is not None and (level := _chance(cell)) is not None:
                levels[column] = level
                break
    return levels


def _chance(cell: CellSource) -> float | None:
    kinds = {cell.run.output_type(leaf) for leaf in cell.bench.leaves}
    if kinds not in ({"multiple_choice"}, {"generate_until"}) or not _has_samples(cell):
        return None
    try:
        samples = list(cell.run.samples(cell.bench, cell.metric).values())
    except RomaEvalError:
        return None
    if not samples:
        return None
    if kinds == {"multiple_choice"}:
        if any(not s.requests for s in samples):
            return None
        return 100 * sum(1 / s.requests for s in samples) / len(samples)
    if any(s.target is None for s in samples):
        return None
    most = Counter(s.target for s in samples).most_common(1)[0][1]
    # Answers that never repeat (GSM8K's worked solutions) leave nothing to guess: 1 / n is not a chance level.
    return 100 * most / len(samples) if most > 1 else None


def _has_samples(cell: CellSource) -> bool:
    try:
        for leaf in cell.bench.leaves:
            cell.run.samples_file(leaf)
    except RomaEvalError:
        return False
    return True


def _runs(grid: Grid, row: str, columns: list[str]) -> list[Run]:
    return list({id(grid.cells[row][c].run): grid.cells[row][c].run for c in columns}.values())


def _names(columns: list[str]) -> str:
    return ", ".join(COLUMN_NAMES.get(c, c) for c in columns)

"""The table views on hand-made grids, against hand-computed numbers."""

from __future__ import annotations

import pytest

from roma_eval.report.check import Comparison
from roma_eval.report.formatting import MISSING, fmt
from roma_eval.report.tables import (
    MIN_GAP_POINTS,
    Grid,
    cost_table,
    delta_table,
    gap_closed_table,
    grids_from_runs,
    ordered_methods,
    scores_table,
)
from roma_eval.results import load_runs, metric_preferences


def grid(**rows) -> Grid:
    return Grid(title="t", columns=("mmlu", "boolq"), values=rows)


@pytest.mark.parametrize("value, digits, text", [
    (67.575, 1, "67.6"), (74.025, 1, "74.0"), (-0.04, 1, "0.0"), (None, 1, MISSING),
    (0.25, 1, "0.3"), (67.25, 1, "67.3"),  # exact binary ties: Python's round() gives 0.2 and 67.2
    (2.675, 2, "2.68"),  # stored as 2.67499999...: round(2.675, 2) == 2.67
])
def test_fmt_rounds_half_up(value, digits, text):
    assert fmt(value, digits=digits) == text


def test_fmt_sign_and_suffix():
    assert fmt(1.25, sign=True) == "+1.3" and fmt(-1.25, sign=True) == "-1.3" and fmt(0.0, sign=True) == "+0.0"
    assert fmt(55.5, digits=0, suffix="%") == "56%"


def test_average_only_when_every_column_is_there():
    g = grid(base={"mmlu": 50.0, "boolq": 70.0}, roma={"mmlu": 60.0})
    assert g.average("base") == 60.0 and g.average("roma") is None
    table = scores_table(g)
    assert [c.text for c in dict(table.rows)["RoMA"]] == ["60.0", MISSING, MISSING]


def test_best_competitor_bold_and_oracle_never():
    g = grid(base={"mmlu": 50.0, "boolq": 70.0}, roma={"mmlu": 60.0, "boolq": 70.0},
             oracle={"mmlu": 90.0, "boolq": 95.0})
    rows = dict(scores_table(g).rows)
    assert [c.bold for c in rows["RoMA"]] == [True, True, True]
    assert [c.bold for c in rows["Base"]] == [False, True, False]  # a tie is bold for both
    assert not any(c.bold for c in rows["Oracle"])


def paired(low: float, high: float, n: int = 100) -> Comparison:
    """A paired comparison with the given interval of method − base (points); the rest does not matter here."""
    return Comparison("task", "acc,none", n, 0.0, 0.0, "McNemar", 0.01, (low, high), False)


def test_delta_and_gap_closed_by_hand():
    g = grid(base={"mmlu": 50.0, "boolq": 70.0}, roma={"mmlu": 60.0, "boolq": 71.0},
             oracle={"mmlu": 90.0, "boolq": 70.0})
    g.comparisons = {"oracle": {"mmlu": paired(30.0, 40.0), "boolq": paired(-1.0, 1.0), "average": paired(10.0, 20.0)}}
    delta = dict(delta_table(g).rows)
    assert [c.text for c in delta["RoMA"]] == ["+10.0", "+1.0", "+5.5"]
    gap = dict(gap_closed_table(g).rows)
    # mmlu: 10/40 = 25 %; boolq: oracle = base, no gap to close; average: (65.5-60)/(80-60) = 27.5 %
    assert [c.text for c in gap["RoMA"]] == ["25%", MISSING, "28%"]
    assert "Oracle" not in gap and "Base" not in gap


@pytest.mark.parametrize("oracle_boolq, interval, shown", [
    (70.3, (0.1, 0.5), False),   # 0.3 points: significant, but a share of it is noise (1.4 / 0.3 = 467%)
    (80.0, (-0.5, 20.0), False),  # 10 points, not significant
    (80.0, (2.0, 18.0), True),    # 10 points and significant: 1.4 / 10 = 14%
    (75.0, (1.0, 9.0), True),     # exactly MIN_GAP_POINTS
])
def test_the_gap_closed_is_shown_only_where_the_gap_is_real(oracle_boolq, interval, shown):
    g = grid(base={"mmlu": 50.0, "boolq": 70.0}, roma={"mmlu": 60.0, "boolq": 71.4},
             oracle={"mmlu": 90.0, "boolq": oracle_boolq})
    g.comparisons = {"oracle": {"mmlu": paired(30.0, 40.0), "boolq": paired(*interval)}}
    boolq = dict(gap_closed_table(g).rows)["RoMA"][1].text
    assert boolq == (fmt(100 * 1.4 / (oracle_boolq - 70.0), digits=0, suffix="%") if shown else MISSING)
    assert MIN_GAP_POINTS == 5.0


def test_no_gap_view_without_a_significant_oracle():
    g = grid(base={"mmlu": 50.0}, roma={"mmlu": 60.0}, oracle={"mmlu": 90.0})
    assert gap_closed_table(g) is None  # no per-sample results: nothing says the gap is more than noise
    g.comparisons = {"oracle": {"mmlu": paired(-2.0, 60.0)}}
    assert gap_closed_table(g) is None


def test_views_that_need_missing_rows_are_absent():
    assert delta_table(grid(roma={"mmlu": 1.0})) is None
    assert delta_table(grid(base={"mmlu": 1.0})) is None
    assert gap_closed_table(grid(base={"mmlu": 1.0}, roma={"mmlu": 2.0})) is None


def test_cost_relative_to_base():
    g = grid(base={}, c3po={})
    g.seconds_per_sample = {"base": 0.5, "c3po": 3.25}
    assert [c.text for c in dict(cost_table(g).rows)["C3PO"]] == ["—", "—", "3.250", "6.50×"]
    assert cost_table(grid(base={})) is None


def test_method_order():
    assert ordered_methods(["mine", "roma", "oracle", "icl", "base", "c3po"]) == ["base", "oracle", "icl", "c3po",
                                                                                 "roma", "mine"]


def test_method_order_is_the_papers_table_1():
    from roma_eval import registry
    from roma_eval.report.paper import table1_grids

    for grid in table1_grids().values():
        assert tuple(grid.values) == registry.NAMES  # the published CSVs' row order
        assert all(registry.label(m) != m for m in grid.values)  # every row has its display name


def test_grids_from_the_fixture_runs(runs):
    found = grids_from_runs(load_runs([str(runs / d) for d in ("base", "roma", "oracle")]), metric_preferences())
    (toy,) = found
    assert (toy.model, toy.suite, toy.methods) == ("tiny-olmoe", "toy", ["base", "oracle", "roma"])
    assert toy.value("base", "arc_easy") == pytest.approx(100 * 7 / 24)  # acc_norm by default
    assert toy.value("base", "hellaswag") is None and toy.average("base") is None
    assert toy.metrics["gsm8k"] == ["exact_match,flexible-extract", "exact_match,none"]


def test_metric_override_and_present_columns(runs):
    (toy,) = grids_from_runs(load_runs([str(runs / "base")]), metric_preferences({"arc_easy": "acc"}),
                             columns="present")
    assert toy.columns == ("mmlu", "arc_easy", "boolq", "gsm8k")
    assert toy.value("base", "arc_easy") == pytest.approx(37.5)
    assert toy.average("base") == pytest.approx((40.0 + 37.5 + 50.0 + 0.0) / 4)

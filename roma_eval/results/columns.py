"""The paper's columns: which lm-eval tasks fill Table 1's eight benchmark columns, and which metric each cell
takes (the defaults and ``--metric`` overrides).  Only the standard library."""

from __future__ import annotations

from typing import TYPE_CHECKING

from roma_eval.errors import RomaEvalError

if TYPE_CHECKING:
    from roma_eval.results.runs import Run


# The paper's Table 1 columns, in the paper's order (arXiv 2511.07419, Table 1).
PAPER_COLUMNS = ("mmlu", "hellaswag", "arc_challenge", "arc_easy", "piqa", "winogrande", "boolq", "gsm8k")
TOY_PREFIX = "toy_"  # the toy suite names its tasks toy_<column>


# lm-eval metric keys ("metric,filter") that fill each column, in order of preference: a cell takes
# the first one its run reports.  The paper does not say which it used; lm-eval's common practice is
# acc_norm where length normalisation matters (HellaSwag, ARC, PIQA).  GSM8K is evaluated zero-shot
# in the paper, where a base model rarely writes lm-eval's "#### N" answer format, so the
# flexible-extract filter is the default.  `--metric COLUMN=METRIC[,FILTER]` overrides any of these.
DEFAULT_METRICS: dict[str, tuple[str, ...]] = {
    "mmlu": ("acc,none",),
    "hellaswag": ("acc_norm,none", "acc,none"),
    "arc_challenge": ("acc_norm,none", "acc,none"),
    "arc_easy": ("acc_norm,none", "acc,none"),
    "piqa": ("acc_norm,none", "acc,none"),
    "winogrande": ("acc,none",),
    "boolq": ("acc,none",),
    # first-number: the toy GSM8K's filter (tasks/toy/toy_gsm8k.yaml).
    "gsm8k": ("exact_match,flexible-extract", "exact_match,strict-match", "exact_match,first-number",
              "exact_match,none"),
}


def column_of(task: str) -> tuple[str, str] | None:
    """(suite, column) for an lm-eval task name that is one of the paper's benchmarks, else None."""
    if task in PAPER_COLUMNS:
        return "paper", task
    if task.startswith(TOY_PREFIX) and task[len(TOY_PREFIX):] in PAPER_COLUMNS:
        return "toy", task[len(TOY_PREFIX):]
    return None


def metric_preferences(overrides: dict[str, str] | None = None,
                       runs: list[Run] | None = None) -> dict[str, tuple[str, ...]]:
    """DEFAULT_METRICS with user overrides ("arc_easy" -> "acc" or "gsm8k" -> "exact_match,strict-match").

    With ``runs``, each override is checked against them first: a typo would otherwise be ignored (an
    unknown column) or blank the column (a metric no run has).
    """
    prefs = dict(DEFAULT_METRICS)
    reported = _reported_metrics(runs) if runs is not None and overrides else None
    for column, metric in (overrides or {}).items():
        key = metric if "," in metric else f"{metric},none"
        if reported is not None:
            _check_override(column, metric, key, reported)
        prefs[column] = (key,)
    return prefs


def _reported_metrics(runs: list[Run]) -> dict[str, set[str]]:
    """Column and lm-eval task name -> the metric keys ("metric,filter") its runs report."""
    reported: dict[str, set[str]] = {}
    for run in runs:
        for bench in run.benchmarks:
            for name in (bench.name, bench.task):
                reported.setdefault(name, set()).update(run.metrics(bench))
    return reported


def _check_override(column: str, metric: str, key: str, reported: dict[str, set[str]]) -> None:
    """Refuse ``--metric column=metric`` unless the column is the paper's or a benchmark of the runs, and some
    run reports ``key`` for it.  Some, not all: the oracle reports fewer metrics than lm-eval's filters give.
    A paper column no run has is left alone: there is nothing it could change or be checked against."""
    if column not in reported and column not in PAPER_COLUMNS:
        valid = list(PAPER_COLUMNS) + sorted(reported.keys() - set(PAPER_COLUMNS))
        raise RomaEvalError(f"--metric {column}={metric}: no column or task named {column!r}; choose among "
                            f"{', '.join(valid)}")
    if column in reported and key not in reported[column]:
        raise RomaEvalError(f"--metric {column}={metric}: no run reports {key!r} for {column}; choose among "
                            f"{', '.join(map(repr, sorted(reported[column])))}")


def wanted_metrics(prefs: dict[str, tuple[str, ...]], column: str, task: str | None = None) -> tuple[str, ...] | None:
    """The metrics preferred for a benchmark: those given for its lm-eval task (``--metric toy_arc_easy=acc``
    changes the toy table only), else those of its column; None for a benchmark without preferences."""
    return prefs.get(task) if task in prefs else prefs.get(column)


def choose_metric(available, column: str, prefs: dict[str, tuple[str, ...]], task: str | None = None) -> str | None:
    """The preferred metric among ``available`` for a column (or its task); for other benchmarks, the first reported."""
    available = list(available)
    if (wanted := wanted_metrics(prefs, column, task)) is not None:
        return next((m for m in wanted if m in available), None)
    return available[0] if available else None


def parse_metric_overrides(items: list[str] | None) -> dict[str, str]:
    """`--metric COLUMN=METRIC[,FILTER]` flags -> {column: metric}."""
    out = {}
    for item in items or []:
        column, sep, metric = item.partition("=")
        if not sep or not column or not metric:
            raise RomaEvalError(f"--metric {item!r} is not COLUMN=METRIC[,FILTER], e.g. arc_easy=acc "
                                f"or gsm8k=exact_match,strict-match")
        out[column] = metric
    return out

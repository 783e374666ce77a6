"""The gap table: the oracle against base per task or group and metric, as `roma-eval oracle` and `roma-eval
reproduce` print it after lm-eval's own results table."""

from __future__ import annotations

import math


def _leaves(name: str, group_subtasks: dict) -> list[str]:
    children = group_subtasks.get(name)
    return [leaf for child in children for leaf in _leaves(child, group_subtasks)] if children else [name]


def _scores(metrics: dict) -> dict[str, float]:
    """"metric,filter" -> value of a task's or group's lm-eval results entry, standard errors and NaN left out."""
    return {key: value for key, value in metrics.items()
            if "," in key and "_stderr," not in key and isinstance(value, (int, float)) and not math.isnan(value)}


def _gap_rows(name: str, results: dict) -> list[str]:
    """The tasks and groups the gap table shows for ``name``: itself when lm-eval scored it (a task, or a group
    with an aggregate such as MMLU's total), else its members', in the group's order (a group without an aggregate,
    such as roma_paper, whose members are the benchmarks)."""
    if _scores(results["results"].get(name, {})):
        return [name]
    return [row for child in results.get("group_subtasks", {}).get(name, []) for row in _gap_rows(child, results)]


def gap_table(results: dict) -> list[str]:
    """The oracle against base, as lm-eval's ``make_table`` lays out results (a Markdown table): per task or group
    and metric, base -> oracle in %, the gap in points, and the convergence of its documents.  Top-level tasks
    and groups that lm-eval scored are rows; a group it did not score stands for its members (``_gap_rows``)."""
    from pytablewriter import MarkdownTableWriter
    from typepy import String

    oracle, subtasks = results["oracle"], results.get("group_subtasks", {})
    nested = {child for children in subtasks.values() for child in children}
    top = [name for name in results["results"] if name not in nested]
    rows = []
    for task in [row for name in top for row in _gap_rows(name, results)]:
        stats = [oracle["convergence"][leaf] for leaf in _leaves(task, subtasks) if leaf in oracle["convergence"]]
        samples = sum(s["samples"] for s in stats)
        converged = sum(s["converged"] for s in stats)
        mean_steps = sum(s["mean_steps"] * s["samples"] for s in stats) / samples if samples else float("nan")
        name, convergence = task, [f"{converged}/{samples}", f"{mean_steps:.1f}"]
        for key, value in sorted(_scores(results["results"][task]).items()):
            base = oracle["base"].get(task, {}).get(key)
            if not isinstance(base, (int, float)):
                continue
            metric, _, filter_name = key.partition(",")
            rows.append([name, filter_name, metric, f"{100 * base:.2f}", f"{100 * value:.2f}",
                         f"{100 * (value - base):+.2f}", *convergence])
            name, convergence = "", ["", ""]  # once per task, as make_table names a task once
    if not rows:
        return ["(no metric that both the oracle and base have)"]
    headers = ["Tasks", "Filter", "Metric", "Base %", "Oracle %", "Gap (points)", "Converged", "Mean steps"]
    # The cells as written (pytablewriter would otherwise re-read "+1.50" as a number and drop its sign).
    writer = MarkdownTableWriter(headers=headers, value_matrix=rows, type_hints=[String] * len(headers))
    return writer.dumps().rstrip("\n").splitlines()

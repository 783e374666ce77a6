"""The table `roma-eval demo` prints: one row per benchmark, a column per method, chance for scale."""

from __future__ import annotations

from collections import Counter

from roma_eval import registry
from roma_eval.demo.context import DemoContext, headline_metric
from roma_eval.toy.suite import EVAL_TASKS, task_splits


def chance_levels(limit: int | None) -> dict[str, float]:
    """Expected score of guessing: 1/choices for multiple choice; for GSM8K, always answering the
    most common answer."""
    chance = {}
    for task in EVAL_TASKS:
        docs = task_splits(task)["test"][:limit]
        if task == "toy_gsm8k":
            chance[task] = Counter(d["answer"] for d in docs).most_common(1)[0][1] / len(docs)
        else:
            chance[task] = sum(1 / len(d["choices"]) for d in docs) / len(docs)
    return chance


# Table 1's layout: a row per method, in the order the demo runs them (registry.RUN_ORDER), a column per benchmark.
ROWS = {name: registry.label(name) for name in registry.RUN_ORDER}
COLUMNS = {"toy_mmlu": "MMLU", "toy_hellaswag": "HellaSwag", "toy_arc_challenge": "ARC-C", "toy_arc_easy": "ARC-E",
           "toy_piqa": "PIQA", "toy_winogrande": "WinoG", "toy_boolq": "BoolQ", "toy_gsm8k": "GSM8K"}


def format_table(ctx: DemoContext) -> str:
    """Chance, then one row per method that ran; % per benchmark and the 8-benchmark average."""
    chance = chance_levels(ctx.limit)
    methods = [m for m in ROWS if m in ctx.columns] + [m for m in ctx.columns if m not in ROWS]

    def percent(values: dict, task: str) -> str:
        return f"{100 * values[task]:.1f}" if task in values else "—"

    def average(values: dict) -> str:
        # Over all eight benchmarks or not at all, as the paper's Avg. column.
        return f"{100 * sum(values.values()) / len(values):.1f}" if len(values) == len(EVAL_TASKS) else "—"

    # The metric each column is judged by, among those the runs report (toy ARC and PIQA report acc only).
    reported = {task: {key for m in methods for key in ctx.results.get(m, {}).get("results", {}).get(task, {})}
                for task in EVAL_TASKS}
    metric = {task: headline_metric(task, reported[task]) or "" for task in EVAL_TASKS}
    rows = [["method", *COLUMNS.values(), "Avg"], [],
            ["(metric)", *(metric[t].split(",")[0] for t in EVAL_TASKS), ""],
            ["chance", *(percent(chance, t) for t in EVAL_TASKS), average(chance)]]
    rows += [[ROWS.get(m, m), *(percent(ctx.columns[m], t) for t in EVAL_TASKS), average(ctx.columns[m])]
             for m in methods]
    widths = [max(len(row[i]) for row in rows if row) for i in range(len(rows[0]))]
    rows[1] = ["-" * w for w in widths]
    # Names left-aligned, numbers right-aligned.
    return "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths))) for row in rows)

"""The table `roma-eval demo` prints: one row per benchmark, a column per method, chance for scale."""

from __future__ import annotations

from collections import Counter

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


def format_table(ctx: DemoContext) -> str:
    methods = list(ctx.columns)
    chance = chance_levels(ctx.limit)

    def percent(values: dict, task: str) -> str:
        return f"{100 * values[task]:.1f}" if task in values else "—"

    def average(values: dict) -> str:
        # Over all eight benchmarks or not at all, as the paper's Avg. column.
        return f"{100 * sum(values.values()) / len(values):.1f}" if len(values) == len(EVAL_TASKS) else "—"

    metric = {task: headline_metric(task, ("acc_norm,none", "acc,none", "exact_match,first-number"))
              for task in EVAL_TASKS}
    rows = [["benchmark", "metric", "chance", *methods], []]
    for task in EVAL_TASKS:
        rows.append([task, metric[task].split(",")[0], percent(chance, task),
                     *(percent(ctx.columns[m], task) for m in methods)])
    rows.append([f"average ({len(EVAL_TASKS)})", "", average(chance), *(average(ctx.columns[m]) for m in methods)])
    widths = [max(len(row[i]) for row in rows if row) for i in range(len(rows[0]))]
    rows[1] = ["-" * w for w in widths]
    # Names left-aligned, numbers right-aligned.
    return "\n".join("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row,
                                                                                                           widths)))
                     for row in rows)

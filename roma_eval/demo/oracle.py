"""The oracle row of `roma-eval demo`: the pipeline's oracle stage on the toy suite, and its gap over base
(the paper's headline diagnosis)."""

from __future__ import annotations

from roma_eval.demo.context import DemoContext, headline
from roma_eval.pipeline import stages


def oracle_stage(ctx: DemoContext) -> list[str]:
    commands = stages.oracle_stage(ctx)
    results = ctx.results["oracle"]
    ctx.columns["oracle"] = oracle = headline(results)
    base = headline({"results": results["oracle"]["base"]})
    gap = sum(oracle[t] - base[t] for t in oracle) / len(oracle)
    convergence = results["oracle"]["convergence"].values()
    converged, samples = sum(c["converged"] for c in convergence), sum(c["samples"] for c in convergence)
    steps = sum(c["mean_steps"] * c["samples"] for c in convergence) / samples
    ctx.notes.append(f"oracle - base: {100 * gap:+.1f} points on average over {len(oracle)} benchmarks "
                     f"(per-sample routing descent with the gold label at every position the scores depend on, "
                     f"docs/oracle.md); converged "
                     f"{converged}/{samples} samples, mean {steps:.1f} steps")
    return commands

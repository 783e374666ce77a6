"""The oracle row of `roma-eval demo` (a stage of ``roma_eval.demo``): the toy model's per-sample optimal
routing on the eight toy benchmarks, and its gap over base (the paper's headline diagnosis)."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def oracle_stage(ctx) -> None:
    """Run (or resume, or reuse) the oracle on ``toy_suite``; lm-eval writes it under ``ctx.output/oracle/``."""
    import logging

    from roma_eval.demo.context import headline
    from roma_eval.methods.oracle.config import OracleConfig
    from roma_eval.methods.oracle.run import gap_table, run_oracle
    from roma_eval.methods.oracle.tasks import load_oracle_tasks
    from roma_eval.toy.suite import EVAL_GROUP

    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    model, tokenizer = ctx.load_model()
    tasks = load_oracle_tasks([EVAL_GROUP], limit=ctx.limit)
    run = run_oracle(model, tokenizer, tasks, ctx.stage_dir("oracle"), OracleConfig(seed=ctx.seed),
                     model_name=str(ctx.model_dir), overwrite=ctx.overwrite, progress=ctx.progress)
    if run.resumed_complete:
        logger.info(f"oracle: reusing the oracle results in {run.results_file.parent} (--overwrite recomputes them)")
    ctx.columns["oracle"] = headline(run.results)
    logger.info("\n".join(gap_table(run.results)))
    base = headline({"results": run.results["oracle"]["base"]})
    oracle = ctx.columns["oracle"]
    gap = sum(oracle[t] - base[t] for t in oracle) / len(oracle)
    convergence = run.results["oracle"]["convergence"].values()
    converged, samples = sum(c["converged"] for c in convergence), sum(c["samples"] for c in convergence)
    steps = sum(c["mean_steps"] * c["samples"] for c in convergence) / samples
    ctx.notes.append(f"oracle - base: {100 * gap:+.1f} points on average over {len(oracle)} benchmarks "
                     f"(per-sample routing descent with the gold label, docs/oracle.md); converged "
                     f"{converged}/{samples} samples, mean {steps:.1f} steps")

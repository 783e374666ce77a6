"""What every demo stage shares: the experiment (``roma_eval.pipeline``) on the toy world, the headline numbers.

A stage whose outputs exist is not recomputed unless ``ctx.overwrite``: a second run is quick, and an
interrupted run resumes at the stage it was in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from roma_eval.errors import RomaEvalError
from roma_eval.methods.oracle.config import OracleConfig
from roma_eval.methods.roma.config import RomaConfig
from roma_eval.pipeline import Experiment
from roma_eval.toy.config import ToyConfig
from roma_eval.toy.config import preset as toy_preset
from roma_eval.toy.suite import EVAL_GROUP, EVAL_TASKS, TRAIN_GROUP

# demo preset -> (toy model preset, docs per benchmark, training docs per mixture family; None = all)
DEMO_PRESETS = {"default": ("default", None, None), "fast": ("fast", 16, 16)}
# The demo's schedule (ours, set here so that the demo's numbers stay those its learning rates were chosen with):
# LR and λ rise linearly over the first 10% of the steps, then the LR decays linearly to 0.  The defaults are the
# released trainer's (a 2,000-step warm-up, at most half the run, then a constant LR; training/schedule.py).
DEMO_SCHEDULE = dict(lr_schedule="linear", warmup_ratio=0.1, lam_warmup_ratio=0.1)
# RoMA's defaults (docs/paper.md) except the learning rate: the released trainer's 7e-5 is set for 1-30B models;
# the toy routers' rates were chosen among 1e-3, 3e-3 and 1e-2 on the training mixture's held-out split only
# (docs/toy.md), never on the benchmarks: 1e-2 for both.
DEMO_ROMA = {"default": dict(lr=1e-2, epochs=3, batch_size=32, **DEMO_SCHEDULE),
             "fast": dict(lr=3e-3, epochs=1, batch_size=32, **DEMO_SCHEDULE)}
# Router Tuning (the paper's baseline): the same training with the task loss only (regulariser none).
DEMO_ROUTER_TUNING = {"default": dict(lr=1e-2, epochs=3, batch_size=32, **DEMO_SCHEDULE),
                      "fast": dict(lr=3e-3, epochs=1, batch_size=32, **DEMO_SCHEDULE)}
# The paper's best C3PO setting (NGD, k = 3, 10 steps, cosine lr 1e-2 -> 1e-5, with Adam as the same group's
# released NGD in R2-T2), as model_args; 32 test prompts optimised together (default 8, sized for real models'
# memory): 22% faster on the toy suite, the same pathways but for float rounding (each prompt has its own variables).
DEMO_C3PO = "c3po_method=ngd,c3po_k=3,c3po_steps=10,c3po_optimizer=adam,c3po_lr=0.01,c3po_lr_min=1e-05,c3po_group=32"

logger = logging.getLogger(__name__)


@dataclass
class DemoContext(Experiment):
    """The experiment of ``roma_eval.pipeline`` on the toy world, plus what the demo prints."""

    preset: str = "default"
    toy: ToyConfig | None = None
    columns: dict[str, dict[str, float]] = field(default_factory=dict)  # method -> task -> headline value
    notes: list[str] = field(default_factory=list)                      # printed under the table

    @classmethod
    def from_preset(cls, preset: str = "default", seed: int = 0, output: str | Path | None = None,
                    batch_size: int = 32, **kwargs):
        """``batch_size``: lm-eval's; plain `lm_eval` with the same one reproduces every number."""
        if preset not in DEMO_PRESETS:
            raise RomaEvalError(f"unknown demo preset {preset!r}; choose one of {', '.join(DEMO_PRESETS)}")
        toy_name, limit, train_limit = DEMO_PRESETS[preset]
        toy = toy_preset(toy_name, seed)
        default_output = Path("reports") / ("demo" if preset == "default" else f"demo-{preset}")
        # The pretrained model's path is known once the toy model stage has built or found it.
        return cls(pretrained="", output=Path(output) if output is not None else default_output,
                   eval_tasks=(EVAL_GROUP,), train_tasks=(TRAIN_GROUP,), limit=limit, train_limit=train_limit,
                   batch_size=batch_size, seed=seed, roma=RomaConfig(seed=seed, **DEMO_ROMA[preset]),
                   router_tuning=RomaConfig(regulariser="none", seed=seed, **DEMO_ROUTER_TUNING[preset]),
                   oracle=OracleConfig(seed=seed), c3po_args=DEMO_C3PO, manifest_name="demo.json",
                   model_identity=f"toy {preset}: {toy.model.arch}-{toy.key()}", preset=preset, toy=toy, **kwargs)

    @property
    def model_dir(self) -> Path:
        return Path(self.pretrained)


def method_columns(ctx: DemoContext, method: str, baselines: tuple[str, ...] = ("base",)) -> None:
    """A method's column, how many per-sample results it changed against base, and its paired differences
    from each baseline that ran, from the stages' lm-eval results."""
    ctx.columns[method] = headline(ctx.results[method])
    ctx.notes.append(changed_results(ctx, "base", method))
    for baseline in baselines:
        if baseline in ctx.columns:
            ctx.notes.extend(paired_differences(ctx, baseline, method))


def headline_metric(task: str, available) -> str | None:
    """The metric a toy benchmark is judged by: the report's choice for its paper column."""
    from roma_eval.results import TOY_PREFIX, choose_metric, metric_preferences

    return choose_metric(available, task[len(TOY_PREFIX):], metric_preferences())


def headline(results: dict) -> dict[str, float]:
    """task -> headline value, for the toy benchmarks present in lm-eval's ``results``."""
    values = {}
    for task in EVAL_TASKS:
        metrics = results["results"].get(task, {})
        if (metric := headline_metric(task, metrics)) is not None:
            values[task] = metrics[metric]
    return values


def per_sample(directory: Path) -> dict[tuple[str, int], float]:
    """(task, doc_id) -> the headline metric's per-sample value in a stage's lm-eval outputs."""
    from roma_eval.results import load_runs

    values = {}
    for run in load_runs([str(directory)]):
        for benchmark in run.benchmarks:
            if benchmark.task in EVAL_TASKS and (metric := headline_metric(benchmark.task, run.metrics(benchmark))):
                values.update({key: s.value for key, s in run.samples(benchmark, metric).items()})
    return values


def changed_results(ctx: DemoContext, baseline: str, candidate: str) -> str:
    """How many per-sample results (headline metric) ``candidate`` changed against ``baseline``: gained / lost."""
    before, after = per_sample(ctx.stage_dir(baseline)), per_sample(ctx.stage_dir(candidate))
    shared = sorted(before.keys() & after.keys())
    gained = [k for k in shared if after[k] > before[k]]
    lost = [k for k in shared if after[k] < before[k]]
    per_task = ", ".join(f"{task[len('toy_'):]} +{sum(k[0] == task for k in gained)}/-{sum(k[0] == task for k in lost)}"
                         for task in EVAL_TASKS)
    return (f"{candidate} vs {baseline}: {len(gained) + len(lost)} of {len(shared)} per-sample results changed "
            f"(gained {len(gained)}, lost {len(lost)}; {per_task})")


def paired_differences(ctx: DemoContext, baseline: str, candidate: str) -> list[str]:
    """One line per benchmark: candidate − baseline in points with the 95% interval of `check`'s paired test."""
    from roma_eval.report.check import compare
    from roma_eval.results import load_runs, metric_preferences

    comparisons = compare(load_runs([str(ctx.stage_dir(baseline))]), load_runs([str(ctx.stage_dir(candidate))]),
                          prefs=metric_preferences(), max_drop=100.0).comparisons
    lines = [f"{candidate} − {baseline} per benchmark, points [95% interval of the paired test, roma-eval check]:"]
    for c in comparisons:
        lines.append(f"  {c.benchmark:<18} {c.delta:+6.1f}  [{c.interval[0]:+.1f}, {c.interval[1]:+.1f}]  "
                     f"({c.metric}, n={c.n})")
    return lines

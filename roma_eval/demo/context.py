"""What every demo stage shares: the run's settings, lm-eval runs on the toy suite, the headline numbers.

A stage whose outputs exist is not recomputed unless ``ctx.overwrite``: a second run is quick, and an
interrupted run resumes at the stage it was in.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from roma_eval.errors import RomaEvalError
from roma_eval.toy.config import ToyConfig
from roma_eval.toy.config import preset as toy_preset
from roma_eval.toy.suite import EVAL_GROUP, EVAL_TASKS, TRAIN_GROUP

# demo preset -> (toy model preset, docs per benchmark, training docs per mixture family; None = all)
DEMO_PRESETS = {"default": ("default", None, None), "fast": ("fast", 16, 16)}

logger = logging.getLogger(__name__)


@dataclass
class DemoContext:
    preset: str
    seed: int
    toy: ToyConfig
    output: Path                 # e.g. reports/demo
    limit: int | None            # docs per benchmark, None for all
    train_limit: int | None      # training docs per mixture family (RoMA, C3PO's reference), None for all
    batch_size: int = 32         # lm-eval's --batch_size; plain `lm_eval` with the same one reproduces every number
    overwrite: bool = False
    progress: bool = True
    model_dir: Path | None = None
    columns: dict[str, dict[str, float]] = field(default_factory=dict)  # method -> task -> headline value
    notes: list[str] = field(default_factory=list)                      # printed under the table

    @classmethod
    def from_preset(cls, preset: str = "default", seed: int = 0, output: str | Path | None = None, **kwargs):
        if preset not in DEMO_PRESETS:
            raise RomaEvalError(f"unknown demo preset {preset!r}; choose one of {', '.join(DEMO_PRESETS)}")
        toy_name, limit, train_limit = DEMO_PRESETS[preset]
        default_output = Path("reports") / ("demo" if preset == "default" else f"demo-{preset}")
        return cls(preset=preset, seed=seed, toy=toy_preset(toy_name, seed), limit=limit, train_limit=train_limit,
                   output=Path(output) if output is not None else default_output, **kwargs)

    def identity(self) -> dict:
        """What the outputs under ``output`` depend on: reused stages must agree on all of it."""
        return {"preset": self.preset, "seed": self.seed, "toy_model": f"{self.toy.model.arch}-{self.toy.key()}",
                "limit": self.limit, "train_limit": self.train_limit}

    def claim_output(self) -> None:
        """Record this run's identity in ``output/demo.json``; refuse a directory holding another run's
        outputs (its stages would be reused for the wrong model) unless ``overwrite``."""
        manifest = self.output / "demo.json"
        if self.output.exists() and not self.output.is_dir():
            raise RomaEvalError(f"--output {self.output} is a file, not a directory; pass a directory path")
        if manifest.is_file() and not self.overwrite:
            found = json.loads(manifest.read_text())
            if found != self.identity():
                raise RomaEvalError(f"{self.output} holds a demo run with other settings ({found}); pass "
                                    f"--output DIR for a new directory, or --overwrite to recompute it")
            return
        if not manifest.is_file() and self.output.is_dir() and any(self.output.iterdir()) and not self.overwrite:
            raise RomaEvalError(f"{self.output} exists and is not a demo output directory; pass --output DIR "
                                f"for a new directory")
        try:
            self.output.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RomaEvalError(f"cannot create --output_path {self.output} ({exc.strerror}); pass a writable "
                                "directory") from None
        manifest.write_text(json.dumps(self.identity(), indent=2) + "\n")

    def stage_dir(self, stage: str) -> Path:
        return self.output / stage

    def load_model(self):
        """The toy model (eval mode) and its tokenizer."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        return (AutoModelForCausalLM.from_pretrained(self.model_dir).eval(),
                AutoTokenizer.from_pretrained(self.model_dir))

    def training_samples(self):
        """The training mixture's train split as lm-eval presents it (RoMA's data, C3PO's references)."""
        from roma_eval.samples import load_samples

        return load_samples([TRAIN_GROUP], split="train", limit=self.train_limit)


def find_results(directory: Path, model_args: str, limit: int | None) -> dict | None:
    """The newest lm-eval results JSON under ``directory`` for these model arguments and limit."""
    newest = None
    for path in sorted(directory.rglob("results_*.json")):
        data = json.loads(path.read_text())
        config = data.get("config", {})
        if config.get("model_args") == model_args and config.get("limit") == limit:
            newest = data
    return newest


def evaluate_suite(ctx: DemoContext, stage: str, model: str, model_args: str) -> dict:
    """lm-eval's results for ``model`` on ``toy_suite``, written under ``ctx.stage_dir(stage)`` exactly as
    ``lm_eval --output_path DIR --log_samples`` writes them (reused when already there)."""
    out_dir = ctx.stage_dir(stage)
    if not ctx.overwrite and (found := find_results(out_dir, model_args, ctx.limit)) is not None:
        logger.info(f"{stage}: reusing the lm-eval results in {out_dir} (--overwrite recomputes them)")
        return found
    import lm_eval
    import torch
    from lm_eval.loggers import EvaluationTracker

    from roma_eval.samples import task_manager

    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    tracker = EvaluationTracker(output_path=str(out_dir))
    # HFLM's own default device is "cuda", which fails on a CPU-only machine.
    device = "cuda" if torch.cuda.is_available() else "cpu"
    results = lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=[EVAL_GROUP], device=device,
                                      batch_size=ctx.batch_size, limit=ctx.limit, log_samples=True,
                                      evaluation_tracker=tracker, task_manager=task_manager(task_names=[EVAL_GROUP]))
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples)
    for task in results["configs"]:
        tracker.save_results_samples(task_name=task, samples=samples[task])
    return results


def method_stage(ctx: DemoContext, method: str, artefact: Path, complete: str, build, model_args: str) -> None:
    """A trained method's stage: ``build(ctx, artefact)`` unless an earlier run left ``artefact/complete``,
    then ``--model method`` on the suite through lm-eval, its column, and its paired differences from base."""
    if ctx.overwrite or not (artefact / complete).is_file():
        build(ctx, artefact)
    else:
        logger.info(f"{method}: reusing {artefact} (--overwrite rebuilds it)")
    ctx.columns[method] = headline(evaluate_suite(ctx, method, method, model_args))
    ctx.notes.extend(paired_differences(ctx, "base", method))


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


def paired_differences(ctx: DemoContext, baseline: str, candidate: str) -> list[str]:
    """One line per benchmark: candidate − baseline in points with its paired-bootstrap 95% interval."""
    from roma_eval.report.check import compare
    from roma_eval.results import load_runs, metric_preferences

    comparisons = compare(load_runs([str(ctx.stage_dir(baseline))]), load_runs([str(ctx.stage_dir(candidate))]),
                          prefs=metric_preferences(), max_drop=100.0)
    lines = [f"{candidate} − {baseline} per benchmark, points [paired bootstrap 95% interval]:"]
    for c in comparisons:
        lines.append(f"  {c.benchmark:<18} {c.delta:+6.1f}  [{c.interval[0]:+.1f}, {c.interval[1]:+.1f}]  "
                     f"({c.metric}, n={c.n})")
    return lines

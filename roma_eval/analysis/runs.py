"""Which lm-eval runs the routing analysis can read, and what each evaluated: the model (and how lm-eval loaded it),
the router checkpoint, the leaf tasks and how many documents of each.

A run has one routing to analyse when the model's routers are fixed during the evaluation: lm-eval's ``hf`` (or
another plain model) on a supported MoE, and ``roma`` with or without a router checkpoint.  The others change the
routing per sample (the oracle, C3PO), change the prompts (ICL) or add virtual tokens (a peft adapter): they are
refused with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from roma_eval import registry
from roma_eval.errors import RomaEvalError
from roma_eval.results.routing import ANALYSIS_FILE

# The lm-eval model that evaluates router checkpoints (the rows whose artefact is one).
ROUTER_MODEL = next(m.lm_eval_model for m in registry.METHODS if m.artefact == registry.ROUTER_CHECKPOINT)
CHECKPOINT_ARG = registry.ARTEFACTS[registry.ROUTER_CHECKPOINT].model_arg
LM_EVAL_FEWSHOT_SEED = 1234  # simple_evaluate's default fewshot_random_seed, for results files that record none
logger = logging.getLogger(__name__)


class NotAnalysable(RomaEvalError):
    """A run that has no single routing to analyse (skipped, with this reason, among several runs)."""


@dataclass(frozen=True)
class ModelSource:
    """How lm-eval loaded the run's model (its model_args): runs with the same source share one load."""

    pretrained: str
    revision: str | None = None
    dtype: str = "auto"
    trust_remote_code: bool = False


@dataclass(frozen=True)
class RunToAnalyse:
    results_file: Path
    method: str  # roma_eval.registry's name of what the run evaluated (results.method_of)
    source: ModelSource
    router_checkpoint: Path | None  # the checkpoint directory found for the run's router_checkpoint=
    documents: dict[str, int]  # leaf task -> documents the run evaluated (lm-eval's "effective" count)
    num_fewshot: dict[str, int | None]  # leaf task -> few-shot examples as the run's task config had them
    limit: float | None  # the run's --limit
    fewshot_seed: int = LM_EVAL_FEWSHOT_SEED  # the seed its few-shot examples were drawn with

    @property
    def directory(self) -> Path:
        return self.results_file.parent

    @property
    def output(self) -> Path:
        return self.directory / ANALYSIS_FILE

    @property
    def tasks(self) -> list[str]:
        return sorted(self.documents)


def _typed(value):
    from roma_eval.harness import typed_value

    return typed_value(value) if isinstance(value, str) else value


def _why_not(model: str, model_args: dict, data: dict) -> str | None:
    """Why a run of lm-eval's ``model`` has no single routing (None: it has one).  The oracle, C3PO and ICL name
    their runs after the method (their lm-eval model, or their evaluator's)."""
    if model in registry.BY_NAME and registry.method(model).artefact != registry.ROUTER_CHECKPOINT \
            and model != "base":
        return f"{registry.label(model)}: {registry.NO_SINGLE_ROUTING[registry.method(model).artefact]}"
    if model_args.get("peft"):
        return f"a peft adapter: {registry.NO_SINGLE_ROUTING[registry.PEFT_ADAPTER]}"
    if model not in registry.PLAIN_LM_EVAL_MODELS and model != ROUTER_MODEL:
        return (f"lm-eval's --model {model} is not analysed (runs of {', '.join(sorted(registry.PLAIN_LM_EVAL_MODELS))}"
                f" or {ROUTER_MODEL} are)")
    if data.get("chat_template"):
        return "it applied a chat template; the analysis reads lm-eval's plain prompts"
    return None


def read_run(results_file: Path) -> RunToAnalyse:
    """What the run of ``results_file`` evaluated; refused in one line (``NotAnalysable`` when it has no single
    routing, RomaEvalError when its files are incomplete)."""
    from roma_eval.results import find_artefact, load_run

    run = load_run(results_file)
    model, args = str(run.config.get("model", "")).lower(), run.model_args
    if why := _why_not(model, args, run.data):
        raise NotAnalysable(f"{results_file.parent} is not analysed: {why}")
    if not args.get("pretrained"):
        raise RomaEvalError(f"{results_file} records no pretrained= in its model_args; cannot tell which model ran")
    checkpoint = None
    if model == ROUTER_MODEL and args.get(CHECKPOINT_ARG):
        marker = registry.ARTEFACTS[registry.ROUTER_CHECKPOINT].marker
        checkpoint = find_artefact(str(args[CHECKPOINT_ARG]), run.search_dirs, marker)
        if checkpoint is None:
            raise RomaEvalError(f"{results_file.parent}: its router checkpoint {args[CHECKPOINT_ARG]} is not there "
                                f"(no {marker}); put the checkpoint back where the run found it")
    counts = {task: entry.get("effective") for task, entry in run.data.get("n-samples", {}).items()}
    if not counts or not all(isinstance(c, int) and c > 0 for c in counts.values()):
        raise RomaEvalError(f"{results_file} records no documents per task (n-samples); re-run lm_eval")
    configs = run.data.get("configs", {})
    source = ModelSource(str(args["pretrained"]), _typed(args.get("revision")),
                         str(_typed(args.get("dtype")) or "auto"), bool(_typed(args.get("trust_remote_code"))))
    limit = run.config.get("limit")
    return RunToAnalyse(results_file, run.method, source, checkpoint.resolve() if checkpoint else None, counts,
                        {task: (configs.get(task) or {}).get("num_fewshot") for task in counts},
                        limit if isinstance(limit, (int, float)) else None,
                        run.config.get("fewshot_seed", LM_EVAL_FEWSHOT_SEED))


def find_runs(paths: Sequence[str | Path]) -> list[RunToAnalyse]:
    """The runs under ``paths`` (lm-eval output directories or results files; the newest results file of each
    directory).  One run that cannot be analysed is refused; among several, those with no single routing are
    skipped with a notice, and at least one must remain."""
    from roma_eval.results import find_results_files

    newest: dict[Path, Path] = {}
    for path in paths:
        for file in find_results_files(Path(path)):
            newest[file.parent] = max(newest.get(file.parent, file), file)  # lm-eval's names sort by date
    files = list(newest.values())
    runs = []
    for file in files:
        try:
            runs.append(read_run(file))
        except NotAnalysable as exc:
            if len(files) == 1:
                raise
            logger.warning("skipped: %s", exc)
    if not runs:
        raise RomaEvalError(f"none of the {len(files)} runs under {', '.join(map(str, paths))} can be analysed "
                            "(see the notices above)")
    return runs

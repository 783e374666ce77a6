"""Analyse runs: each run's routing on its own lm-eval documents, written beside its results.

Runs of one base model (the same pretrained=, revision, dtype) share one model load: a run with a router checkpoint
gets its routers copied in place (``checkpoint.apply_router_checkpoint``) and the base routers back afterwards, and
the base routing its movement is measured from comes from the same load, on the same samples.  Everything a run can
be refused for (its model, its layers, an earlier analysis with other settings) is checked on the model's skeleton
before any weight is loaded; a run analysed before with the same settings is skipped (``document.identity``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from roma_eval.analysis.config import AnalysisConfig
from roma_eval.analysis.runs import NotAnalysable, RunToAnalyse
from roma_eval.errors import RomaEvalError

logger = logging.getLogger(__name__)


@dataclass
class Planned:
    run: RunToAnalyse
    layers: list[int]
    done: bool  # an analysis of the same run and settings is already beside it
    document: dict | None = None  # the analysis, once computed here


@dataclass(frozen=True)
class Where:
    """Where the runs' tasks and the model come from: task YAMLs beyond roma-eval's and lm-eval's, the torch device."""

    include_path: tuple[str, ...] = ()
    device: str | None = None
    progress: bool = True


def _check_model(run: RunToAnalyse, config: AnalysisConfig) -> list[int]:
    """The analysed layers of the run's model, read on its skeleton (no weights); a model without MoE routers is not
    analysable."""
    from roma_eval.model_loading import model_skeleton
    from roma_eval.routing import resolve_layers, routers

    source = run.source
    skeleton = model_skeleton(source.pretrained, source.revision, source.trust_remote_code)
    try:
        routers(skeleton)
    except RomaEvalError as exc:
        raise NotAnalysable(f"{run.directory} is not analysed: {exc}") from None
    return resolve_layers(skeleton, config.layers)


def plan(runs: Sequence[RunToAnalyse], config: AnalysisConfig, overwrite: bool = False) -> list[Planned]:
    """Each run with its layers and whether it is analysed already; refused in one line before anything is loaded:
    a model that is not a supported MoE (skipped with a notice among several runs), layers it does not have, an
    earlier analysis with other settings (unless ``overwrite``)."""
    from roma_eval.analysis.document import identity
    from roma_eval.storage import read_json_object

    planned, layers_of = [], {}
    for run in runs:
        try:
            if run.source not in layers_of:
                layers_of[run.source] = _check_model(run, config)
        except NotAnalysable as exc:
            if len(runs) == 1:
                raise
            logger.warning("skipped: %s", exc)
            continue
        layers = layers_of[run.source]
        found = read_json_object(run.output) if run.output.exists() else None
        wanted = identity(run, layers, config)
        same = found is not None and {key: found.get(key) for key in wanted} == wanted
        if run.output.exists() and not same and not overwrite:
            differ = sorted(key for key in wanted if (found or {}).get(key) != wanted[key])
            raise RomaEvalError(f"{run.output} holds an analysis with other settings "
                                f"({', '.join(differ) or 'unreadable'} differ); pass --overwrite to replace it")
        planned.append(Planned(run, layers, same and not overwrite))
    if not planned:
        raise RomaEvalError("none of the runs can be analysed (see the notices above)")
    return planned


@contextmanager
def routers_of(model, checkpoint: Path | None):
    """Inside, ``model`` has the routers of ``checkpoint`` (None: its own); its own routers are back afterwards."""
    from roma_eval.checkpoint import apply_router_checkpoint, load_router_checkpoint, routers_restored

    if checkpoint is None:
        yield model
        return
    with routers_restored(model):
        apply_router_checkpoint(model, load_router_checkpoint(checkpoint))
        yield model


@dataclass
class _Shared:
    """What the runs share, keyed by their documents: samples and embeddings (every run of the same documents), the
    routing of the model loaded now (``model``: runs of one base model), lm-eval's task index (built once)."""

    config: AnalysisConfig
    where: Where
    tasks: list[str]  # every run's leaf tasks
    model: object = None
    tokenizer: object = None
    source: object = None  # the ModelSource of ``model``
    embedder: object = None
    manager: object = None
    found: dict = field(default_factory=dict)  # (what, documents key) -> value

    def _cached(self, what, run: RunToAnalyse, compute):
        key = (what, _documents_key(run, self.config))
        if key not in self.found:
            self.found[key] = compute()
        return self.found[key]

    def samples(self, run: RunToAnalyse) -> list:
        def compute():
            from roma_eval.harness import task_manager

            if self.manager is None:
                self.manager = task_manager(self.where.include_path, self.tasks)
            return run_samples(self.manager, run, self.config.limit)

        return self._cached("samples", run, compute)

    def embedding(self, run: RunToAnalyse) -> np.ndarray:
        def compute():
            from roma_eval.embedding import embed, load_embedder

            if self.embedder is None:
                self.embedder = load_embedder(self.config.embedder)
            return embed([sample.text for sample in self.samples(run)], self.embedder)

        return self._cached("embedding", run, compute)

    def routing(self, run: RunToAnalyse, layers: list[int], checkpoint: Path | None):
        from roma_eval.analysis.collect import collect_routing

        def compute():
            with routers_of(self.model, checkpoint):
                return collect_routing(self.model, self.tokenizer, self.samples(run), layers,
                                       self.config.batch_size, self.where.progress)

        return self._cached(("routing", self.source, checkpoint, tuple(layers)), run, compute)


def _documents_key(run: RunToAnalyse, config: AnalysisConfig) -> tuple:
    return run.fewshot_seed, tuple((task, min(run.documents[task], config.limit or run.documents[task]),
                                    run.num_fewshot.get(task)) for task in run.tasks)


def run_samples(manager, run: RunToAnalyse, limit: int | None) -> list:
    """The run's documents as lm-eval's prompts (``samples.samples_from_task``, tasks of lm-eval's TaskManager
    ``manager``): the first documents of each leaf task, as many as the run evaluated (at most ``limit``), with the
    run's few-shot setting and the few-shot examples its seed drew (lm-eval draws them per document in order, as
    here)."""
    from roma_eval.samples import samples_from_task

    tasks = manager.load(run.tasks)["tasks"]
    samples = []
    for name in run.tasks:
        task, wanted = tasks[name], min(run.documents[name], limit or run.documents[name])
        if run.num_fewshot.get(name) is not None and task.config.num_fewshot != run.num_fewshot[name]:
            task.set_config(key="num_fewshot", value=run.num_fewshot[name])
        task.set_fewshot_seed(seed=run.fewshot_seed)  # as simple_evaluate seeds each task
        found = samples_from_task(task, "eval", wanted)
        if len(found) != wanted:
            raise RomaEvalError(f"task {name} has {len(found)} documents here, the run {run.directory} evaluated "
                                f"{run.documents[name]}; its data changed: analyse a run of the same data")
        samples.extend(found)
    return samples


def _analyse(shared: _Shared, item: Planned) -> None:
    """Analyse one run and write its analysis and routing dump together (``storage.write_files``: both or neither)."""
    import json

    from roma_eval.analysis.document import analysis_document
    from roma_eval.analysis.dump import DUMP_NAME, RoutingDump, dump_bytes
    from roma_eval.storage import write_files

    run = item.run
    routing = shared.routing(run, item.layers, run.router_checkpoint)
    base = None if run.router_checkpoint is None else shared.routing(run, item.layers, None)
    tasks, embedding = np.array([sample.task for sample in shared.samples(run)]), shared.embedding(run)
    item.document = analysis_document(run, routing, base, embedding, tasks, shared.config)
    write_files({run.directory / DUMP_NAME: dump_bytes(RoutingDump(embedding, routing.vectors, tasks)),
                 run.output: json.dumps(item.document, indent=2) + "\n"})


def analyse_planned(planned: Sequence[Planned], config: AnalysisConfig, where: Where | None = None) -> list[Planned]:
    """Analyse what ``plan`` left to do, one model load per base model, and write each analysis and routing dump
    beside its run's results; returns ``planned``, each analysis computed here in its ``document``."""
    from roma_eval.model_loading import load_model

    where = where or Where()
    by_source: dict = {}
    for item in planned:
        if not item.done:
            by_source.setdefault(item.run.source, []).append(item)
    shared = _Shared(config, where, sorted({task for item in planned for task in item.run.tasks}))
    for source, items in by_source.items():
        shared.model, shared.tokenizer = load_model(source.pretrained, source.revision, source.dtype, where.device,
                                                    trust_remote_code=source.trust_remote_code)
        shared.source = source
        for item in sorted(items, key=lambda i: i.run.router_checkpoint is not None):  # base routers first
            logger.info("analysing %s", item.run.directory)
            _analyse(shared, item)
        shared.model = shared.tokenizer = None  # the next base model's load replaces this one
    return list(planned)


def analyse_runs(runs: Sequence[RunToAnalyse], config: AnalysisConfig, where: Where | None = None,
                 overwrite: bool = False) -> list[Planned]:
    """``plan`` (every refusal before anything is loaded), then ``analyse_planned``."""
    return analyse_planned(plan(runs, config, overwrite), config, where)

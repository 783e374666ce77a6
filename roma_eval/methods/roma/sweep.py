"""Sweeps: several router checkpoints of one base model, evaluated by lm-eval with one load of the base model.

A router checkpoint changes only the routers' weights (``methods/roma/lm_eval.py``), so N checkpoints need one load
of the base model, not N: the sweep loads it once as lm-eval's ``roma`` model without a checkpoint, copies each
checkpoint's routers into it in place, lets lm-eval evaluate, and puts the base model's routers back after each
checkpoint, also when an evaluation fails.  Checkpoint C's run directory is the one
``lm_eval --model roma --model_args pretrained=M,router_checkpoint=C --tasks T --output_path OUT/<name> --log_samples``
writes: results_<date>.json (config.model "roma", the same model_args) and samples_<task>_<date>.jsonl.

``<name>`` is C's directory name; checkpoints whose directories share a name get as many of their parent
directories' names as tell them apart, joined by "__" (runs/a/roma and runs/b/roma: ``a__roma``, ``b__roma``).

Every checkpoint is checked before the base model loads (``prepare``): readable and finite, for this model's family,
layers and router shapes, and tuned on these base weights -- its recorded fingerprint against the routers stored
in the base model's safetensors files (read as `roma-eval export` reads them).  Where they cannot be read that way
(weights in another format, quantized or fused routers), the fingerprints are compared right after the one load,
before anything is evaluated.  A checkpoint already evaluated into its directory with the same
settings is not evaluated again (``plan``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from roma_eval.checkpoint import (
    RouterCheckpoint,
    apply_router_checkpoint,
    load_router_checkpoint,
    routers_restored,
)
from roma_eval.errors import RomaEvalError
from roma_eval.results.provenance import router_method, same_model_args
from roma_eval.routing import router_fingerprint, router_parameter_names
from roma_eval.storage import read_json_object, staged_directory

FLAG = "--router_checkpoints"


@dataclass(frozen=True)
class SweepSettings:
    """What every checkpoint's evaluation shares: the base model as lm-eval's ``hf`` model_args name it (pretrained=,
    and revision=, dtype=, trust_remote_code= when given), the tasks, the output directory, the task manager the
    tasks were checked with, and ``simple_evaluate``'s options (limit, batch_size, device, the chat template)."""

    model_args: dict
    tasks: tuple[str, ...]
    output_path: Path
    task_manager: object
    options: dict = field(default_factory=dict)

    @property
    def pretrained(self) -> str:
        return str(self.model_args["pretrained"])

    def run_args(self, source: str) -> dict:
        """The model_args of ``lm_eval --model roma`` for the checkpoint ``source``."""
        return {**self.model_args, "router_checkpoint": source}


@dataclass
class SweepEntry:
    """One checkpoint of a sweep: as given (recorded as router_checkpoint=), read, and where its run goes."""

    source: str
    checkpoint: RouterCheckpoint
    out_dir: Path  # OUT/<name>
    done: Path | None = None  # the results file of an earlier evaluation with the same settings

    @property
    def method(self) -> str:
        """The registry name of the method that tuned the routers, as the checkpoint records it."""
        return router_method(self.checkpoint.metadata)


@dataclass
class Outcome:
    entry: SweepEntry
    results: dict  # lm-eval's results, as its results file holds them
    results_file: Path
    seconds: float  # 0 for an entry evaluated before
    skipped: bool


def _components(source: str) -> tuple[str, ...]:
    path = Path(source).expanduser()
    return path.resolve().parts[1:] if path.exists() else tuple(part for part in source.split("/") if part)


def run_names(sources: Sequence[str]) -> list[str]:
    """Each checkpoint's output directory name: its directory's name, or as many of its last path components as tell
    it apart from the other checkpoints', joined by "__"."""
    parts = [_components(source) for source in sources]
    names = []
    for i, mine in enumerate(parts):
        others = parts[:i] + parts[i + 1:]
        k = next((k for k in range(1, len(mine)) if all(other[-k:] != mine[-k:] for other in others)), len(mine))
        names.append("__".join(mine[-k:]))
    return names


def _read(source: str) -> RouterCheckpoint:
    try:
        return load_router_checkpoint(source)
    except RomaEvalError as exc:
        raise RomaEvalError(f"{FLAG} {source}: {exc}") from None


def check_fit(model, entries: Sequence[SweepEntry], pretrained: str, compare_fingerprint: bool = True) -> None:
    """Refuse, naming it, a checkpoint that does not fit ``model``: another family, layers or router shapes
    (``apply_router_checkpoint``'s checks), or, with ``compare_fingerprint``, routers tuned on other base weights."""
    base = router_fingerprint(model) if compare_fingerprint else None
    for entry in entries:
        try:
            with routers_restored(model):
                apply_router_checkpoint(model, entry.checkpoint, force=True)
        except RomaEvalError as exc:
            raise RomaEvalError(f"{FLAG} {entry.source}: {exc}") from None
        meta = entry.checkpoint.metadata
        if base is not None and meta.get("base_router_fingerprint") != base:
            raise RomaEvalError(f"{FLAG} {entry.source} was tuned on {meta.get('base_model')}, whose routers differ "
                                f"from those of {pretrained}; sweep it with its own base model (--pretrained)")


def read_stored_routers(skeleton, pretrained: str, revision: str | None = None) -> bool:
    """Put the base model's stored router weights into ``skeleton`` (its modules on the meta device), read from its
    safetensors files as `roma-eval export` reads them (keys renamed as transformers renames them on load), without
    the rest; False where they cannot be read that way (another format, quantized or fused routers, a hub model
    neither cached nor downloadable now)."""
    from roma_eval.export import model_directory, read_tensors, router_keys, weight_map

    try:
        directory, _ = model_directory(pretrained, revision)
        shards = weight_map(directory)
        keys = router_keys(skeleton, shards, directory)
    except RomaEvalError:
        return False
    stored = read_tensors(directory, shards, keys.values())
    names = router_parameter_names(skeleton)
    skeleton.load_state_dict({names[layer]: stored[key] for layer, key in keys.items()}, strict=False, assign=True)
    return True


def prepare(sources: Sequence[str], settings: SweepSettings) -> list[SweepEntry]:
    """Every checkpoint read and checked before the base model loads, nothing written: the list names each once;
    each is readable and finite, fits the base model's family, layers and shapes and, where its stored routers can
    be read, was tuned on its weights (``check_fit`` on the model's meta-device skeleton)."""
    from roma_eval.model_loading import model_skeleton

    if not sources:
        raise RomaEvalError(f"{FLAG} is empty; give comma-separated router checkpoint directories (or hub ids)")
    keys = [_components(source) for source in sources]
    if twice := next((source for i, source in enumerate(sources) if keys[i] in keys[:i]), None):
        raise RomaEvalError(f"{FLAG} names {twice} twice; list each checkpoint once")
    names = run_names(sources)
    if len(set(names)) < len(names) or "" in names:
        raise RomaEvalError(f"{FLAG}: {', '.join(sources)} give no distinct directory names; rename the checkpoints")
    entries = [SweepEntry(source, _read(source), settings.output_path / name) for source, name in zip(sources, names)]
    revision = settings.model_args.get("revision")
    skeleton = model_skeleton(settings.pretrained, revision, bool(settings.model_args.get("trust_remote_code")))
    stored = read_stored_routers(skeleton, settings.pretrained, revision)
    check_fit(skeleton, entries, settings.pretrained, compare_fingerprint=stored)
    return entries


def _top_level_tasks(data: dict) -> set[str]:
    """The task and group names a results file was asked for: those no recorded group holds."""
    groups = data.get("group_subtasks") or {}
    names = set(data.get("results") or {}) | set(groups)
    return {name for name in names if not any(name in members for members in groups.values())}


def _evaluated(entry: SweepEntry, settings: SweepSettings) -> Path | None:
    """The results file of an earlier evaluation of ``entry`` in its directory with these settings: lm-eval's
    ``roma`` model, the same model_args (a moved tree counts: ``same_model_args``), limit, tasks and chat template."""
    wanted = ",".join(f"{key}={value}" for key, value in settings.run_args(entry.source).items())
    options = settings.options
    for path in sorted(entry.out_dir.rglob("results_*.json")) if entry.out_dir.is_dir() else []:
        data = read_json_object(path) or {}
        config = data.get("config") or {}
        if (config.get("model") == "roma" and config.get("limit") == options.get("limit")
                and same_model_args(config.get("model_args"), wanted, path)
                and _top_level_tasks(data) == set(settings.tasks)
                and bool(data.get("chat_template")) == bool(options.get("apply_chat_template"))
                and bool(data.get("fewshot_as_multiturn")) == bool(options.get("fewshot_as_multiturn"))):
            return path
    return None


def plan(entries: Sequence[SweepEntry], settings: SweepSettings, overwrite: bool = False) -> None:
    """Mark the entries evaluated before with these settings (``done``: not evaluated again) unless ``overwrite``;
    refuse an entry's directory holding anything else unless ``overwrite`` (it is then replaced once its new run is
    whole)."""
    for entry in entries:
        entry.done = None if overwrite else _evaluated(entry, settings)
        if entry.done is None and entry.out_dir.exists() and not overwrite:
            raise RomaEvalError(f"{entry.out_dir} exists but holds no evaluation of {entry.source} with these settings "
                                "(model_args, limit, tasks, chat template); pass --overwrite to replace it, or choose "
                                "another --output_path")


def load_base(settings: SweepSettings):
    """The base model, loaded once: lm-eval's ``roma`` model without a checkpoint (exactly ``hf``), built as
    ``lm_eval --model roma --model_args ...`` builds it."""
    from roma_eval.methods.roma.lm_eval import RomaLM

    options = settings.options
    return RomaLM.create_from_arg_obj(dict(settings.model_args), {"batch_size": options.get("batch_size"),
                                                                  "max_batch_size": None,
                                                                  "device": options.get("device")})


def _evaluate(lm, entry: SweepEntry, settings: SweepSettings) -> Outcome:
    """``entry``'s routers in ``lm``'s model, lm-eval's evaluation written as `lm_eval --model roma` writes it (its
    directory appears whole or not at all), the base routers back."""
    from roma_eval.harness import evaluate

    started = time.perf_counter()
    with routers_restored(lm.model), staged_directory(entry.out_dir) as staging:
        apply_router_checkpoint(lm.model, entry.checkpoint)
        lm.router_checkpoint = entry.source
        try:
            evaluation = evaluate(lm, staging, settings.tasks, model_args=settings.run_args(entry.source),
                                  task_manager=settings.task_manager, **settings.options)
        finally:
            lm.router_checkpoint = None
        # what lm-eval records when it builds the model from its name, not handed a built one
        evaluation.results["config"]["model"] = "roma"
        evaluation.tracker.general_config_tracker.model_source = "roma"
        written = evaluation.save().relative_to(staging)
    return Outcome(entry, evaluation.results, entry.out_dir / written, time.perf_counter() - started, skipped=False)


def sweep(lm, entries: Sequence[SweepEntry], settings: SweepSettings) -> Iterator[Outcome]:
    """Each entry's outcome in order: evaluated on ``lm`` (the base model, loaded once), or read back when ``done``.
    The entries to evaluate are first checked against ``lm``'s routers (a checkpoint of other base weights writes
    nothing); the base routers are in ``lm.model`` again after each evaluation, also when one fails."""
    pending = [entry for entry in entries if entry.done is None]
    if pending:
        check_fit(lm.model, pending, settings.pretrained)
    for entry in entries:
        if entry.done is not None:
            yield Outcome(entry, read_json_object(entry.done) or {}, entry.done, 0.0, skipped=True)
        else:
            yield _evaluate(lm, entry, settings)

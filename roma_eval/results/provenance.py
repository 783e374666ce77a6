"""Which method an lm-eval run evaluates and what training it cost, read from the artefacts its model_args name
(a router checkpoint's router_config.json, a peft adapter's training record) and from roma_eval.registry.
Only the standard library."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from roma_eval import registry
from roma_eval.storage import read_json_object

# lm-eval's model for peft adapters (roma-eval's hf with peft=).
_PEFT_MODEL = next(m.lm_eval_model for m in registry.METHODS if m.artefact == registry.PEFT_ADAPTER)
# Files that say what trained an artefact: a router checkpoint's config (its "method") and a peft adapter's
# training record / config.
ROUTER_CONFIG, TRAINING_LOG = "router_config.json", "training_log.jsonl"  # the log: peft adapters too
ADAPTER_TRAINING, ADAPTER_CONFIG = "training_config.json", "adapter_config.json"
# What `roma-eval export` writes into a model directory with tuned routers (roma_eval/export.py): the method and the
# checkpoint's router_config.json ("router_config"); the checkpoint's training log is copied beside it.
EXPORT_RECORD = "roma_export.json"
# lm-eval models that run on a serving engine; every other model of ours and lm-eval's hf ones run transformers.
SERVING_ENGINES = {"vllm": "vllm", "vllm-vlm": "vllm", "sglang": "sglang", "sglang-generate": "sglang"}
# model_args naming a directory an evaluation read (a router checkpoint, a peft adapter, C3PO's reference set), and
# the file every such directory holds (how a copy of it is recognised inside a results tree).
ARTEFACT_ARGS = {artefact.model_arg: artefact.marker for artefact in registry.ARTEFACTS.values()}
logger = logging.getLogger(__name__)


def parse_model_args(model_args) -> dict:
    """lm-eval records model_args as a dict (0.4.13) or, in older versions, as the "k=v,k=v" command-line string."""
    if isinstance(model_args, dict):
        return model_args
    if not model_args:
        return {}
    pairs = (item.split("=", 1) for item in str(model_args).split(",") if item.strip())
    return {key.strip(): (value[0].strip() if value else "") for key, *value in pairs}


def method_of(model: str, model_args: dict, search_dirs: Sequence[Path] = ()) -> str:
    """The method a run evaluates, from lm-eval's ``--model`` and ``--model_args``.

    A "roma" run evaluates a router checkpoint, whose ``router_config.json`` says which method trained it
    (``router_method``: RoMA, Router Tuning, Oracle Tuning, Dense BP); without one it evaluates the pretrained
    routers, i.e. the base model.  ``hf`` (or ``hf-peft``) with ``peft=`` evaluates an adapter, whose own files say
    which method trained it (``adapter_method``: Prefix / Prompt Tuning); without one, a ``pretrained=`` directory
    written by `roma-eval export` (``hf``, ``vllm``, ...) evaluates the method its roma_export.json records
    (``export_record``), any other the base model.  Model types we do not know keep their own name ("icl", "c3po",
    "oracle").  Artefact paths are looked up by ``find_artefact``: inside the results tree (``search_dirs``) first,
    then as recorded.
    """
    model = model.lower()
    if model in registry.PLAIN_LM_EVAL_MODELS or model == _PEFT_MODEL:
        adapter = model_args.get("peft")
        if adapter:
            return adapter_method(str(adapter), search_dirs)
        record = export_record(model_args, search_dirs)
        return router_method(record.get("router_config") or {}) if record else "base"
    if model == "roma":
        checkpoint = model_args.get("router_checkpoint")
        return checkpoint_method(str(checkpoint), search_dirs) if checkpoint else "base"
    return model


def export_record(model_args: dict, search_dirs: Sequence[Path] = ()) -> dict | None:
    """The roma_export.json of the model directory that ``pretrained=`` names, when `roma-eval export` wrote it."""
    pretrained = model_args.get("pretrained")
    directory = find_artefact(str(pretrained), search_dirs, EXPORT_RECORD) if pretrained else None
    return read_json_object(directory / EXPORT_RECORD) if directory else None


def backend_of(model: str) -> str:
    """The engine an lm-eval ``--model`` runs on: "vllm", "sglang", or "hf" (transformers: lm-eval's hf models and
    every model and evaluator of roma-eval's)."""
    return SERVING_ENGINES.get(model.lower(), "hf")


def router_method(router_config: dict) -> str:
    """The method a router checkpoint's router_config.json records ("method": every training method writes it).
    Checkpoints written before that field name their method in training_config (Oracle Tuning, Dense BP) or, for
    RoMA's own, not at all: those are "router_tuning" when nothing but the task loss trained them (regulariser none,
    or λ = 0: the paper's Router Tuning row), else "roma"."""
    training_config = router_config.get("training_config") or {}
    if recorded := router_config.get("method") or training_config.get("method"):
        return str(recorded)
    if training_config.get("regulariser") == "none" or training_config.get("lam") == 0:
        return "router_tuning"
    return "roma"


def find_artefact(path: str, search_dirs: Sequence[Path] = (), marker: str | None = None) -> Path | None:
    """The directory an artefact path recorded in model_args (router_checkpoint=, peft=, reference=) names here.

    First inside the results tree: the longest tail of the recorded path that is a directory holding ``marker``
    (the file every such artefact has, ``ARTEFACT_ARGS``) below one of ``search_dirs`` (the results file's directory
    and its parents, nearest first), so that a copied or moved tree finds its own artefacts whether the path was
    recorded absolute or relative to the run's working directory.  Then the path as recorded (absolute, or relative
    to the working directory); None when neither exists.
    """
    recorded = Path(path).expanduser()
    parts = recorded.parts[1:] if recorded.is_absolute() else recorded.parts
    for start in range(len(parts)):
        tail = Path(*parts[start:])
        for directory in search_dirs:
            found = directory / tail
            if (found / marker).is_file() if marker else found.is_dir():
                return found
    return recorded if recorded.is_dir() else None


def same_model_args(recorded, wanted: str, results_file: Path) -> bool:
    """Whether a results file's recorded model_args are ``wanted`` (a "k=v,..." string), an artefact path counting as
    equal when the recorded one resolves from the results file (``find_artefact``) to the directory ``wanted`` names:
    a copied or moved results tree holds the same evaluation."""
    found, asked = parse_model_args(recorded), parse_model_args(wanted)
    if found.keys() != asked.keys():
        return False
    parents = list(results_file.resolve().parents)[:4]
    for key, value in asked.items():
        if key in ARTEFACT_ARGS and str(found[key]) != value:
            located = find_artefact(str(found[key]), parents, ARTEFACT_ARGS[key])
            if located is None or located.resolve() != Path(value).resolve():
                return False
        elif str(found[key]) != value:
            return False
    return True


def checkpoint_method(checkpoint: str, search_dirs: Sequence[Path] = ()) -> str:
    """The method that trained a router checkpoint; "roma" when its router_config.json cannot be read here."""
    directory = find_artefact(checkpoint, search_dirs, ROUTER_CONFIG)
    config = read_json_object(directory / ROUTER_CONFIG) if directory else None
    if config is None:
        logger.warning("router checkpoint %s: no readable %s here, so its method is taken to be RoMA; label the run "
                       "(LABEL=PATH) if it is another", checkpoint, ROUTER_CONFIG)
        return "roma"
    return router_method(config)


def adapter_method(adapter: str, search_dirs: Sequence[Path] = ()) -> str:
    """The method that trained a peft adapter: roma-eval's training record, else peft's type ("prefix_tuning",
    "prompt_tuning", "lora", ...); "peft" when neither can be read here."""
    directory = find_artefact(adapter, search_dirs, ADAPTER_CONFIG)
    record = read_json_object(directory / ADAPTER_TRAINING) if directory else None
    if record and record.get("method"):
        return str(record["method"])
    config = read_json_object(directory / ADAPTER_CONFIG) if directory else None
    if config and config.get("peft_type"):
        return str(config["peft_type"]).lower()
    logger.warning("peft adapter %s: no readable %s here; label the run (LABEL=PATH)", adapter, ADAPTER_CONFIG)
    return "peft"


@dataclass(frozen=True)
class TrainingCost:
    """What training an evaluated artefact cost: its trainable parameters and the summed wall-clock seconds of its
    optimisation steps (training_log.jsonl; None when not recorded)."""

    trainable_parameters: int | None
    training_seconds: float | None = None


def _logged_seconds(path: Path) -> float | None:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        return sum(float(json.loads(line).get("seconds", 0.0)) for line in lines if line.strip())
    except (OSError, ValueError, AttributeError):
        return None


def _router_cost(router_config: dict, directory: Path) -> TrainingCost:
    """Tuned router weights (layers × experts × hidden) and the seconds logged in ``directory``."""
    try:
        parameters = (len(router_config["layers"]) * int(router_config["num_experts"])
                      * int(router_config["hidden_size"]))
    except (KeyError, TypeError, ValueError):
        parameters = None
    return TrainingCost(parameters, _logged_seconds(directory / TRAINING_LOG))


def training_cost(model: str, model_args: dict, search_dirs: Sequence[Path] = (),
                  label: str | None = None) -> TrainingCost | None:
    """The evaluated artefact's training cost: a router checkpoint's tuned router weights (layers × experts ×
    hidden; a model exported with them the same), a peft adapter's recorded trainable parameters; 0 for methods
    that train nothing."""
    model = model.lower()
    checkpoint = model_args.get("router_checkpoint") if model == "roma" else None
    plain = model in registry.PLAIN_LM_EVAL_MODELS or model == _PEFT_MODEL
    adapter = model_args.get("peft") if plain else None
    if checkpoint:
        directory = find_artefact(str(checkpoint), search_dirs, ROUTER_CONFIG)
        config = read_json_object(directory / ROUTER_CONFIG) if directory else None
        return _router_cost(config, directory) if config is not None else None
    if plain and not adapter and (record := export_record(model_args, search_dirs)):  # a model exported with routers
        directory = find_artefact(str(model_args["pretrained"]), search_dirs, EXPORT_RECORD)
        return _router_cost(record.get("router_config") or {}, directory)
    if adapter:
        directory = find_artefact(str(adapter), search_dirs, ADAPTER_CONFIG)
        record = read_json_object(directory / ADAPTER_TRAINING) if directory else None
        if record is None:
            return None
        summary = record.get("summary") or {}
        return TrainingCost(summary.get("trainable_parameters"), _logged_seconds(directory / TRAINING_LOG))
    method = label or method_of(model, model_args)
    return TrainingCost(0) if method in registry.BY_NAME and not registry.method(method).trains else None

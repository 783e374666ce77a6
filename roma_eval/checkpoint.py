"""Router-only checkpoints: the tuned routers' weights and what they were tuned on.

A checkpoint is a directory (local, or a hub repo) holding two files, named like peft adapters, and its card:
  - ``router_model.safetensors``: each tuned layer's router weight under the model's own parameter name
    (``model.layers.{i}.mlp.gate.weight`` for OLMoE), so the file reads like a slice of a full checkpoint;
  - ``router_config.json``: base model name or path and revision, model_type, tuned layers,
    expert count and hidden size, the fingerprint of the *base* model's routers, the method that
    tuned them (``"method"``: its name in ``roma_eval/registry.py``), roma_eval's version and the
    training config;
  - ``README.md``: the model card (``roma_eval.model_card``): a checkpoint uploaded to the hub says what it is.
Applying it to a model whose routers do not fingerprint as the recorded base fails unless forced:
tuned routers only make sense on top of the weights they were tuned with.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from roma_eval import __version__
from roma_eval.errors import RomaEvalError
from roma_eval.model_card import model_card
from roma_eval.routing import (
    layer_of_parameter,
    router_fingerprint,
    router_parameter_names,
    router_weights,
    spec_for,
)
from roma_eval.storage import require_finite, staged_directory, write_file

WEIGHTS_NAME = "router_model.safetensors"
CONFIG_NAME = "router_config.json"
CARD_NAME = "README.md"
FORMAT_VERSION = 1


@dataclass
class RouterCheckpoint:
    tensors: dict[int, torch.Tensor]  # decoder-layer index -> router weight (n_experts, hidden)
    metadata: dict

    @property
    def layers(self) -> list[int]:
        return sorted(self.tensors)


def ensure_new_output(directory, overwrite: bool) -> None:
    """Refuse to touch an existing output unless ``overwrite`` (checked before any expensive work)."""
    if Path(directory).exists() and not overwrite:
        raise RomaEvalError(f"{directory} already exists; choose another output directory or pass --overwrite")


@dataclass(frozen=True)
class RouterRecord:
    """What a router checkpoint records beside the routers: the base model they were tuned on (name or path, its
    routers' fingerprint, revision), the method that tuned them (a registry name: "roma", "router_tuning",
    "oracle_tuning", "dense_bp"; None for routers set by hand) and its training configuration."""

    base_model: str
    base_fingerprint: str
    revision: str | None = None
    method: str | None = None
    training_config: dict = field(default_factory=dict)


def save_router_checkpoint(model, directory, layers, record: RouterRecord, *, overwrite: bool = False,
                           extra_files: dict[str, str] | None = None) -> Path:
    """Write the routers of ``layers`` and ``record`` atomically to ``directory``; refuse to replace one unless
    ``overwrite``.

    ``extra_files`` (name -> text, e.g. a training log) land in the same directory, in the same rename.  Routers
    that are not finite are refused: nothing is written.
    """
    from safetensors.torch import save

    directory = Path(directory)
    ensure_new_output(directory, overwrite)
    weights = router_weights(model, layers)
    names = router_parameter_names(model, layers)
    tensors = {names[i]: weights[i].detach().to("cpu").contiguous().clone() for i in layers}
    require_finite(tensors, "the tuned routers", "the training diverged: train again with a lower --lr")
    first = weights[layers[0]]
    metadata = {
        "format_version": FORMAT_VERSION, "base_model": str(record.base_model), "revision": record.revision,
        "method": record.method, "model_type": spec_for(model).model_type, "layers": sorted(layers),
        "num_experts": first.shape[0], "hidden_size": first.shape[1],
        "base_router_fingerprint": record.base_fingerprint, "roma_eval_version": __version__,
        "training_config": record.training_config,
    }
    files = {WEIGHTS_NAME: save(tensors, metadata={"format": "pt"}),
             CONFIG_NAME: json.dumps(metadata, indent=2, sort_keys=True) + "\n", CARD_NAME: model_card(metadata),
             **(extra_files or {})}
    needed = sum(len(data if isinstance(data, bytes) else data.encode("utf-8")) for data in files.values())
    with staged_directory(directory, needed) as staging:  # overwrite: the old one goes only once the new one is whole
        for name, data in files.items():
            write_file(staging / name, data)
    return directory


def _resolve(source: str, revision: str | None) -> Path:
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists() or source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise RomaEvalError(f"router_checkpoint {source!r} is neither a checkpoint directory nor a hub "
                            "repo id (owner/name); give the directory written by `roma-eval train`")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(source, revision=revision, allow_patterns=[WEIGHTS_NAME, CONFIG_NAME]))
    except Exception as exc:  # offline, missing repo, auth: all the same fix for the user
        raise RomaEvalError(f"router_checkpoint {source!r} could not be fetched from the hub ({type(exc).__name__}); "
                            "check the repo id, or download it and pass its local directory") from None


def load_router_checkpoint(source, revision: str | None = None) -> RouterCheckpoint:
    """Read a checkpoint from a local directory or a hub repo id."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = _resolve(str(source), revision)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise RomaEvalError(f"router checkpoint {directory} has no {path.name}; "
                                "it is not a complete roma-eval router checkpoint (re-save it with `roma-eval train`)")
    try:
        metadata = json.loads(config_path.read_text())
        layers = [int(i) for i in metadata["layers"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise RomaEvalError(f"{config_path} is not valid router metadata ({exc}); re-save the checkpoint") from None
    try:
        raw = load_file(weights_path)
    except (SafetensorError, OSError) as exc:
        raise RomaEvalError(f"{weights_path} is not a readable safetensors file ({exc}); "
                            "it may be truncated: copy or re-save the checkpoint") from None
    require_finite(raw, weights_path, "the training that wrote it diverged: train again with a lower --lr")
    by_layer = {layer_of_parameter(name): tensor for name, tensor in raw.items()}
    if sorted(k for k in by_layer if k is not None) != sorted(layers) or len(by_layer) != len(raw):
        raise RomaEvalError(f"{weights_path} holds {sorted(raw)} but {config_path.name} lists layers {layers}; "
                            "the two files do not belong together")
    return RouterCheckpoint({i: by_layer[i] for i in layers}, metadata)


def apply_router_checkpoint(model, checkpoint: RouterCheckpoint, force: bool = False) -> None:
    """Copy the checkpoint's routers into ``model`` (in place), after checking it is the right base."""
    meta = checkpoint.metadata
    model_type = spec_for(model).model_type
    if meta.get("model_type") != model_type:
        raise RomaEvalError(f"router checkpoint was made for a {meta.get('model_type')!r} model "
                            f"({meta.get('base_model')}), not this {model_type!r} one; load it onto its base model")
    weights = router_weights(model)
    for layer, weight in checkpoint.tensors.items():
        if layer not in weights:
            raise RomaEvalError(f"router checkpoint tunes layer {layer}, which is not a MoE layer of this model "
                                f"(MoE layers: {sorted(weights)}); load it onto its base model "
                                f"{meta.get('base_model')}")
        if tuple(weight.shape) != tuple(weights[layer].shape):
            raise RomaEvalError(f"router checkpoint layer {layer} has shape {tuple(weight.shape)} but this model's "
                                f"router is {tuple(weights[layer].shape)}; load it onto its base model "
                                f"{meta.get('base_model')}")
    if not force and router_fingerprint(model) != meta.get("base_router_fingerprint"):
        raise RomaEvalError(f"router checkpoint was tuned on {meta.get('base_model')}, whose routers differ from "
                            "this model's; load the right base model, or pass force_router_checkpoint=True")
    with torch.no_grad():
        for layer, weight in checkpoint.tensors.items():
            weights[layer].copy_(weight)


@contextmanager
def routers_restored(model):
    """The routers of ``model`` as they are on entering, put back on leaving (after an error too): router checkpoints
    applied inside (``apply_router_checkpoint``) are evaluated or analysed one after another on one load."""
    saved = {layer: weight.detach().clone() for layer, weight in router_weights(model).items()}
    try:
        yield
    finally:
        with torch.no_grad():
            for layer, weight in router_weights(model).items():
                weight.copy_(saved[layer])

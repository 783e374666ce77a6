"""`roma-eval export`: the base model's directory with a router checkpoint's tuned routers written into its weights,
for anything that reads a hub checkpoint (lm-eval's `hf` and `vllm`, SGLang, transformers itself).

Copy-on-write.  A safetensors shard that holds a tuned router is copied and the router's bytes are overwritten in
the copy: its header, every other tensor and its length stay the base's, byte for byte.  The other shards are hard
links to the base's (symbolic links where a hard link cannot be made: another file system, or one without hard
links).  The model directory's other files (the shard index, config, generation config, tokenizer files, chat
template, remote code) are copied; weights in other formats (``*.bin`` and the like) and subdirectories are not.
The tuned weights are the checkpoint's cast to the base shard's dtype: what `--model roma` evaluates when it loads
the base in that dtype (lm-eval's default, ``dtype=auto``, does).

Beside them go the model card (README.md, ``roma_eval.model_card``) and ``roma_export.json``: the method, the base
model and revision, both router fingerprints, the tuned layers and the checkpoint's router_config.json, from which
a report labels an `hf` or `vllm` run of the directory with its method (``results.provenance.method_of``).

Where each router lives in the shards is read from the model: its skeleton (meta device, no weights) names the
routers' parameters (``routing.router_parameter_names``), and transformers' own renaming of checkpoint keys on load
maps each shard key to a parameter (Mixtral's and PhiMoE's routers are stored as ``block_sparse_moe.gate`` and loaded
as ``mlp.gate`` / ``mlp.router``).  A router that reaches the model through a conversion (fused with other tensors),
is stored quantized, or is not in the shards at all is refused: only plain weight tensors are rewritten.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

from roma_eval import __version__
from roma_eval.errors import RomaEvalError
from roma_eval.model_card import hub_id, model_card
from roma_eval.results.provenance import EXPORT_RECORD, find_artefact, parse_model_args, router_method
from roma_eval.storage import read_json_object, staged_directory, write_file

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
CARD = "README.md"
CARRIED_LOG = "training_log.jsonl"  # the checkpoint's training log: the report's training cost of the export
# Weights in formats other than safetensors: neither read nor carried (pickles are never loaded).
OTHER_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack", ".onnx")
PLAIN_DTYPES = ("F64", "F32", "F16", "BF16")  # safetensors' dtypes of an unquantized floating-point tensor
logger = logging.getLogger(__name__)


@dataclass
class Export:
    """What ``export_model`` wrote into ``output``."""

    output: Path
    rewritten: list[str]  # shards copied with the tuned routers' bytes written in
    linked: dict[str, str]  # unchanged shard -> "hard link", or "symlink (why)"
    carried: list[str]  # the model directory's other files, copied
    left_out: list[str]  # what the model directory holds that was not carried, and why
    record: dict  # roma_export.json


def model_directory(pretrained: str, revision: str | None = None) -> tuple[Path, str | None]:
    """The local directory of ``pretrained`` and the commit it is at: a directory as it is (no commit), a hub id as
    its snapshot in the HF cache (``snapshot_download``; it downloads only when the hub is reachable and
    HF_HUB_OFFLINE is not set, and never weights in other formats)."""
    path = Path(pretrained).expanduser()
    if path.is_dir():
        return path, None
    if not hub_id(pretrained):
        raise RomaEvalError(f"--pretrained {pretrained!r} is neither a model directory nor a hub id (owner/name); "
                            "give the base model's directory or hub id")
    from huggingface_hub import constants, snapshot_download

    try:
        snapshot = snapshot_download(pretrained, revision=revision, local_files_only=constants.HF_HUB_OFFLINE,
                                     ignore_patterns=[f"*{suffix}" for suffix in OTHER_WEIGHTS])
    except Exception as exc:  # not cached offline, no such repo, no access: the same fix
        raise RomaEvalError(f"--pretrained {pretrained}: not in the local hub cache and not downloadable "
                            f"({type(exc).__name__}); download it (`huggingface-cli download {pretrained}`) or give "
                            "its directory") from None
    return Path(snapshot), Path(snapshot).name


def safetensors_header(path: Path) -> tuple[dict, int]:
    """A safetensors file's tensors (name -> dtype, shape, data_offsets) and the offset where their bytes begin.
    The format: an 8-byte little-endian header length, the JSON header, then the tensors' bytes."""
    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
    except (OSError, ValueError, struct.error) as exc:
        raise RomaEvalError(f"{path} is not a readable safetensors file ({exc}); download the model again") from None
    header.pop("__metadata__", None)
    return header, 8 + length


def weight_map(directory: Path) -> dict[str, str]:
    """Checkpoint key -> the shard file holding it: the safetensors index's weight_map, or the one model.safetensors.
    A model stored in another format is refused."""
    if (directory / INDEX).is_file():
        found = (read_json_object(directory / INDEX) or {}).get("weight_map")
        if not isinstance(found, dict) or not found:
            raise RomaEvalError(f"{directory / INDEX} has no weight_map; download the model again")
        if missing := sorted({shard for shard in found.values() if not (directory / shard).is_file()}):
            raise RomaEvalError(f"{directory} lacks {', '.join(missing[:3])}, named by its {INDEX}; download the "
                                "model completely")
        return found
    if (directory / SINGLE).is_file():
        return dict.fromkeys(safetensors_header(directory / SINGLE)[0], SINGLE)
    other = sorted(p.name for p in directory.iterdir() if p.name.endswith(OTHER_WEIGHTS))
    if other:
        raise RomaEvalError(f"{directory} is stored as {other[0]}, not safetensors: roma-eval exports safetensors "
                            "only; save it as safetensors first (transformers' save_pretrained) and export that")
    raise RomaEvalError(f"{directory} holds no model weights ({SINGLE} or {INDEX}); give a complete model directory")


def _renamed_keys(skeleton, keys) -> dict[str, list[tuple[str, bool]]]:
    """Model parameter name -> the checkpoint keys that load into it, each with whether a conversion (a fusion, a
    split) takes part: transformers' own renaming of keys on load, as ``from_pretrained`` applies it."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

    transforms = get_model_conversion_mapping(skeleton)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    meta, prefix = skeleton.state_dict(), skeleton.base_model_prefix
    found: dict[str, list[tuple[str, bool]]] = {}
    for key in keys:
        name, converter = rename_source_key(key, renamings, converters, prefix, meta)
        if name not in meta and key in meta:  # as from_pretrained: a key the renaming should have left alone
            name, converter = rename_source_key(key, [], [], prefix, meta)
        found.setdefault(name, []).append((key, converter is not None))
    return found


def router_keys(skeleton, shards: dict[str, str], directory: Path) -> dict[int, str]:
    """Decoder layer -> the checkpoint key of its router weight, for every MoE layer; refused, naming the family,
    unless each is one plain floating-point tensor of the router's shape."""
    from roma_eval.routing import router_parameter_names, router_weights, spec_for

    spec = spec_for(skeleton)
    family = f"{spec.family_name} (model_type {spec.model_type!r})"
    fix = "roma-eval exports models whose routers are plain weight tensors; evaluate this one with `--model roma`"
    stored, shapes = _renamed_keys(skeleton, shards), router_weights(skeleton)
    found = {}
    for layer, name in router_parameter_names(skeleton).items():
        sources = stored.get(name, [])
        if not sources:
            raise RomaEvalError(f"{family}: the router weight {name} is not in {directory}'s shards under that name "
                                f"(renamed or quantized weights); {fix}")
        if len(sources) > 1 or sources[0][1]:
            raise RomaEvalError(f"{family}: the router weight {name} is stored fused with other tensors "
                                f"({', '.join(key for key, _ in sources[:3])}) and converted on load; {fix}")
        key = sources[0][0]
        entry = safetensors_header(directory / shards[key])[0][key]
        if entry["dtype"] not in PLAIN_DTYPES or tuple(entry["shape"]) != tuple(shapes[layer].shape):
            raise RomaEvalError(f"{family}: the router weight {key} is stored as {entry['dtype']} {entry['shape']}, "
                                f"not a plain {list(shapes[layer].shape)} floating-point tensor (quantized); {fix}")
        found[layer] = key
    return found


def read_tensors(directory: Path, shards: dict[str, str], keys) -> dict:
    """The tensors ``keys`` from the shards holding them, in their stored dtype."""
    from safetensors import safe_open

    tensors = {}
    for shard, group in groupby(sorted(keys, key=shards.__getitem__), key=shards.__getitem__):
        with safe_open(directory / shard, framework="pt") as handle:
            tensors.update({key: handle.get_tensor(key) for key in group})
    return tensors


def tuned_routers(skeleton, base: dict, checkpoint, source: str) -> tuple[dict, str, str]:
    """The checkpoint's routers applied to the base routers ``base`` (decoder layer -> tensor as stored) on the
    model's skeleton: (layer -> tuned tensor in the stored dtype, the base's router fingerprint, the export's).
    A checkpoint tuned on other base weights, another family or other shapes is refused (``checkpoint.py``)."""
    from roma_eval.checkpoint import apply_router_checkpoint
    from roma_eval.routing import router_fingerprint, router_parameter_names, router_weights

    names = router_parameter_names(skeleton)
    skeleton.load_state_dict({names[layer]: tensor for layer, tensor in base.items()}, strict=False, assign=True)
    base_fingerprint = router_fingerprint(skeleton)
    recorded = checkpoint.metadata.get("base_router_fingerprint")
    apply_router_checkpoint(skeleton, checkpoint, force=True)  # its family, layer and shape checks; then ours:
    if base_fingerprint != recorded:
        raise RomaEvalError(f"router checkpoint {source} was tuned on {checkpoint.metadata.get('base_model')}, whose "
                            f"routers differ from these (fingerprint {str(recorded)[:12]} against "
                            f"{base_fingerprint[:12]}); export it with the base model it was tuned on")
    tuned = {layer: weight.detach() for layer, weight in router_weights(skeleton, checkpoint.layers).items()}
    return tuned, base_fingerprint, router_fingerprint(skeleton)


def _raw_bytes(tensor) -> bytes:
    import torch

    return tensor.contiguous().view(torch.uint8).numpy().tobytes()


def rewrite_shard(source: Path, target: Path, tensors: dict) -> None:
    """``source`` copied to ``target`` with the bytes of ``tensors`` (key -> tensor of the stored dtype and shape)
    written over the stored ones; everything else stays as it was, byte for byte."""
    header, start = safetensors_header(source)
    shutil.copyfile(source, target)
    with open(target, "r+b") as handle:
        for key, tensor in tensors.items():
            begin, end = header[key]["data_offsets"]
            data = _raw_bytes(tensor)
            if len(data) != end - begin:
                raise RuntimeError(f"{key}: {len(data)} bytes for a stored tensor of {end - begin}")
            handle.seek(start + begin)
            handle.write(data)


def link(source: Path, target: Path) -> str:
    """``target`` made a hard link to ``source`` ("hard link"), or a symbolic link to it where the file system
    refuses a hard link ("symlink (why)")."""
    source = source.resolve()
    try:
        os.link(source, target)
        return "hard link"
    except OSError as exc:
        os.symlink(source, target)
        return f"symlink ({exc.strerror or 'no hard link'})"


def check_output(output: Path, overwrite: bool, inputs=()) -> None:
    """Refuse an output that exists and is not empty (unless ``overwrite``), is a file, or would hold one of
    ``inputs`` (the base model, the checkpoint: replacing the output would remove them)."""
    output = Path(output)
    if output.is_file():
        raise RomaEvalError(f"--output_path {output} is a file; give a directory")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise RomaEvalError(f"--output_path {output} exists and is not empty; choose another directory or pass "
                            "--overwrite")
    for path in inputs:
        if output.resolve() == Path(path).resolve() or output.resolve() in Path(path).resolve().parents:
            raise RomaEvalError(f"--output_path {output} holds {path}, which the export reads; choose another "
                                "directory")


def _carried_files(directory: Path, shards: set[str]) -> tuple[list[Path], list[str]]:
    """The model directory's files the export copies, and what it leaves out (and why)."""
    carried, left_out = [], []
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or path.name in shards or path.name == CARD:
            continue
        if path.is_dir():
            left_out.append(f"{path.name}/ (a subdirectory)")
        elif path.name.endswith(OTHER_WEIGHTS):
            left_out.append(f"{path.name} (weights in another format)")
        elif path.name.endswith(".safetensors"):
            left_out.append(f"{path.name} (not in {INDEX})")
        else:
            carried.append(path)
    return carried, left_out


def find_results(checkpoint_dir: Path, given: str | Path | None = None) -> dict | None:
    """lm-eval's results of the checkpoint's run: ``given`` (a results JSON, or a directory: its newest), else the
    newest results_*.json below the checkpoint's parent whose `roma` model_args name this checkpoint."""
    if given is not None:
        given = Path(given)
        files = sorted(given.rglob("results_*.json")) if given.is_dir() else [given]
        if not files or not files[-1].is_file() or (found := read_json_object(files[-1])) is None:
            raise RomaEvalError(f"--results {given}: no readable lm-eval results JSON there")
        return found
    newest = None
    for path in sorted(checkpoint_dir.parent.rglob("results_*.json")):
        results = read_json_object(path) or {}
        named = parse_model_args(results.get("config", {}).get("model_args")).get("router_checkpoint")
        located = find_artefact(str(named), list(path.parents)[:4], "router_config.json") if named else None
        if located is not None and located.resolve() == checkpoint_dir.resolve():
            newest = results
    return newest


def _card(record: dict, results: dict | None) -> str:
    table = None
    if results is not None:
        from roma_eval.harness import tables

        table = tables(results)
    config = {**record["router_config"], "base_model": record["base_model"], "revision": record["revision"],
              "method": record["method"]}
    return model_card(config, export=record, results_table=table)


def export_model(pretrained: str, router_checkpoint: str, output, revision: str | None = None,
                 trust_remote_code: bool = False, overwrite: bool = False, results=None) -> Export:
    """Write ``output``: ``pretrained`` (a directory or a cached hub id) with ``router_checkpoint``'s routers in its
    shards, the other shards linked, its other files copied, the model card and roma_export.json (module docstring).
    ``results``: lm-eval's results JSON of the checkpoint's run for the card (default: one found beside it)."""
    from roma_eval.checkpoint import load_router_checkpoint
    from roma_eval.model_loading import model_skeleton

    output = Path(output)
    check_output(output, overwrite)
    directory, commit = model_directory(pretrained, revision)
    check_output(output, overwrite, [directory, router_checkpoint])
    shards = weight_map(directory)
    checkpoint = load_router_checkpoint(router_checkpoint, revision=None)
    skeleton = model_skeleton(str(directory), trust_remote_code=trust_remote_code)
    keys = router_keys(skeleton, shards, directory)
    stored = read_tensors(directory, shards, keys.values())
    tuned, base_fingerprint, fingerprint = tuned_routers(skeleton, {i: stored[k] for i, k in keys.items()},
                                                         checkpoint, router_checkpoint)
    checkpoint_dir = Path(router_checkpoint)
    record = {"format_version": 1, "method": router_method(checkpoint.metadata), "base_model": pretrained,
              "revision": commit or revision or checkpoint.metadata.get("revision"),
              "model_type": checkpoint.metadata.get("model_type"), "layers": checkpoint.layers,
              "base_router_fingerprint": base_fingerprint, "router_fingerprint": fingerprint,
              "router_checkpoint": str(checkpoint_dir.resolve() if checkpoint_dir.is_dir() else router_checkpoint),
              "router_config": checkpoint.metadata,
              "roma_eval_version": __version__}
    run_results = find_results(checkpoint_dir, results) if checkpoint_dir.is_dir() or results else None
    return _write(directory, output, shards, {keys[i]: tuned[i] for i in tuned}, record, run_results, checkpoint_dir)


def _write(directory: Path, output: Path, shards: dict[str, str], tuned: dict, record: dict, results: dict | None,
           checkpoint_dir: Path) -> Export:
    """Stage the export beside ``output`` and rename it into place once whole (a failure leaves nothing)."""
    rewrite = {shards[key] for key in tuned}
    carried, left_out = _carried_files(directory, set(shards.values()))
    log = checkpoint_dir / CARRIED_LOG
    needed = sum((directory / shard).stat().st_size for shard in rewrite) + sum(p.stat().st_size for p in carried)
    linked = {}
    with staged_directory(output, needed) as staging:
        for shard in sorted(set(shards.values())):
            if shard in rewrite:
                held = {key: tensor for key, tensor in tuned.items() if shards[key] == shard}
                rewrite_shard(directory / shard, staging / shard, held)
            else:
                linked[shard] = link(directory / shard, staging / shard)
        for path in [*carried, *([log] if log.is_file() else [])]:
            shutil.copyfile(path, staging / path.name)
        record = {**record, "rewritten_shards": sorted(rewrite), "linked_shards": linked}
        write_file(staging / EXPORT_RECORD, json.dumps(record, indent=2, sort_keys=True) + "\n")
        write_file(staging / CARD, _card(record, results))
    return Export(output, sorted(rewrite), linked, [p.name for p in carried], left_out, record)

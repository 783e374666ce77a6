"""The model card (a hub ``README.md``) of a router checkpoint and of a model exported with its routers.

One writer for both, so that a checkpoint pushed with ``huggingface-cli upload`` and an exported model say the same
things: the hub's YAML metadata (``base_model`` when the base is a hub id, ``library_name``, ``tags``), the base
model and revision, the method, the tuned layers, the routers' fingerprints, the training configuration and, when
there is one, lm-eval's results table.  Only the standard library and PyYAML.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from roma_eval import registry

# A hub repo id as the hub's ``base_model`` field takes it: owner/name, nothing else.
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def hub_id(name: str) -> str | None:
    """``name`` when it is a hub repo id and not a local path (a local base cannot be the hub's base_model)."""
    name = str(name)
    return name if _HUB_ID.match(name) and not Path(name).expanduser().exists() else None


def _metadata(config: dict, exported: bool) -> str:
    import yaml

    method = config.get("method") or "routers"
    meta = {}
    if base := hub_id(config.get("base_model", "")):
        # The hub's relation of a repo to its base: the full model with new weights, or what is applied to it.
        meta.update(base_model=base, base_model_relation="finetune" if exported else "adapter")
    if exported:
        meta["library_name"] = "transformers"
    meta["tags"] = ["roma-eval", "moe", method]
    return f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n"


def _facts(config: dict, export: dict | None) -> list[str]:
    method = config.get("method")
    code = [("base model", config.get("base_model")), ("revision", config.get("revision") or "not recorded"),
            ("model type", config.get("model_type")), ("tuned layers (decoder-layer indices)", config.get("layers")),
            ("router fingerprint of the base", config.get("base_router_fingerprint"))]
    if export:
        code.append(("router fingerprint of this model", export.get("router_fingerprint")))
    rows = [("method", f"{registry.label(method)} (`{method}`)" if method else "not recorded (routers set by hand)"),
            *((key, f"`{value}`") for key, value in code), ("roma-eval version", config.get("roma_eval_version"))]
    return ["| | |", "|---|---|", *(f"| {key} | {value} |" for key, value in rows)]


def _usage(config: dict, export: dict | None) -> list[str]:
    base = config.get("base_model")
    if export:
        return ["Every weight but the tuned routers is the base model's; load it as the base model is loaded:", "",
                "```bash", "lm_eval --model hf --model_args pretrained=THIS_DIRECTORY --tasks ...",
                "lm_eval --model vllm --model_args pretrained=THIS_DIRECTORY,tensor_parallel_size=1 --tasks ...",
                "```"]
    return ["The tuned routers only; apply them to the base model with roma-eval's lm-eval model, or write a "
            "full model directory with them for any engine:", "",
            "```bash", f"lm_eval --model roma --model_args pretrained={base},router_checkpoint=THIS_DIRECTORY "
            "--tasks ...", f"roma-eval export --pretrained {base} --router_checkpoint THIS_DIRECTORY "
            "--output_path DIR", "```"]


def model_card(config: dict, export: dict | None = None, results_table: str | None = None) -> str:
    """The README.md of a router checkpoint (``config``: its router_config.json) or, with ``export`` (the
    export's roma_export.json), of the model exported with it; ``results_table``: lm-eval's table of its run."""
    method, base = config.get("method"), config.get("base_model")
    label = registry.label(method) if method else "a method not recorded"
    lines = [_metadata(config, export is not None), f"# {base} with {label} routers", "",
             f"{'A model exported' if export else 'Router weights'} by roma-eval: the routers of MoE layers "
             f"{config.get('layers')} of `{base}`, tuned with {label}."]
    if not hub_id(config.get("base_model", "")):
        lines += ["", "The base model is a local directory: add `base_model: <its hub id>` to the metadata above "
                  "before uploading."]
    lines += ["", *_facts(config, export), "", "## Use", "", *_usage(config, export)]
    lines += ["", "## Training configuration", "", "```json",
              json.dumps(config.get("training_config") or {}, indent=1, sort_keys=True), "```"]
    if results_table:
        lines += ["", "## Results (lm-eval)", "", results_table.strip()]
    return "\n".join(lines) + "\n"

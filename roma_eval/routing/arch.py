"""Per-architecture knowledge of MoE routers: where they are, what they are called and how logits
become top-k weights.

This module and its registry (``families.py``, one entry per family; ``spec.py``, the record and the
router output layouts) are the only place in roma-eval that knows MoE internals.  Every supported
family has a router module at ``<decoder layer>.<ArchSpec.router_path>`` whose parameter
``<ArchSpec.weight_name>`` maps a hidden state to the router logits (the parameter RoMA tunes and a
router checkpoint stores).  We split a routing in two: ``scores(logits)`` (the per-expert routing
scores) and ``select(selector, logits, scores, router_args)`` (top-k selection and weights).  Each
``select`` mirrors the family's source line for line, so that a routing recomputed here is
bit-identical to the router's own (tests check this).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from contextlib import ExitStack, contextmanager
from operator import attrgetter

import torch

from roma_eval.errors import RomaEvalError
from roma_eval.routing.families import SPECS_LIST, refusal
from roma_eval.routing.spec import ArchSpec

DEFAULT_LAST_N_LAYERS = 5  # RoMA/C3PO: the last 5 MoE layers are the "critical" ones (both papers)

SPECS: dict[str, ArchSpec] = {model_type: spec for spec in SPECS_LIST for model_type in spec.model_types}
SUPPORTED = ", ".join(spec.model_type for spec in SPECS_LIST)


def _unwrap(model):
    while hasattr(model, "module") and not hasattr(model, "config"):  # DDP / accelerate wrappers
        model = model.module
    return model


def spec_for(model) -> ArchSpec:
    model = _unwrap(model)
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in SPECS and refusal(model_type):
        raise RomaEvalError(f"model_type {model_type!r} is not supported by roma-eval: {refusal(model_type)}")
    if model_type not in SPECS:
        raise RomaEvalError(f"model_type {model_type!r} has no recognised MoE routers; "
                            f"roma-eval supports {SUPPORTED}")
    spec = SPECS[model_type]
    problem = spec.check(config) if spec.check is not None else None
    if problem:
        raise RomaEvalError(problem)
    return spec


def _from_lm(model, path: str):
    """``path`` (e.g. "model.layers") from the causal LM, or from its inner model when given that."""
    try:
        return attrgetter(path)(model)
    except AttributeError:
        tail = path.partition(".")[2]
        return attrgetter(tail)(model) if tail else None


def decoder_layers(model) -> Sequence[torch.nn.Module]:
    model = _unwrap(model)
    path = spec_for(model).layers_path
    try:
        layers = _from_lm(model, path)
    except AttributeError:
        layers = None
    if layers is None:
        raise RomaEvalError(f"{type(model).__name__} has no decoder layers at .{path}; "
                            "load the model with AutoModelForCausalLM")
    return layers


def final_norm(model) -> torch.nn.Module:
    """The norm applied after the last decoder layer."""
    return _from_lm(_unwrap(model), spec_for(model).final_norm_path)


def routers(model) -> dict[int, torch.nn.Module]:
    """Decoder-layer index -> router module, for every MoE layer (dense layers are skipped)."""
    spec = spec_for(model)
    find = attrgetter(spec.router_path)
    found = {}
    for i, layer in enumerate(decoder_layers(model)):
        try:
            gate = find(layer)
        except AttributeError:
            continue
        if type(gate).__name__ == spec.router_class:
            found[i] = gate
    if not found:
        raise RomaEvalError(f"model_type {spec.model_type!r} model has no MoE layers (every layer is dense); "
                            "RoMA needs a Mixture-of-Experts model")
    return found


def moe_blocks(model) -> dict[int, torch.nn.Module]:
    """Decoder-layer index -> the MoE block holding the router (the router's parent module), for every MoE layer."""
    parent = spec_for(model).router_path.rpartition(".")[0]
    layers = decoder_layers(model)
    return {i: attrgetter(parent)(layers[i]) if parent else layers[i] for i in routers(model)}


@contextmanager
def gradient_path(model):
    """Inside the block every MoE block's eval-mode forward carries gradients to its routing weights and its input
    while computing exactly what it computes outside (``ArchSpec.block``): nothing changes for transformers
    families; DeepSeekMoE's no-grad ``moe_infer`` is replaced by its differentiable mirror.  Every MoE layer, not
    only the steered or tuned ones: a gradient from the loss reaches a router through the layers above it."""
    block = spec_for(model).block
    with ExitStack() as stack:
        for module in moe_blocks(model).values():
            stack.enter_context(block.gradient_path(module))
        yield


def selectors(model) -> dict[int, torch.nn.Module]:
    """Decoder-layer index -> the module whose attributes (top_k, ...) ``ArchSpec.select`` reads: the router,
    or the block around it when the router only computes logits (DBRX)."""
    spec = spec_for(model)
    gates = routers(model)
    if not spec.selector_path:
        return gates
    layers = decoder_layers(model)
    return {i: attrgetter(spec.selector_path)(layers[i]) for i in gates}


def router_weights(model, layers=None) -> dict[int, torch.nn.Parameter]:
    """Decoder-layer index -> the router parameter of each MoE layer (of ``layers`` if given)."""
    weight = attrgetter(spec_for(model).weight_name)
    gates = routers(model)
    return {i: weight(gates[i]) for i in (sorted(gates) if layers is None else layers)}


def router_parameter_names(model, layers=None) -> dict[int, str]:
    """Decoder-layer index -> the router parameter's name in ``model.state_dict()`` (what a full checkpoint
    of the model calls it, and what a router checkpoint stores it as)."""
    names = {id(p): n for n, p in _unwrap(model).named_parameters(remove_duplicate=False)}
    return {i: names[id(weight)] for i, weight in router_weights(model, layers).items()}


_LAYER_IN_NAME = re.compile(r"(?:^|\.)(?:layers|blocks)\.(\d+)\.")


def layer_of_parameter(name: str) -> int | None:
    """The decoder-layer index in a parameter name of any supported family ("model.layers.3.mlp.gate.weight",
    DBRX's "transformer.blocks.3.ffn.router.layer.weight" -> 3), None when it names no decoder layer."""
    match = _LAYER_IN_NAME.search(name)
    return int(match[1]) if match else None


def router_fingerprint(model) -> str:
    """sha256 of every router's weights, rounded to bfloat16 so that a model loaded in float32,
    bfloat16 or float16 from the same bf16/fp32 checkpoint fingerprints the same."""
    digest = hashlib.sha256()
    for layer, weight in router_weights(model).items():
        weight = weight.detach().to("cpu", torch.bfloat16).contiguous()
        digest.update(f"{layer}:{tuple(weight.shape)}".encode())
        digest.update(weight.view(torch.int16).numpy().tobytes())
    return digest.hexdigest()


def num_experts(model) -> int:
    return next(iter(router_weights(model).values())).shape[0]


def resolve_layers(model, layers=None) -> list[int]:
    """Decoder-layer indices of the MoE layers to read or steer.

    ``layers``: None (the last 5 MoE layers, the paper's best; all of them when there are fewer), ``"all"``,
    ``"first:N"``, ``"middle:N"``, ``"last:N"``, or decoder-layer indices (a list or a comma-separated string;
    negative indices count from the last decoder layer).
    """
    moe = sorted(routers(model))
    if layers is None:  # the paper's last 5, or every MoE layer of a smaller model
        layers = f"last:{min(DEFAULT_LAST_N_LAYERS, len(moe))}"
    if isinstance(layers, str):
        name, _, count = layers.partition(":")
        if name == "all":
            return moe
        if name in ("first", "middle", "last") and count.isdigit() and int(count) > 0:
            n = int(count)
            if n > len(moe):
                raise RomaEvalError(f"layers={layers!r} asks for {n} MoE layers but the model has {len(moe)}; "
                                    f"use {name}:{len(moe)} or all")
            start = {"first": 0, "middle": (len(moe) - n) // 2, "last": len(moe) - n}[name]
            return moe[start:start + n]
        try:
            layers = [int(x) for x in layers.split(",")]
        except ValueError:
            raise RomaEvalError(f"layers={layers!r} is not understood; use all, first:N, middle:N, last:N "
                                "or comma-separated layer indices") from None
    n_layers = len(decoder_layers(model))
    chosen = []
    for index in layers:
        absolute = index + n_layers if index < 0 else index
        if absolute not in moe:
            raise RomaEvalError(f"layer index {index} is not a MoE layer of this model; "
                                f"choose among {moe[0]}..{moe[-1]} (MoE layers: {moe})")
        chosen.append(absolute)
    return sorted(set(chosen))

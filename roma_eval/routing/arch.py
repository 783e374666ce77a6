"""Per-architecture knowledge of MoE routers: where they are, what they are called and how logits
become top-k weights.

This module is the only place in roma-eval that knows transformers' MoE internals.  Every supported
family has a router module at ``model.model.layers[i].<ArchSpec.router_path>`` whose forward returns
``(router_logits, topk_weights, topk_indices)`` and whose parameter ``<ArchSpec.weight_name>`` maps a
hidden state to the router logits (the parameter RoMA tunes and a router checkpoint stores).  We split that
forward in two: ``scores(logits)`` (the per-expert routing scores) and ``select(gate, scores, logits_dtype)``
(top-k selection and weights).  Each ``select`` mirrors the transformers source line for line, so
that a routing recomputed here is bit-identical to the router's own (tests check this).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter

import torch

from roma_eval.errors import RomaEvalError

DEFAULT_LAST_N_LAYERS = 5  # RoMA/C3PO: the last 5 MoE layers are the "critical" ones (FACTS.md)


def _softmax_scores(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.float(), dim=-1)


def _sigmoid_scores(logits: torch.Tensor) -> torch.Tensor:
    return logits.sigmoid()


def _select_softmax_topk(gate, scores, logits_dtype):
    # OlmoeTopKRouter / Qwen2MoeTopKRouter / Qwen3MoeTopKRouter
    top_value, top_index = torch.topk(scores, gate.top_k, dim=-1)
    if gate.norm_topk_prob:
        top_value = top_value / top_value.sum(dim=-1, keepdim=True)
    return top_value.to(logits_dtype), top_index


def _select_mixtral(gate, scores, logits_dtype):
    # MixtralTopKRouter: always renormalised, weights stay float32.
    top_value, top_index = torch.topk(scores, gate.top_k, dim=-1)
    return top_value / top_value.sum(dim=-1, keepdim=True), top_index


def _group_mask(gate, group_scores: torch.Tensor) -> torch.Tensor:
    group_idx = torch.topk(group_scores, k=gate.topk_group, dim=-1, sorted=False)[1]
    group_mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1)
    per_group = gate.num_experts // gate.num_group
    return group_mask.unsqueeze(-1).expand(-1, gate.num_group, per_group).reshape(-1, gate.num_experts).bool()


def _select_deepseek_v2(gate, scores, logits_dtype):
    # DeepseekV2TopkRouter: greedy or group-limited greedy on softmax scores, times routed_scaling_factor.
    if gate.topk_method == "group_limited_greedy":
        group_scores = scores.view(-1, gate.num_group, gate.num_experts // gate.num_group).max(dim=-1).values
        scores = scores.masked_fill(~_group_mask(gate, group_scores), 0.0)
    elif gate.topk_method != "greedy":
        raise RomaEvalError(f"DeepSeek-V2 topk_method {gate.topk_method!r} is not supported; "
                            "use 'greedy' or 'group_limited_greedy'")
    top_value, top_index = torch.topk(scores, k=gate.top_k, dim=-1, sorted=False)
    return top_value * gate.routed_scaling_factor, top_index


def _select_deepseek_v3(gate, scores, logits_dtype):
    # DeepseekV3TopkRouter: sigmoid scores; the correction bias steers the choice but not the weights;
    # groups ranked by the sum of their top-2 biased scores.
    for_choice = scores + gate.e_score_correction_bias
    group_scores = for_choice.view(-1, gate.num_group, gate.num_experts // gate.num_group).topk(2,
                                                                                                dim=-1)[0].sum(dim=-1)
    for_choice = for_choice.masked_fill(~_group_mask(gate, group_scores), float("-inf"))
    top_index = torch.topk(for_choice, k=gate.top_k, dim=-1, sorted=False)[1]
    top_value = scores.gather(1, top_index)
    if gate.norm_topk_prob:
        top_value = top_value / (top_value.sum(dim=-1, keepdim=True) + 1e-20)
    return top_value * gate.routed_scaling_factor, top_index


def _logit(p: torch.Tensor) -> torch.Tensor:
    return torch.log(p) - torch.log1p(-p)


@dataclass(frozen=True)
class ArchSpec:
    """How one MoE family routes.  ``scores`` are what probe returns and what "scores" overrides replace."""

    model_type: str
    router_class: str
    scores: Callable[[torch.Tensor], torch.Tensor]
    select: Callable
    # Inverse of ``scores`` up to softmax's shift invariance, so a steered router can report logits
    # consistent with the scores it used.
    scores_to_logits: Callable[[torch.Tensor], torch.Tensor]
    score_kind: str  # "softmax" (a distribution over experts) or "sigmoid" (independent per expert)
    router_path: str = "mlp.gate"  # the router module inside a decoder layer
    weight_name: str = "weight"  # the router's (n_experts, hidden) parameter: logits = hidden @ weight.T


_SOFTMAX = dict(scores=_softmax_scores, scores_to_logits=torch.log, score_kind="softmax")
SPECS: dict[str, ArchSpec] = {
    spec.model_type: spec
    for spec in (
        ArchSpec("olmoe", "OlmoeTopKRouter", select=_select_softmax_topk, **_SOFTMAX),
        ArchSpec("qwen2_moe", "Qwen2MoeTopKRouter", select=_select_softmax_topk, **_SOFTMAX),
        ArchSpec("qwen3_moe", "Qwen3MoeTopKRouter", select=_select_softmax_topk, **_SOFTMAX),
        ArchSpec("mixtral", "MixtralTopKRouter", select=_select_mixtral, **_SOFTMAX),
        ArchSpec("deepseek_v2", "DeepseekV2TopkRouter", select=_select_deepseek_v2, **_SOFTMAX),
        ArchSpec("deepseek_v3", "DeepseekV3TopkRouter", select=_select_deepseek_v3,
                 scores=_sigmoid_scores, scores_to_logits=_logit, score_kind="sigmoid"),
    )
}
SUPPORTED = ", ".join(SPECS)


def _unwrap(model):
    while hasattr(model, "module") and not hasattr(model, "config"):  # DDP / accelerate wrappers
        model = model.module
    return model


def spec_for(model) -> ArchSpec:
    model = _unwrap(model)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in SPECS:
        raise RomaEvalError(f"model_type {model_type!r} has no recognised MoE routers; "
                            f"roma-eval supports {SUPPORTED}")
    return SPECS[model_type]


def decoder_layers(model) -> Sequence[torch.nn.Module]:
    model = _unwrap(model)
    inner = getattr(model, "model", model)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise RomaEvalError(f"{type(model).__name__} has no decoder layers at .model.layers; "
                            "load the model with AutoModelForCausalLM")
    return layers


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


def router_weights(model, layers=None) -> dict[int, torch.nn.Parameter]:
    """Decoder-layer index -> the router parameter of each MoE layer (of ``layers`` if given)."""
    name = spec_for(model).weight_name
    gates = routers(model)
    return {i: getattr(gates[i], name) for i in (sorted(gates) if layers is None else layers)}


def router_parameter_names(model, layers=None) -> dict[int, str]:
    """Decoder-layer index -> the router parameter's name in ``model.state_dict()`` (what a full checkpoint
    of the model calls it, and what a router checkpoint stores it as)."""
    names = {id(p): n for n, p in _unwrap(model).named_parameters(remove_duplicate=False)}
    return {i: names[id(weight)] for i, weight in router_weights(model, layers).items()}


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

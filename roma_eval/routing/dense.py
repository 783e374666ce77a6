"""Dense router gradients for sparse MoE layers: Dense BP (Panda et al., "Dense Backpropagation Improves Training
for Sparse Mixture-of-Experts", arXiv 2504.12463, NeurIPS 2025; their estimator is called "Default MoE").

A top-k MoE layer outputs y = Σ_{j∈T(x)} w_j E_j(x): only the k chosen experts run, so the router's scores
p = scores(W x) (softmax over all experts) receive a gradient only through the chosen ones; ∂L/∂p_j = 0 for every
expert j outside T(x).  A dense MoE would give ∂L/∂p_j = ⟨∂L/∂y, E_j(x)⟩ for every j.  Default MoE approximates the
missing expert outputs E_j(x), j ∉ T(x), by a *default output* Ê_j: an exponential moving average of expert j's
outputs on the tokens that were routed to it, Ê_j ← β Ê_j + (1 − β) mean_{x: j∈T(x)} E_j(x), so the router gets
∂L/∂p_j = ⟨∂L/∂y, Ê_j⟩ for the unchosen experts at no extra expert computation.

In routing terms, inside ``dense_router_gradient`` every chosen MoE layer outputs

    y' = y + Σ_{j∉T(x)} (p_j − sg(p_j)) · D_j(x)            (sg: stop-gradient)

whose *value* is exactly y (p_j − sg(p_j) is exactly 0.0), so the model computes what the sparse model computes,
bit for bit, while the backward pass gives every router score a gradient.  ``D_j(x)`` is

  - ``estimator="default"``: the EMA default output Ê_j (Default MoE; updated from every forward that runs with
    gradients enabled, from the non-padding tokens routed to j);
  - ``estimator="exact"``: E_j(x) itself, computed by running every expert on every token (the exact dense
    gradient at the sparse forward, as DenseMixer does; E times the experts' cost: for tests and small models).

Choices the Dense-BP paper does not settle for router *post*-training (docs/baselines.md):
  - Default MoE pretrains with the default outputs; here the model is a pretrained sparse MoE that is evaluated
    sparse, so the forward value stays the sparse model's (straight-through) and only the router's gradient is
    densified.  The experts are frozen, so their gradients do not matter.
  - p are the router's scores over all experts (``ArchSpec.scores``: softmax, or DeepSeek-V3's sigmoid), without
    a family's top-k renormalisation or scaling; for OLMoE (no renormalisation) p_j is exactly the weight expert j
    would get if chosen, which is the paper's formulation.
  - An expert never routed to yet has no default output and adds nothing; its first observed mean starts the EMA
    (no zero start that would shrink early defaults).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from roma_eval.errors import RomaEvalError
from roma_eval.routing.arch import moe_blocks, num_experts, resolve_layers, routers, spec_for

ESTIMATORS = ("default", "exact")
DEFAULT_BETA = 0.9


def dense_gradient_problem(model) -> str | None:
    """None when dense router gradients can run on ``model``; otherwise one sentence saying why not."""
    spec = spec_for(model)
    if not spec.output.holds_index:
        return (f"Dense BP needs a router that returns its top-k choice; the {spec.model_type!r} router returns "
                f"{spec.output.name!r}")
    return None


def routed_block(model, layer: int) -> torch.nn.Module:
    """The MoE block of MoE layer ``layer``, checked to hold routed experts (``ArchSpec.block`` says how it runs
    them: one ``experts(hidden_states, top_k_index, top_k_weights)`` module, or DeepSeekMoE's list of experts)."""
    block = moe_blocks(model)[layer]
    if not spec_for(model).block.has_experts(block):
        raise RomaEvalError(f"layer {layer} of this {spec_for(model).model_type!r} model has no routed experts in "
                            f"{type(block).__name__}; dense router gradients need a top-k MoE layer")
    return block


@torch.no_grad()
def expert_outputs(model, block: torch.nn.Module, hidden: torch.Tensor, index: torch.Tensor,
                   weight_dtype: torch.dtype) -> torch.Tensor:
    """E_{index[t, s]}(hidden[t]) for every token t and slot s: (tokens, slots, hidden), through the block's own
    experts (``ArchSpec.block.expert_outputs``)."""
    return spec_for(model).block.expert_outputs(block, hidden, index, weight_dtype)


@dataclass
class DefaultOutputs:
    """Default MoE's default outputs: per layer, per expert, the EMA of its outputs (float32) and whether the
    expert has been seen (routed to by at least one token)."""

    beta: float = DEFAULT_BETA
    vectors: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (experts, hidden)
    seen: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (experts,) bool
    # With several processes sharing a batch: (sums, counts) -> their sums over the processes, so that every process
    # steps the EMA with the whole batch's means, the one-process run's (each process then calls ``update`` as
    # often as the others, once per layer per training forward).
    across: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None

    def update(self, layer: int, index: torch.Tensor, outputs: torch.Tensor, keep: torch.Tensor | None,
               n_experts: int) -> None:
        """One EMA step from a forward's chosen (token, slot) outputs; ``keep`` (tokens,) drops padding tokens."""
        flat_index = index.reshape(-1)
        flat_out = outputs.reshape(flat_index.shape[0], -1).float()
        if keep is not None:
            rows = keep.repeat_interleave(index.shape[1])
            flat_index, flat_out = flat_index[rows], flat_out[rows]
        sums = flat_out.new_zeros(n_experts, flat_out.shape[1]).index_add_(0, flat_index, flat_out)
        counts = torch.bincount(flat_index, minlength=n_experts).to(flat_out.dtype)
        if self.across is not None:
            sums, counts = self.across(sums, counts)
        hit = counts > 0
        mean = sums[hit] / counts[hit].unsqueeze(1)
        vectors = self.vectors.setdefault(layer, flat_out.new_zeros(n_experts, flat_out.shape[1]))
        seen = self.seen.setdefault(layer, torch.zeros(n_experts, dtype=torch.bool, device=flat_out.device))
        old = vectors[hit]
        vectors[hit] = torch.where(seen[hit].unsqueeze(1), self.beta * old + (1 - self.beta) * mean, mean)
        seen |= hit


class DenseGradient:
    """What ``dense_router_gradient`` yields: ``token_mask`` (batch, seq) marks the real tokens of the next
    forwards (the EMA skips padding; None: every token), ``update`` whether forwards with gradients enabled
    update the default outputs, ``defaults`` the default outputs themselves."""

    def __init__(self, estimator: str, defaults: DefaultOutputs):
        self.estimator = estimator
        self.defaults = defaults
        self.token_mask: torch.Tensor | None = None
        self.update = True
        self._logits: dict[int, torch.Tensor] = {}
        self._inside = False

    def _keep(self, tokens: int, device) -> torch.Tensor | None:
        mask = self.token_mask
        if mask is None or mask.numel() != tokens:
            return None
        return mask.reshape(-1).to(device=device, dtype=torch.bool)


@contextmanager
def dense_router_gradient(model, layers=None, estimator: str = "default", defaults: DefaultOutputs | None = None,
                          beta: float = DEFAULT_BETA):
    """Inside the block, the MoE layers ``layers`` (default: the last 5) give their routers a dense gradient while
    computing exactly what they compute without it (module docstring).  ``defaults`` carries Default MoE's EMA
    across calls (pass the same object to every training step); yields a :class:`DenseGradient`."""
    if estimator not in ESTIMATORS:
        raise RomaEvalError(f"dense gradient estimator {estimator!r} is unknown; use one of {', '.join(ESTIMATORS)}")
    if not 0 <= beta < 1:
        raise RomaEvalError(f"beta={beta}: the EMA coefficient must be in [0, 1)")
    spec = spec_for(model)
    if problem := dense_gradient_problem(model):
        raise RomaEvalError(problem)
    gates = routers(model)
    layers = resolve_layers(model, layers)
    n_experts = num_experts(model)
    state = DenseGradient(estimator, defaults if defaults is not None else DefaultOutputs(beta))
    handles = []

    def gate_hook(layer):
        def hook(module, args, output):
            state._logits[layer] = spec.output.logits(module, args, output)
        return hook

    def experts_hook(layer, block):
        def hook(hidden, index, weights, output):
            if state._inside:  # our own calls of the experts below
                return output
            logits = state._logits.pop(layer, None)
            if logits is None or logits.shape[0] != hidden.shape[0]:
                raise RomaEvalError(f"layer {layer}: the experts ran without their router's logits; dense router "
                                    "gradients need the router to run right before its experts")
            p = spec.scores(logits)  # (tokens, experts), with the router's graph
            unchosen = torch.ones_like(p, dtype=torch.bool).scatter(1, index, False)
            coefficient = (p - p.detach()) * unchosen  # value exactly 0, gradient dp_j on the unchosen experts
            state._inside = True
            try:
                if estimator == "exact":
                    extra = torch.zeros(hidden.shape[0], output.shape[-1], dtype=torch.float32, device=output.device)
                    for j in range(n_experts):
                        out_j = expert_outputs(model, block, hidden, torch.full_like(index[:, :1], j),
                                               weights.dtype)[:, 0]
                        extra = extra + coefficient[:, j:j + 1] * out_j.float()
                else:
                    if state.update and torch.is_grad_enabled():
                        chosen = expert_outputs(model, block, hidden, index, weights.dtype)
                        state.defaults.update(layer, index, chosen, state._keep(hidden.shape[0], hidden.device),
                                              n_experts)
                    vectors = state.defaults.vectors.get(layer)
                    if vectors is None:
                        return output
                    extra = coefficient @ vectors.to(coefficient.device)
            finally:
                state._inside = False
            return output + extra.to(output.dtype)
        return hook

    try:
        for layer in layers:
            block = routed_block(model, layer)
            handles.append(gates[layer].register_forward_hook(gate_hook(layer)))
            handles.append(spec.block.hook_routed(block, experts_hook(layer, block)))
        yield state
    finally:
        for handle in handles:
            handle.remove()

"""What roma-eval needs to know about one MoE family: the ``ArchSpec`` record and the router output layouts.

A family's router is a module inside each MoE decoder layer (``ArchSpec.router_path``) holding one
(n_experts, hidden) parameter (``ArchSpec.weight_name``) that maps a token's hidden state to router
logits.  What the module *returns* differs by family; a ``RouterOutput`` says how to read the logits
from a call of it and how to write a steered routing back:

  - ``TRIPLE``: ``(logits, top-k weights, top-k indices)`` — the ``*TopKRouter`` of most families;
  - ``LOGITS_ONLY``: the logits alone, the enclosing block selects (DBRX): steering rewrites the logits
    and the block's own code makes the choice;
  - ``DENSE_SCORES_LOGITS``: ``(dense per-expert weights, zero off the top-k; logits)`` (Llama 4); its
    ``select`` returns that dense matrix as the weights;
  - ``INDEX_WEIGHT_AUX``: ``(top-k indices, top-k weights, aux loss)`` and no logits (DeepSeekMoE's
    remote-code ``MoEGate``): the logits are recomputed from the gate's input and weight, the same
    ``F.linear`` the gate runs.

Each family's ``select`` mirrors its transformers (or remote) source line for line, so a routing
recomputed here is bit-identical to the router's own.

Two more layouts say how the rest of a family's decoder runs:

  - ``LayerOutput``: what a decoder layer returns — its hidden states (``TENSOR_LAYER``, transformers 5), or
    the transformers 4.x tuple ``(hidden_states, [attention weights], [cache])`` that remote code of that era
    returns and its model loop reads as ``layer_outputs[0]`` (``LEGACY_TUPLE_LAYER``, DeepSeekMoE).  A layer
    that ``partial.run_from_layer`` skips returns its input in that same form.
  - ``MoEBlock``: how the MoE block around the router combines its routed experts, how to run one expert on
    given tokens (Dense BP), and a path through the block that carries gradients in eval mode.  transformers
    blocks call one ``experts`` module as ``experts(hidden, top_k_index, top_k_weights)`` and are
    differentiable as they are (``EXPERTS_MODULE``).  DeepSeekMoE's remote code keeps a ``ModuleList`` of
    experts and, in eval mode, sums them in ``moe_infer`` under ``@torch.no_grad()``; its training branch
    duplicates tokens and adds the gate's load-balancing loss.  ``ModuleListBlock`` shadows ``moe_infer`` on
    the block with a mirror of it that computes the same sums in the same order, bit for bit, without the
    no-grad decorator (``families._deepseek_moe_infer``), so the model stays in eval mode — no auxiliary loss,
    no dropout, no token duplication — and gradients reach the routing weights and the block's input.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from types import MethodType

import torch
import torch.nn.functional as F

# Scores: the per-expert routing scores over *all* experts ("routing weights" r_i, C3PO's ω).

def softmax_float(logits: torch.Tensor) -> torch.Tensor:
    """softmax over experts in float32 (routers that call softmax(logits, dtype=torch.float) or on float logits)."""
    return torch.softmax(logits.float(), dim=-1)


def softmax_same_dtype(logits: torch.Tensor) -> torch.Tensor:
    """softmax over experts in the logits' own dtype (DBRX, DeepSeekMoE: ``logits.softmax(-1)``)."""
    return torch.softmax(logits, dim=-1)


def sigmoid(logits: torch.Tensor) -> torch.Tensor:
    """independent per-expert sigmoid affinities (DeepSeek-V3 family, LFM2, ...)."""
    return logits.sigmoid()


def sigmoid_float(logits: torch.Tensor) -> torch.Tensor:
    """sigmoid in float32 (Llama 4: ``sigmoid(scores.float())``)."""
    return logits.float().sigmoid()


# Inverses of the scores, up to softmax's shift: a steered router's logits implied by given scores.
# Clamped into the open domain so that equal scores always map to equal (finite) logits.

def log(p: torch.Tensor) -> torch.Tensor:
    return torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))


def logit(p: torch.Tensor) -> torch.Tensor:
    q = p.clamp(torch.finfo(p.dtype).tiny, 1.0 - torch.finfo(p.dtype).eps / 2)
    return torch.log(q) - torch.log1p(-q)


SOFTMAX = dict(scores=softmax_float, scores_to_logits=log, score_kind="softmax")
SOFTMAX_SAME_DTYPE = dict(scores=softmax_same_dtype, scores_to_logits=log, score_kind="softmax")
SIGMOID = dict(scores=sigmoid, scores_to_logits=logit, score_kind="sigmoid")


class RouterOutput:
    """How a router module's forward output holds the routing (see the module docstring)."""

    name = "triple"
    selects = True  # False: the router returns logits only and its caller selects
    holds_index = True  # False: the output holds no per-token top-k indices (``index`` returns None)

    def logits(self, module, args, output) -> torch.Tensor:
        """(tokens, n_experts) router logits of this call."""
        return output[0]

    def index(self, output) -> torch.Tensor | None:
        """(tokens, k) the chosen experts, when the output holds them."""
        return output[2]

    def rebuild(self, module, args, output, rows, logits, weights, index):
        """``output`` with the routing of flattened token ``rows`` replaced."""
        old_logits, old_weights, old_index = output
        return (old_logits.index_put((rows,), logits.to(old_logits.dtype)),
                old_weights.index_put((rows,), weights.to(old_weights.dtype)),
                old_index.index_put((rows,), index))


class _LogitsOnly(RouterOutput):
    name = "logits_only"
    selects = False
    holds_index = False

    def logits(self, module, args, output):
        return output

    def index(self, output):
        return None

    def rebuild(self, module, args, output, rows, logits, weights, index):
        return output.index_put((rows,), logits.to(output.dtype))


class _DenseScoresLogits(RouterOutput):
    name = "dense_scores_logits"
    holds_index = False

    def logits(self, module, args, output):
        return output[1]

    def index(self, output):
        return None

    def rebuild(self, module, args, output, rows, logits, weights, index):
        # ``weights`` are dense here: select returns the (tokens, n_experts) matrix the router returns.
        dense, old_logits = output
        return (dense.index_put((rows,), weights.to(dense.dtype)),
                old_logits.index_put((rows,), logits.to(old_logits.dtype)))


class _IndexWeightAux(RouterOutput):
    name = "index_weight_aux"

    def logits(self, module, args, output):
        hidden = args[0]
        return F.linear(hidden.reshape(-1, hidden.shape[-1]), module.weight, None)

    def index(self, output):
        return output[0]

    def rebuild(self, module, args, output, rows, logits, weights, index):
        old_index, old_weights, aux = output
        return (old_index.index_put((rows,), index), old_weights.index_put((rows,), weights.to(old_weights.dtype)), aux)


TRIPLE = RouterOutput()
LOGITS_ONLY = _LogitsOnly()
DENSE_SCORES_LOGITS = _DenseScoresLogits()
INDEX_WEIGHT_AUX = _IndexWeightAux()


class LayerOutput:
    """A decoder layer that returns its hidden states (see the module docstring)."""

    name = "tensor"

    def passthrough(self, *args, **kwargs):
        """What a skipped layer returns: its input hidden states, in the form the layer returns them."""
        return args[0] if args else kwargs["hidden_states"]


class _LegacyTuple(LayerOutput):
    name = "legacy_tuple"

    def passthrough(self, *args, **kwargs):
        # transformers 4.x decoder layers: (hidden_states,) + (attention weights,) if output_attentions
        # + (the cache passed in, which the attention updated in place,) if use_cache.
        outputs = (super().passthrough(*args, **kwargs),)
        if kwargs.get("output_attentions"):
            outputs += (None,)
        if kwargs.get("use_cache"):
            outputs += (kwargs.get("past_key_value", kwargs.get("past_key_values")),)
        return outputs


TENSOR_LAYER = LayerOutput()
LEGACY_TUPLE_LAYER = _LegacyTuple()


class _Handle:
    def __init__(self, remove: Callable[[], None]):
        self.remove = remove


class MoEBlock:
    """An MoE block whose routed experts are one module, ``experts(hidden (tokens, hidden), top_k_index,
    top_k_weights)`` -> the weighted sum, and whose forward carries gradients in eval mode (transformers)."""

    name = "experts_module"

    def has_experts(self, block) -> bool:
        return getattr(block, "experts", None) is not None

    @contextmanager
    def gradient_path(self, block):
        """Inside: the block's eval-mode forward carries gradients (here it always does)."""
        yield

    def hook_routed(self, block, fn):
        """Call ``fn(hidden (tokens, h), top_k_index (tokens, k), top_k_weights, output) -> output`` on every sum of
        the routed experts the block computes; returns a handle whose ``remove()`` undoes it."""
        names = ("hidden_states", "top_k_index", "top_k_weights")

        def hook(module, args, kwargs, output):
            values = list(args) + [kwargs[name] for name in names[len(args):]]
            return fn(*values[:3], output)

        return block.experts.register_forward_hook(hook, with_kwargs=True)

    def expert_outputs(self, block, hidden, index, weight_dtype):
        """E_{index[t, s]}(hidden[t]) for every token t and slot s: (tokens, slots, hidden), through the experts
        module itself (each (token, slot) pair as its own row, routed to one expert with weight 1)."""
        tokens, slots = index.shape
        rows = hidden.repeat_interleave(slots, dim=0)
        ones = torch.ones(tokens * slots, 1, dtype=weight_dtype, device=hidden.device)
        return block.experts(rows, index.reshape(-1, 1), ones).view(tokens, slots, -1)


class ModuleListBlock(MoEBlock):
    """An MoE block with a ``ModuleList`` of experts whose eval-mode sum is a no-grad method (DeepSeekMoE's
    ``moe_infer(x, flat_expert_indices, flat_expert_weights)``); ``combine`` mirrors that method, with gradients."""

    name = "module_list"

    def __init__(self, method: str, combine: Callable):
        self.method = method
        self.combine = combine

    def _install(self, block, function) -> Callable[[], None]:
        """Shadow the block's method with ``function`` (an instance attribute); returns the undo."""
        saved = block.__dict__.get(self.method)
        setattr(block, self.method, function)

        def remove():
            if saved is None:
                delattr(block, self.method)
            else:
                setattr(block, self.method, saved)

        return remove

    def _current(self, block) -> Callable:
        """The method as installed now, or the mirror when the block still has its own no-grad one."""
        return block.__dict__.get(self.method) or MethodType(self.combine, block)

    @contextmanager
    def gradient_path(self, block):
        remove = self._install(block, self._current(block))
        try:
            yield
        finally:
            remove()

    def hook_routed(self, block, fn):
        inner = self._current(block)

        def hooked(x, flat_index, flat_weights):
            return fn(x, flat_index.view(x.shape[0], -1), flat_weights.view(x.shape[0], -1),
                      inner(x, flat_index, flat_weights))

        return _Handle(self._install(block, hooked))

    def expert_outputs(self, block, hidden, index, weight_dtype):
        out = hidden.new_empty(*index.shape, hidden.shape[-1])
        for j in index.unique().tolist():
            token, slot = torch.nonzero(index == j, as_tuple=True)
            out[token, slot] = block.experts[j](hidden[token])
        return out


EXPERTS_MODULE = MoEBlock()


@dataclass(frozen=True)
class ArchSpec:
    """How one MoE family routes.  ``scores`` are what probe returns and what "scores" overrides replace."""

    model_type: str
    router_class: str
    scores: Callable[[torch.Tensor], torch.Tensor]
    # (selector, logits, scores, router_args) -> (top-k weights, top-k indices), mirroring the family's source;
    # ``router_args`` are the router call's positional arguments (hidden states first).
    select: Callable
    # Inverse of ``scores`` up to softmax's shift invariance: logits consistent with given scores.
    scores_to_logits: Callable[[torch.Tensor], torch.Tensor]
    score_kind: str  # "softmax" (a distribution over experts) or "sigmoid" (independent per expert)
    router_path: str = "mlp.gate"  # the router module inside a decoder layer
    weight_name: str = "weight"  # the router's (n_experts, hidden) parameter: logits = hidden @ weight.T (+ bias)
    family: str = ""  # transformers' models/<family> directory ("" = model_type); "remote:<name>" for remote code
    aliases: tuple[str, ...] = ()  # other config model_types of the same model (e.g. a text-only variant)
    output: RouterOutput = TRIPLE
    selector_path: str = ""  # module inside a decoder layer whose attributes ``select`` reads ("" = the router)
    layers_path: str = "model.layers"  # decoder layers, from the causal LM
    final_norm_path: str = "model.norm"  # the norm after the last decoder layer, from the causal LM
    check: Callable | None = None  # config -> None, or a sentence saying why this configuration is not supported
    layer_output: LayerOutput = TENSOR_LAYER  # what a decoder layer returns
    block: MoEBlock = EXPERTS_MODULE  # how the MoE block around the router combines its experts
    definition: str = ""  # what "routing weights" means for this family (docs/families.md)
    # (selector, logits, scores, router_args) -> the values ``select``'s top-k ranks (a correction bias added, experts
    # outside the chosen groups masked), the same computation ``select`` runs; None: the scores themselves.
    choice: Callable | None = None

    def choice_values(self, selector, logits: torch.Tensor, scores: torch.Tensor, router_args) -> torch.Tensor:
        """What this family's top-k chooses from (its k largest are the chosen experts): the routing analysis' top-k
        margin is read on it."""
        return scores if self.choice is None else self.choice(selector, logits, scores, router_args)

    @property
    def family_name(self) -> str:
        return self.family or self.model_type

    @property
    def model_types(self) -> tuple[str, ...]:
        return (self.model_type, *self.aliases)

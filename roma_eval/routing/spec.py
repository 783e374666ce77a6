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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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

    def logits(self, module, args, output):
        return output

    def index(self, output):
        return None

    def rebuild(self, module, args, output, rows, logits, weights, index):
        return output.index_put((rows,), logits.to(output.dtype))


class _DenseScoresLogits(RouterOutput):
    name = "dense_scores_logits"

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
    definition: str = ""  # what "routing weights" means for this family (docs/families.md)

    @property
    def family_name(self) -> str:
        return self.family or self.model_type

    @property
    def model_types(self) -> tuple[str, ...]:
        return (self.model_type, *self.aliases)

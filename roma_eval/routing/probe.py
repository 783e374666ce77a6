"""Read routing scores at chosen token positions, differentiably with respect to the router weights.

"Routing weights" r_i in RoMA (Eq. 7) and the pathway ω in C3PO are the scores over *all* experts
(before top-k) at the last context token, for the chosen layers, concatenated.  For softmax
routers (OLMoE, Qwen-MoE, Mixtral, DeepSeek-V2, ...) the scores are softmax(router_logits); for
sigmoid routers (DeepSeek-V3, GLM-4.5, LFM2, Llama 4, ...) they are sigmoid(router_logits) —
independent per-expert affinities, the quantity the top-k chooses from (before any correction
bias), not a distribution.  Each family's definition is in ``families.py`` and docs/families.md.
The logits are read from the router's own output (or, for a router that returns none, recomputed
from its input and weight: ``spec.RouterOutput``).  Inside ``record_routing`` the MoE blocks run on their
differentiable path (``arch.gradient_path``), so a loss on the recorded forward's output reaches the routers
on every family (RoMA's and the other router-training methods' task loss, Eq. 8).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from roma_eval.routing.arch import gradient_path, resolve_layers, routers, spec_for
from roma_eval.routing.positions import as_positions, token_rows


class RoutingRecord:
    """Filled during a forward pass: ``scores`` is (batch, n_positions, n_layers, n_experts)."""

    def __init__(self, layers: list[int]):
        self.layers = layers
        self._by_layer: dict[int, torch.Tensor] = {}

    @property
    def scores(self) -> torch.Tensor:
        missing = [i for i in self.layers if i not in self._by_layer]
        if missing:
            raise RuntimeError(f"no forward pass reached layers {missing} inside record_routing()")
        return torch.stack([self._by_layer[i] for i in self.layers], dim=2)


@contextmanager
def record_routing(model, positions: torch.Tensor, layers=None):
    """Record the routing scores of the next forward pass at ``positions``, a (batch, n_positions)
    tensor of token indices into that forward's input (see ``arch.as_positions``)."""
    spec = spec_for(model)
    gates = routers(model)
    record = RoutingRecord(resolve_layers(model, layers))
    batch, n_positions = positions.shape
    handles = []

    def make_hook(layer_index):
        def hook(module, args, output):
            logits = spec.output.logits(module, args, output)
            rows = token_rows(positions.to(logits.device), logits.shape[0] // batch)
            # scores of every token, as the router computes them, then the rows: an elementwise kernel may
            # round differently on a tensor of another shape, and these must be the router's own scores.
            record._by_layer[layer_index] = spec.scores(logits)[rows].view(batch, n_positions, -1)

        return hook

    try:
        for i in record.layers:
            handles.append(gates[i].register_forward_hook(make_hook(i)))
        with gradient_path(model):
            yield record
    finally:
        for handle in handles:
            handle.remove()


def probe_routing(model, input_ids, attention_mask=None, layers=None, positions=None, **forward_kwargs):
    """Routing scores (batch, n_layers, n_experts) at the last context token of each sequence.

    One forward pass; differentiable with respect to the router weights when grad is enabled.
    ``positions``: (batch,) token indices instead of the last context token, or (batch, n_positions)
    for several positions per sequence, which returns (batch, n_positions, n_layers, n_experts).
    """
    batch, seq_len = input_ids.shape
    several = positions is not None and torch.as_tensor(positions).dim() == 2
    positions = as_positions(positions, attention_mask, batch, seq_len).to(input_ids.device)
    with record_routing(model, positions, layers) as record:
        model(input_ids=input_ids, attention_mask=attention_mask, **forward_kwargs)
    return record.scores if several else record.scores[:, 0]

"""Read the choice every MoE router makes, at every token of a forward pass: what the routing analysis measures.

Per chosen layer and token: the routing scores over all experts (``ArchSpec.scores``: softmax probabilities, or
sigmoid affinities), the values the family's top-k ranks (``ArchSpec.choice_values``: the scores, the logits, or the
scores with a correction bias and the group mask; its k largest are the chosen experts) and the chosen experts --
the router's own indices where its output holds them, else the family's ``select`` on its own logits (DBRX, Llama 4),
which is what the block computes.  Read-only: the forward pass is not changed.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from roma_eval.routing.arch import resolve_layers, routers, selectors, spec_for


@dataclass(frozen=True)
class LayerChoices:
    """One MoE layer's routing over a forward's tokens (batch, seq, ...)."""

    scores: torch.Tensor  # (batch, seq, n_experts) routing scores over all experts
    choice: torch.Tensor  # (batch, seq, n_experts) what the top-k ranks
    chosen: torch.Tensor  # (batch, seq, k) the chosen experts

    @property
    def top_k(self) -> int:
        return self.chosen.shape[-1]


class ChoiceRecord:
    """Filled by the next forward pass inside ``record_choices``: ``layers[i]`` -> its ``LayerChoices``."""

    def __init__(self, layers: list[int], batch: int):
        self.layer_indices = layers
        self.batch = batch
        self.layers: dict[int, LayerChoices] = {}

    def __getitem__(self, layer: int) -> LayerChoices:
        if layer not in self.layers:
            raise RuntimeError(f"no forward pass reached layer {layer} inside record_choices()")
        return self.layers[layer]


@contextmanager
def record_choices(model, batch: int, layers=None):
    """Record each chosen MoE layer's scores, choice values and chosen experts in the next forward pass of ``batch``
    sequences (``layers`` as ``resolve_layers`` reads them)."""
    spec = spec_for(model)
    gates, chooses = routers(model), selectors(model)
    record = ChoiceRecord(resolve_layers(model, layers), batch)

    def make_hook(layer):
        def hook(module, args, output):
            logits = spec.output.logits(module, args, output)
            scores = spec.scores(logits)
            chosen = spec.output.index(output)
            if chosen is None:  # the router returns no indices: the family's own selection on its logits
                chosen = spec.select(chooses[layer], logits, scores, args)[1]
            choice = spec.choice_values(chooses[layer], logits, scores, args)
            shape = (batch, logits.shape[0] // batch)
            record.layers[layer] = LayerChoices(scores.detach().view(*shape, -1), choice.detach().view(*shape, -1),
                                                chosen.detach().view(*shape, -1))

        return hook

    handles = [gates[i].register_forward_hook(make_hook(i)) for i in record.layer_indices]
    try:
        yield record
    finally:
        for handle in handles:
            handle.remove()

"""The oracle's variables at every position its scores depend on (``--positions all``, the default).

A choice's score (lm-eval's: the sum of its continuation tokens' log-probabilities) depends, causally, on the
routing at every position of its row up to its last input token: the context's and the choice's own
continuation's.  A router change moves the routing at all of them, so the oracle's variables for one sample are
one routing override per (steered layer, position), in "slots":

  - shared slots: the positions every row of the sample has in common from the start (the context of an
    ordinary task; the common start of the prompts of a multiple-input task), never beyond a row's context:
    one override each, used by all the rows (the same tokens give the same routing there);
  - own slots: the rest of each row (its continuation), one override per row and position, since each choice
    is its own sequence after the context.

A generation sample (one teacher-forced row: prompt, the model's reasoning, the answer) is steered on its
prompt's positions only: what follows is generated, and cached decoding steps are not steered (routing.steer).

Frozen work per batch (what no step can change is computed once): the hidden states entering the first
steered layer, from one forward.  Nothing above it is frozen (every position there is steered), so there is no
prefix KV cache to reuse; instead, with ``prefix_cache``, a sample's shared positions run once per step for all
of its rows (its "head", left-padded so that heads end in one column) and the rows attend to the head's keys
and values, differentiably: a step runs shared + Σ own tokens per sample instead of every row in full.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, replace

import torch

from roma_eval.routing import record_routing, steer_routing
from roma_eval.routing.partial import attend_to_prefix, capture_layer_input, prefix_cache_exact, run_from_layer
from roma_eval.scoring import ChoiceBatch


@dataclass
class Slots:
    """Where each input position's override lives in its sample's variables (samples, slots, layers, experts)."""

    slot: torch.Tensor  # (rows, S) slot of each input position, -1 where not steered (padding, generated text)
    count: torch.Tensor  # (samples,) slots of each sample: its variables are slots 0..count-1
    shared: torch.Tensor  # (samples,) positions its rows share: slot p is position p for p < shared


def prompt_positions(last: torch.Tensor) -> torch.Tensor:
    """(rows, max(last) + 1) positions 0..last of each row, -1 after: a generation prompt's every token."""
    positions = torch.arange(int(last.max()) + 1, device=last.device).expand(len(last), -1)
    return positions.masked_fill(positions > last.unsqueeze(1), -1)


def first_rows(batch: ChoiceBatch) -> torch.Tensor:
    """(samples,) each sample's first row."""
    rows = len(batch.row_sample)
    return torch.full((batch.n_samples,), rows, device=batch.row_sample.device).scatter_reduce(
        0, batch.row_sample, torch.arange(rows, device=batch.row_sample.device), "amin")


def slot_map(batch: ChoiceBatch, steer_end: torch.Tensor) -> Slots:
    """The slots of ``batch``'s rows (contiguous per sample, as ``build_choice_batch`` makes them) when positions
    0..steer_end-1 of each row are steered."""
    ids, real, sample = batch.input_ids, batch.attention_mask.bool(), batch.row_sample
    rows, width = ids.shape
    owner = first_rows(batch)[sample]  # each row's sample's first row
    common = ((ids == ids[owner]) & real & real[owner]).long().cumprod(1).sum(1)
    bound = torch.minimum(torch.minimum(common, batch.last_context + 1), steer_end)
    shared = torch.full((batch.n_samples,), width, device=ids.device).scatter_reduce(0, sample, bound, "amin")
    own = steer_end - shared[sample]  # each row's own slots
    before = own.cumsum(0) - own
    offset = (before - before[owner]).unsqueeze(1)  # own slots of the sample's earlier rows
    count = shared + torch.zeros_like(shared).index_add(0, sample, own)
    position = torch.arange(width, device=ids.device).expand(rows, -1)
    start = shared[sample].unsqueeze(1)
    slot = torch.where(position < start, position, position + offset)
    return Slots(slot.masked_fill(position >= steer_end.unsqueeze(1), -1), count, shared)


def _overrides(variables: torch.Tensor, owner: torch.Tensor, slot: torch.Tensor):
    """(override (n, W, layers, experts), positions (n, W)) for ``steer_routing``: each column's slot of sample
    ``owner``, not steered (-1) where the slot is -1."""
    override = variables[owner.unsqueeze(1), slot.clamp(min=0)]
    columns = torch.arange(slot.shape[1], device=slot.device).expand_as(slot)
    return override, columns.masked_fill(slot < 0, -1)


def _forward_kwargs(model, keep_one_logit: bool) -> dict:
    """The head's logits are never read: keep one where the model allows it (``logits_to_keep``)."""
    return {"logits_to_keep": 1} if keep_one_logit and "logits_to_keep" in inspect.signature(
        model.forward).parameters else {}


@dataclass
class _Head:
    """Per sample, its shared positions before its rows' first column, left-padded to one width."""

    hidden: torch.Tensor  # (samples, P, hidden) entering the first steered layer
    attention_mask: torch.Tensor  # (samples, P)
    position_ids: torch.Tensor  # (samples, P)
    slot: torch.Tensor  # (samples, P)

    def select(self, keep: torch.Tensor) -> _Head:
        return _Head(self.hidden[keep.to(self.hidden.device)], self.attention_mask[keep], self.position_ids[keep],
                     self.slot[keep])

    def keys_values(self, model, variables, first_layer: int, layers, mode: str):
        """Per steered decoder layer, the head's keys and values under ``variables`` (differentiable)."""
        override, positions = _overrides(variables, torch.arange(len(self.slot), device=self.slot.device), self.slot)
        with steer_routing(model, override, positions, layers, mode=mode):
            out = run_from_layer(model, first_layer, self.hidden, attention_mask=self.attention_mask,
                                 position_ids=self.position_ids, use_cache=True, **_forward_kwargs(model, True))
        return [(layer.keys, layer.values) for layer in out.past_key_values.layers[first_layer:]]


@dataclass
class EveryPosition:
    """What every descent step feeds the model when every position is steered (``descent._Rows``' counterpart)."""

    hidden: torch.Tensor  # (rows, W, hidden) entering the first steered layer, from each row's first column on
    attention_mask: torch.Tensor  # (rows, P + W): the sample's head, then the row
    position_ids: torch.Tensor  # (rows, W)
    slot: torch.Tensor  # (rows, W) slot of each column, -1 where not steered
    recorded: torch.Tensor  # (rows, N) the --tokens positions, as columns: where routing is recorded
    count: torch.Tensor  # (samples,) slots per sample
    head: _Head | None
    first_layer: int

    def select(self, keep: torch.Tensor, row_sample: torch.Tensor) -> EveryPosition:
        """The samples where ``keep`` (samples,) holds; ``row_sample``: the rows' samples before."""
        rows = keep[row_sample]
        return EveryPosition(self.hidden[rows.to(self.hidden.device)], self.attention_mask[rows],
                             self.position_ids[rows], self.slot[rows], self.recorded[rows], self.count[keep],
                             None if self.head is None else self.head.select(keep), self.first_layer)

    def steered_logits(self, model, variables: torch.Tensor, row_sample: torch.Tensor, layers, mode: str):
        """The rows' logits (rows, W, vocab) with every steered position at its slot of ``variables``."""
        kwargs = {"attention_mask": self.attention_mask, "position_ids": self.position_ids, "use_cache": False}
        if self.head is not None:
            kv = self.head.keys_values(model, variables, self.first_layer, layers, mode)
            kwargs.update(attend_to_prefix([(k[row_sample.to(k.device)], v[row_sample.to(v.device)]) for k, v in kv],
                                           self.first_layer))
        override, positions = _overrides(variables, row_sample, self.slot)
        with steer_routing(model, override, positions, layers, mode=mode):
            logits = run_from_layer(model, self.first_layer, self.hidden, **kwargs).logits
        return logits.to(self.slot.device)


@torch.no_grad()
def prepare_every_position(model, batch: ChoiceBatch, slots: Slots, recorded: torch.Tensor, first_layer: int,
                           prefix_cache: bool) -> tuple[EveryPosition, ChoiceBatch]:
    """Run the frozen part of ``batch`` once (the layers below ``first_layer``); return the step inputs and ``batch``
    re-indexed to them.  ``recorded``: (rows, N) positions where routing is read (--tokens)."""
    lengths, sample = batch.attention_mask.sum(1), batch.row_sample
    with capture_layer_input(model, first_layer, stop=True) as captured:
        model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
    hidden = captured["hidden_states"]
    head_start = torch.zeros_like(slots.shared)
    # A sliding-window model cannot attend to a head it has not kept: its rows run whole (exact, slower).
    if prefix_cache and prefix_cache_exact(model, int(lengths.max())):
        lowest = torch.full_like(head_start, int(lengths.max())).scatter_reduce(0, sample, recorded.min(1).values,
                                                                                 "amin")
        head_start = torch.minimum(slots.shared - 1, lowest).clamp(min=0)  # recorded tokens stay in the rows
    start = head_start[sample]
    width = int((lengths - start).max())
    source = start.unsqueeze(1) + torch.arange(width, device=start.device)
    real = source < lengths.unsqueeze(1)
    source = source.clamp(max=batch.input_ids.shape[1] - 1)
    row_hidden = hidden.gather(1, source.to(hidden.device).unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
    mask, head = real.long(), None
    if int(head_start.max()) > 0:
        owner = first_rows(batch)
        span = int(head_start.max())
        head_source = torch.arange(span, device=start.device) - span + head_start.unsqueeze(1)
        head_real = head_source >= 0
        head_source = head_source.clamp(min=0)
        head_hidden = hidden[owner.to(hidden.device)].gather(
            1, head_source.to(hidden.device).unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
        head = _Head(head_hidden, head_real.long(), head_source,
                     slots.slot[owner].gather(1, head_source).masked_fill(~head_real, -1))
        mask = torch.cat([head_real[sample].long(), mask], 1)
    layout = EveryPosition(row_hidden, mask, source, slots.slot.gather(1, source).masked_fill(~real, -1),
                           recorded - start.unsqueeze(1), slots.count, head, first_layer)
    step_batch = replace(batch, input_ids=batch.input_ids.gather(1, source).masked_fill(~real, 0),
                         attention_mask=real.long(), last_context=batch.last_context - start)
    return layout, step_batch


@torch.no_grad()
def base_routing_at_slots(model, batch: ChoiceBatch, slots: Slots, layers) -> torch.Tensor:
    """(samples, max slots, layers, experts): the base routing scores at every slot (``--variables scores``
    starts there).  A shared slot takes its sample's first row's."""
    rows, width = batch.input_ids.shape
    positions = torch.arange(width, device=batch.input_ids.device).expand(rows, -1)
    with record_routing(model, positions, layers) as record:
        model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
    scores = record.scores.float()
    first_row = torch.zeros_like(batch.row_sample, dtype=torch.bool).index_fill(0, first_rows(batch), True)
    writes = (slots.slot >= 0) & ((slots.slot >= slots.shared[batch.row_sample].unsqueeze(1))
                                  | first_row.unsqueeze(1))
    out = scores.new_zeros((batch.n_samples, int(slots.count.max()), *scores.shape[2:]))
    owner = batch.row_sample.unsqueeze(1).expand_as(slots.slot)
    out[owner[writes], slots.slot[writes]] = scores[writes.to(scores.device)]
    return out

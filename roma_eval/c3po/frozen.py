"""Frozen prefixes: the part of a forward pass that C3PO's routing change cannot alter, computed once.

C3PO (arXiv 2504.07964) re-mixes the experts of one token, the last context token ("token 0"
of a problem's *tails*: it, then each continuation's tokens but the last), at the critical layers
k.. (the last 5 MoE layers; FACTS.md).  What can that change?  Nothing before token 0 (attention is
causal), nothing below layer k, and at layer k itself only token 0's output: the routing acts in
the MoE block, after attention, and on token 0 alone.  So ``freeze`` runs a problem once and keeps
  - the prefix keys/values of layers k.. (the context but its last token);
  - the hidden state entering layer k at token 0;
  - the hidden states entering layer k + 1 at every tail token (token 0's is replaced when steered);
and a steered pass (``TailBatch.forward``) runs layer k on token 0 alone, then layers k+1.. on the
tail tokens against the cached prefix: (tail tokens) x (critical layers - 1) + one token, whatever
the prompt's length.

Prefixes of different problems are left-padded to a common length and masked; every row gets its
true position ids, so rotary embeddings see the same relative positions as in the uncached pass.
Cache slots below the cached layers are transformers' ``DummyLayer`` (no storage).  Cached and
uncached passes agree to float32 rounding on all six supported architectures, scores and gradients
(tests/test_c3po.py).  Sliding-window attention is refused: left padding would shift its window.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from roma_eval.errors import RomaEvalError
from roma_eval.routing import record_routing, steer_routing
from roma_eval.routing.arch import decoder_layers
from roma_eval.routing.partial import cache_holding, capture_layer_input, run_from_layer

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per cached layer: keys, values of shape (heads, tokens, dim)


@dataclass(frozen=True)
class Problem:
    """A context and its scored continuations, as token ids in lm-eval's tokenisation.

    A generation prompt has one empty continuation: its tail is only the last context token.
    """

    context: tuple[int, ...]
    continuations: tuple[tuple[int, ...], ...]
    gold: int = -1  # labelled references: the right continuation

    @classmethod
    def make(cls, context: Sequence[int], continuations: Sequence[Sequence[int]], max_length: int,
             gold: int = -1) -> "Problem":
        # lm-eval keeps the last max_length + 1 tokens of context + continuation and drops the final
        # one; one cut for all choices (made for the longest) keeps a single shared prefix.
        longest = max(len(c) for c in continuations)
        return cls(tuple(context)[-max(1, max_length + 1 - longest):], tuple(tuple(c) for c in continuations), gold)

    def tail(self, choice: int) -> tuple[int, ...]:
        return self.context[-1:] + self.continuations[choice][:-1]


@dataclass
class Frozen:
    """One problem's frozen state for steering from decoder layer k = the first critical layer."""

    problem: Problem
    kv: KV | None  # layers k..; None when the context is a single token (no prefix)
    token0: torch.Tensor  # (hidden,) entering layer k at the last context token
    tail_hidden: torch.Tensor  # (choices, longest tail, hidden) entering layer k + 1, zero-padded
    routing: torch.Tensor  # (n_layers, n_experts) the base routing scores at the last context token


def _buckets(lengths: Sequence[int]) -> list[list[int]]:
    """Row indices grouped so that a padded forward wastes little: longest first, a new group as
    soon as a tail is under half the group's longest (so at most log2(max/min) + 1 forwards)."""
    groups: list[list[int]] = []
    for r in sorted(range(len(lengths)), key=lambda r: -lengths[r]):
        if not groups or 2 * lengths[r] < lengths[groups[-1][0]]:
            groups.append([])
        groups[-1].append(r)
    return groups


def _stack_prefixes(prefixes: Sequence[KV | None], owners: list[int], width: int, layers: slice) -> KV:
    """Per cached layer in ``layers``: keys and values of each row's problem (``owners``), left-padded to ``width``."""
    used = sorted(set(owners))
    slot = {i: n for n, i in enumerate(used)}
    template = next(prefixes[i] for i in used if prefixes[i] is not None)[layers]
    if not template:
        return []
    index = torch.tensor([slot[i] for i in owners], device=template[0][0].device)
    stacked = []
    for layer, (keys0, values0) in enumerate(template):
        padded = []
        for i in used:
            pair = prefixes[i][layers][layer] if prefixes[i] is not None else (keys0[:, :0], values0[:, :0])
            padded.append([F.pad(t, (0, 0, width - t.shape[1], 0)) for t in pair])
        stacked.append((torch.stack([k for k, _ in padded])[index], torch.stack([v for _, v in padded])[index]))
    return stacked


class _Rows:
    """Token sequences of several problems as one right-padded forward, each row attending to its
    problem's prefix (left-padded to the longest prefix among them, with true position ids)."""

    def __init__(self, problems, prefixes, rows: list[tuple[int, int]], device, cached: slice):
        self.rows = rows
        owners = [i for i, _ in rows]
        tails = [problems[i].tail(j) if j >= 0 else problems[i].context[-1:] for i, j in rows]
        prefix_lens = [len(problems[i].context) - 1 for i in owners]
        self.row_problem = torch.tensor(owners, device=device)
        self.row_choice = torch.tensor([j for _, j in rows], device=device)
        self.tail_lens = [len(t) for t in tails]
        self.width, self.prefix_len = max(self.tail_lens), max(prefix_lens)
        self.tail_ids = torch.zeros(len(rows), self.width, dtype=torch.long, device=device)
        self.targets = torch.zeros(len(rows), self.width, dtype=torch.long, device=device)
        self.target_mask = torch.zeros(len(rows), self.width, dtype=torch.bool, device=device)
        tail_mask = torch.zeros(len(rows), self.width, dtype=torch.long, device=device)
        prefix_mask = torch.zeros(len(rows), self.prefix_len, dtype=torch.long, device=device)
        for r, ((i, j), tail, n_prefix) in enumerate(zip(rows, tails, prefix_lens)):
            target = problems[i].continuations[j] if j >= 0 else ()
            self.tail_ids[r, : len(tail)] = torch.tensor(tail)
            self.targets[r, : len(target)] = torch.tensor(target, dtype=torch.long)
            self.target_mask[r, : len(target)] = True
            tail_mask[r, : len(tail)] = 1
            prefix_mask[r, self.prefix_len - n_prefix:] = 1  # left padding
        self.attention_mask = torch.cat([prefix_mask, tail_mask], dim=1)
        self.tail_mask = tail_mask
        self.position_ids = torch.tensor(prefix_lens, device=device).unsqueeze(1) + torch.arange(self.width, device=device)
        self.kv = _stack_prefixes(prefixes, owners, self.prefix_len, cached) if self.prefix_len else None
        self.hidden: torch.Tensor | None = None  # the frozen inputs, when set

    def forward_kwargs(self, first_layer: int, n_layers: int) -> dict:
        if first_layer == n_layers:  # only the final norm and head run: no attention, no cache
            return dict(attention_mask=self.tail_mask, position_ids=self.position_ids)
        kwargs = dict(attention_mask=self.attention_mask, position_ids=self.position_ids)
        if self.kv is not None:
            kwargs["past_key_values"] = cache_holding(self.kv, first_layer)  # fresh each pass: the forward appends to it
        return kwargs

    def scores(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row: the sum of the continuation's log-probabilities (lm-eval's score) and whether
        every continuation token is the argmax (lm-eval's is_greedy)."""
        logprobs = F.log_softmax(logits.float(), dim=-1).gather(-1, self.targets.unsqueeze(-1)).squeeze(-1)
        greedy = ((logits.argmax(dim=-1) == self.targets) | ~self.target_mask).all(dim=1)
        return (logprobs * self.target_mask).sum(dim=1), greedy


def _steer(model, override, row_problem, layers: list[int], steered: list[int]):
    """Steer token 0 of each row at ``steered``, a subset of the ``layers`` that ``override`` spans."""
    if override is None or not steered:
        return nullcontext()
    positions = torch.zeros(len(row_problem), 1, dtype=torch.long, device=row_problem.device)
    columns = [layers.index(layer) for layer in steered]
    return steer_routing(model, override[row_problem][:, columns].unsqueeze(1), positions, layers=steered,
                         mode="scores")


class TailBatch:
    """Frozen problems ready for steered passes: token 0 of each problem at layer k, then the tails
    (one row per choice) at layers k+1.., in a few padded forwards grouped by tail length.
    Built once, run many times (NGD steps, the α grid, the final scoring)."""

    def __init__(self, frozen: Sequence[Frozen], device):
        problems = [f.problem for f in frozen]
        prefixes = [f.kv for f in frozen]
        self.shape = (len(problems), max(len(p.continuations) for p in problems))
        # Choice -1: the last context token alone (no target), through layer k only.
        self.token0 = _Rows(problems, prefixes, [(i, -1) for i in range(len(problems))], device, slice(0, 1))
        self.token0.hidden = torch.stack([f.token0 for f in frozen]).unsqueeze(1).to(device)
        rows = [(i, j) for i, p in enumerate(problems) for j in range(len(p.continuations))]
        lengths = [len(problems[i].tail(j)) for i, j in rows]
        self.parts = []
        for group in _buckets(lengths):
            part = _Rows(problems, prefixes, [rows[r] for r in group], device, slice(1, None))
            part.hidden = torch.stack([F.pad(frozen[i].tail_hidden[j, : part.width],
                                             (0, 0, 0, max(0, part.width - frozen[i].tail_hidden.shape[1])))
                                       for i, j in part.rows]).to(device)
            self.parts.append(part)

    def forward(self, model, layers: list[int], override: torch.Tensor | None = None):
        """Choice scores (problems, max_choices) as lm-eval sums them (-inf where a problem has fewer
        choices) and greedy flags (same shape).  ``override`` (problems, n_layers, n_experts)
        replaces the routing scores at the last context token of the critical ``layers`` (those
        the problems were frozen for)."""
        k, n_layers = layers[0], len(decoder_layers(model))
        t0 = self.token0
        with _steer(model, override, t0.row_problem, layers, [k]), capture_layer_input(model, k + 1, stop=True) as leaving:
            run_from_layer(model, k, t0.hidden, **t0.forward_kwargs(k, n_layers))
        new_token0 = leaving["hidden_states"][:, 0]  # (problems, hidden) leaving layer k
        device = t0.row_problem.device
        scores = torch.full(self.shape, float("-inf"), device=device)
        greedy = torch.zeros(self.shape, dtype=torch.bool, device=device)
        for part in self.parts:
            hidden = torch.cat([new_token0[part.row_problem].unsqueeze(1).to(part.hidden.dtype), part.hidden[:, 1:]], 1)
            with _steer(model, override, part.row_problem, layers, layers[1:]):
                logits = run_from_layer(model, k + 1, hidden, **part.forward_kwargs(k + 1, n_layers)).logits
            row_scores, row_greedy = part.scores(logits)
            scores = scores.index_put((part.row_problem, part.row_choice), row_scores)
            greedy = greedy.index_put((part.row_problem, part.row_choice), row_greedy)
        return scores, greedy


def _prefix_pass(model, problems: Sequence[Problem], device) -> list[KV | None]:
    """Keys/values of every layer for each context but its last token (right-padded batch, sliced back)."""
    lens = [len(p.context) - 1 for p in problems]
    with_prefix = [i for i, n in enumerate(lens) if n > 0]
    out: list[KV | None] = [None] * len(problems)
    if not with_prefix:
        return out
    width = max(lens)
    ids = torch.zeros(len(with_prefix), width, dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for row, i in enumerate(with_prefix):
        ids[row, : lens[i]] = torch.tensor(problems[i].context[:-1])
        mask[row, : lens[i]] = 1
    cache = model(input_ids=ids, attention_mask=mask, use_cache=True).past_key_values
    for row, i in enumerate(with_prefix):
        out[i] = [(layer.keys[row, :, : lens[i]], layer.values[row, :, : lens[i]]) for layer in cache.layers]
    return out


def _check_attention(model) -> None:
    config = model.config
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        raise RomaEvalError(f"{config.model_type} uses sliding-window attention, which C3PO's prefix cache does not "
                            "support; load it with sliding_window=None (exact for prompts shorter than the window)")


@torch.no_grad()
def freeze(model, problems: Sequence[Problem], layers: list[int]) -> list[Frozen]:
    """One full pass over ``problems`` (prefix, then the tails against it): each problem's frozen
    state for steering ``layers`` (sorted decoder-layer indices), with its base routing."""
    _check_attention(model)
    device = next(model.parameters()).device
    k = layers[0]
    prefixes = _prefix_pass(model, problems, device)
    entering_k, entering_next, routing = {}, {}, {}
    rows = [(i, j) for i, p in enumerate(problems) for j in range(len(p.continuations))]
    for group in _buckets([len(problems[i].tail(j)) for i, j in rows]):
        part = _Rows(problems, prefixes, [rows[r] for r in group], device, slice(0, None))
        positions = torch.zeros(len(part.rows), 1, dtype=torch.long, device=device)
        with record_routing(model, positions, layers) as record, capture_layer_input(model, k) as at_k, \
                capture_layer_input(model, k + 1) as at_next:
            model(input_ids=part.tail_ids, **part.forward_kwargs(0, len(decoder_layers(model))))
        for r, (i, j) in enumerate(part.rows):
            entering_next[i, j] = at_next["hidden_states"][r, : part.tail_lens[r]]
            entering_k.setdefault(i, at_k["hidden_states"][r, 0])
            routing.setdefault(i, record.scores[r, 0].float())
    frozen = []
    for i, problem in enumerate(problems):
        tails = [entering_next[i, j] for j in range(len(problem.continuations))]
        width = max(len(t) for t in tails)
        kv = None if prefixes[i] is None else [(keys.clone(), values.clone()) for keys, values in prefixes[i][k:]]
        frozen.append(Frozen(problem, kv, entering_k[i].clone(),
                             torch.stack([F.pad(t, (0, 0, 0, width - len(t))) for t in tails]), routing[i].clone()))
    return frozen

"""Frozen prefixes: the part of a forward pass that C3PO's routing change cannot alter, computed once.

C3PO (arXiv 2504.07964) re-mixes the experts of one token, the last context token ("token 0"
of a problem's *tails*: it, then each continuation's tokens but the last), at the critical layers
k.. (the last 5 MoE layers, the paper's critical layers).  What can that change?  Nothing before token 0 (attention is
causal), nothing below layer k, and at layer k itself only token 0's output: the routing acts in
the MoE block, after attention, and on token 0 alone.  So ``freeze`` runs a problem once and keeps
  - the prefix keys/values of layers k.. (the context but its last token);
  - the hidden state entering layer k at token 0;
  - the hidden states entering layer k + 1 at every tail token (token 0's is replaced when steered);
and a steered pass (``TailBatch.forward``) runs layer k on token 0 alone, then layers k+1.. on the
tail tokens against the cached prefix: (tail tokens) x (critical layers - 1) + one token, whatever
the prompt's length.

A problem's choices share one prompt, or (lm-eval's multiple-input tasks, winogrande) each choice
has its own prompt: then every prompt has its own prefix and its own token 0, and the problem's
pathway ω is the mean of its prompts' routings (``ChoiceBatch.per_sample``, as RoMA and the oracle
read such a sample).  Steering the problem with a pathway ω moves each prompt's own routing by
ω - ω̄ (ω̄ the base pathway), projected back onto the scores' domain if that leaves it: ω = ω̄ is
the base model exactly, as for one shared prompt, where the prompt's routing is ω itself.

Prefixes of different problems are left-padded to a common length and masked; every row gets its
true position ids, so rotary embeddings see the same relative positions as in the uncached pass.
Cache slots below the cached layers are transformers' ``DummyLayer`` (no storage).  Cached and
uncached passes agree to float32 rounding, scores and gradients, on the fast test set's families
(``roma_eval.tiny.FAST_ARCHITECTURES``, tests/methods/c3po/test_c3po.py) and DeepSeekMoE's remote code.  A model
whose layers keep more than attention keys and values (a sliding window shorter than the prompt, whose left-padded
prefix would shift it; linear attention, Mamba or convolution states) is refused, naming those layers
(``_check_attention``).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from roma_eval.devices import input_device
from roma_eval.errors import RomaEvalError
from roma_eval.routing import record_routing, spec_for, steer_routing
from roma_eval.routing.arch import decoder_layers
from roma_eval.routing.partial import (
    attend_to_prefix,
    capture_layer_input,
    prefix_cache_exact,
    prefix_cache_problem,
    prefix_keys_values,
    run_from_layer,
)
from roma_eval.routing.scores import project_scores

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per cached layer: keys, values of shape (heads, tokens, dim)


@dataclass(frozen=True)
class Problem:
    """Continuations scored after a prompt, as token ids in lm-eval's tokenisation.

    ``contexts`` holds one prompt shared by every choice or, for lm-eval's multiple-input tasks
    (winogrande: the option fills a blank in the prompt), one prompt per choice.
    A generation prompt has one empty continuation: its tail is only the last context token.
    """

    contexts: tuple[tuple[int, ...], ...]
    continuations: tuple[tuple[int, ...], ...]
    gold: int = -1  # labelled references: the right continuation

    @classmethod
    def make(cls, contexts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]], max_length: int,
             gold: int = -1) -> Problem:
        """``contexts``: one shared by all ``continuations``, or one per continuation (one if they are all equal)."""
        contexts, continuations = [tuple(c) for c in contexts], tuple(tuple(c) for c in continuations)
        if len(contexts) not in (1, len(continuations)):
            raise ValueError(f"{len(contexts)} contexts for {len(continuations)} continuations: give one, or one each")
        shared = len(set(contexts)) == 1
        # lm-eval keeps the last max_length + 1 tokens of context + continuation and drops the final
        # one; one cut per prompt (made for the longest continuation after it) keeps one prefix per prompt.
        longest = [max(len(c) for c in continuations)] if shared else [len(c) for c in continuations]
        cut = tuple(context[-max(1, max_length + 1 - n):] for context, n in zip(contexts, longest))
        return cls(cut, continuations, gold)

    @property
    def multiple_input(self) -> bool:
        return len(self.contexts) > 1

    def prompt(self, choice: int) -> int:
        """Which of ``contexts`` choice ``choice`` is scored after."""
        return choice if self.multiple_input else 0

    def tail(self, choice: int) -> tuple[int, ...]:
        return self.contexts[self.prompt(choice)][-1:] + self.continuations[choice][:-1]


@dataclass
class Frozen:
    """One problem's frozen state for steering from decoder layer k = the first critical layer."""

    problem: Problem
    kv: list[KV | None]  # per prompt: layers k..; None when its context is a single token (no prefix)
    token0: torch.Tensor  # (prompts, hidden) entering layer k at each prompt's last token
    tail_hidden: torch.Tensor  # (choices, longest tail, hidden) entering layer k + 1, zero-padded
    prompt_routing: torch.Tensor  # (prompts, n_layers, n_experts) base routing scores at each prompt's last token

    @property
    def routing(self) -> torch.Tensor:
        """(n_layers, n_experts) the problem's base pathway ω̄: its prompt's routing, or the mean over its
        prompts (label-free: the gold prompt is not singled out)."""
        return self.prompt_routing[0] if len(self.prompt_routing) == 1 else self.prompt_routing.mean(0)


def _buckets(lengths: Sequence[int]) -> list[list[int]]:
    """Row indices grouped so that a padded forward wastes little: longest first, a new group as
    soon as a tail is under half the group's longest (so at most log2(max/min) + 1 forwards)."""
    groups: list[list[int]] = []
    for r in sorted(range(len(lengths)), key=lambda r: -lengths[r]):
        if not groups or 2 * lengths[r] < lengths[groups[-1][0]]:
            groups.append([])
        groups[-1].append(r)
    return groups


Prefixes = dict[tuple[int, int], "KV | None"]  # (problem, prompt) -> its prefix's keys/values


def _stack_prefixes(prefixes: Prefixes, owners: list[tuple[int, int]], width: int, layers: slice) -> KV:
    """Per cached layer in ``layers``: keys and values of each row's prompt (``owners``), left-padded to ``width``
    (each layer's tensors stay on that layer's device: a model split across devices keeps its cache there)."""
    used = sorted(set(owners))
    slot = {key: n for n, key in enumerate(used)}
    template = next(prefixes[key] for key in used if prefixes[key] is not None)[layers]
    if not template:
        return []
    index = torch.tensor([slot[key] for key in owners])
    stacked = []
    for layer, (keys0, values0) in enumerate(template):
        padded = []
        for key in used:
            pair = prefixes[key][layers][layer] if prefixes[key] is not None else (keys0[:, :0], values0[:, :0])
            padded.append([F.pad(t, (0, 0, width - t.shape[1], 0)) for t in pair])
        at = index.to(keys0.device)
        stacked.append((torch.stack([k for k, _ in padded])[at], torch.stack([v for _, v in padded])[at]))
    return stacked


class _Rows:
    """Token sequences of several problems as one right-padded forward, each row attending to its
    prompt's prefix (left-padded to the longest prefix among them, with true position ids).
    A row is (problem, prompt, choice); choice -1 is the prompt's last token alone (no target)."""

    def __init__(self, problems, prefixes: Prefixes, rows: list[tuple[int, int, int]], device, cached: slice):
        # Built on the host and copied once per tensor: a copy per row would make the host wait for the
        # device once per row.
        self.rows = rows
        owners = [(i, p) for i, p, _ in rows]
        tails = [problems[i].tail(j) if j >= 0 else problems[i].contexts[p][-1:] for i, p, j in rows]
        prefix_lens = [len(problems[i].contexts[p]) - 1 for i, p in owners]
        self.tail_lens = [len(t) for t in tails]
        self.width, self.prefix_len = max(self.tail_lens), max(prefix_lens)
        tail_ids = torch.zeros(len(rows), self.width, dtype=torch.long)
        targets = torch.zeros(len(rows), self.width, dtype=torch.long)
        target_mask = torch.zeros(len(rows), self.width, dtype=torch.bool)
        tail_mask = torch.zeros(len(rows), self.width, dtype=torch.long)
        prefix_mask = torch.zeros(len(rows), self.prefix_len, dtype=torch.long)
        for r, ((i, _, j), tail, n_prefix) in enumerate(zip(rows, tails, prefix_lens)):
            target = problems[i].continuations[j] if j >= 0 else ()
            tail_ids[r, : len(tail)] = torch.tensor(tail)
            targets[r, : len(target)] = torch.tensor(target, dtype=torch.long)
            target_mask[r, : len(target)] = True
            tail_mask[r, : len(tail)] = 1
            prefix_mask[r, self.prefix_len - n_prefix:] = 1  # left padding
        position_ids = torch.tensor(prefix_lens).unsqueeze(1) + torch.arange(self.width)
        row_problem = torch.tensor([i for i, _ in owners])
        row_choice = torch.tensor([j for _, _, j in rows])
        (self.tail_ids, self.targets, self.target_mask, self.tail_mask, self.attention_mask, self.position_ids,
         self.row_problem, self.row_choice) = (t.to(device) for t in (
            tail_ids, targets, target_mask, tail_mask, torch.cat([prefix_mask, tail_mask], dim=1), position_ids,
            row_problem, row_choice))
        self.kv = _stack_prefixes(prefixes, owners, self.prefix_len, cached) if self.prefix_len else None
        self.hidden: torch.Tensor | None = None  # the frozen inputs, when set
        self.row_prompt: torch.Tensor | None = None  # TailBatch: each row's prompt, numbered across problems

    def forward_kwargs(self, first_layer: int, n_layers: int) -> dict:
        if first_layer == n_layers:  # only the final norm and head run: no attention, no cache
            return dict(attention_mask=self.tail_mask, position_ids=self.position_ids)
        kwargs = dict(attention_mask=self.attention_mask, position_ids=self.position_ids)
        if self.kv is not None:
            kwargs.update(attend_to_prefix(self.kv, first_layer))
        return kwargs

    def scores(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row: the sum of the continuation's log-probabilities (lm-eval's score) and whether
        every continuation token is the argmax (lm-eval's is_greedy)."""
        targets, target_mask = self.targets.to(logits.device), self.target_mask.to(logits.device)  # (a split model)
        logprobs = F.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        greedy = ((logits.argmax(dim=-1) == targets) | ~target_mask).all(dim=1)
        return (logprobs * target_mask).sum(dim=1), greedy


def _steer(model, pathways: torch.Tensor | None, layers: list[int], steered: list[int]):
    """Steer token 0 of each row with its pathway (rows, n_layers, n_experts) at ``steered``, a subset
    of the ``layers`` the pathways span."""
    if pathways is None or not steered:
        return nullcontext()
    positions = torch.zeros(len(pathways), 1, dtype=torch.long, device=pathways.device)
    columns = [layers.index(layer) for layer in steered]
    return steer_routing(model, pathways[:, columns].unsqueeze(1), positions, layers=steered, mode="scores")


def _valid(values: torch.Tensor, own: torch.Tensor, kind: str) -> torch.Tensor:
    """Moved routing scores back in their domain: sigmoid scores clipped to [0, 1]; a softmax layer with
    a negative score projected (Euclidean) onto the simplex of its own mass, the other layers kept exactly."""
    if kind == "sigmoid":
        return values.clamp(0.0, 1.0)
    return torch.where((values < 0).any(-1, keepdim=True), project_scores(values, kind, own.sum(-1, keepdim=True)),
                       values)


class TailBatch:
    """Frozen problems ready for steered passes: token 0 of each prompt at layer k, then the tails
    (one row per choice) at layers k+1.., in a few padded forwards grouped by tail length.
    Built once, run many times (NGD steps, the α grid, the final scoring)."""

    def __init__(self, frozen: Sequence[Frozen], device):
        problems = [f.problem for f in frozen]
        prefixes = {(i, p): kv for i, f in enumerate(frozen) for p, kv in enumerate(f.kv)}
        self.shape = (len(problems), max(len(p.continuations) for p in problems))
        prompts = [(i, p, -1) for i, problem in enumerate(problems) for p in range(len(problem.contexts))]
        number = {(i, p): n for n, (i, p, _) in enumerate(prompts)}
        # Choice -1: each prompt's last token alone (no target), through layer k only.
        self.token0 = _Rows(problems, prefixes, prompts, device, slice(0, 1))
        self.token0.hidden = torch.cat([f.token0 for f in frozen]).unsqueeze(1).to(device)
        self.moves = None  # multiple-input problems: each prompt's own routing, its problem's pathway, which prompts
        if any(p.multiple_input for p in problems):
            self.moves = (torch.cat([f.prompt_routing for f in frozen]).to(device),
                          torch.stack([f.routing for f in frozen]).to(device)[self.token0.row_problem],
                          torch.tensor([problems[i].multiple_input for i, _, _ in prompts]).to(device))
        rows = [(i, problem.prompt(j), j) for i,
                problem in enumerate(problems) for j in range(len(problem.continuations))]
        lengths = [len(problems[i].tail(j)) for i, _, j in rows]
        self.parts = []
        for group in _buckets(lengths):
            part = _Rows(problems, prefixes, [rows[r] for r in group], device, slice(1, None))
            part.hidden = torch.stack([F.pad(frozen[i].tail_hidden[j, : part.width],
                                             (0, 0, 0, max(0, part.width - frozen[i].tail_hidden.shape[1])))
                                       for i, _, j in part.rows]).to(device)
            part.row_prompt = torch.tensor([number[i, p] for i, p, _ in part.rows]).to(device)
            self.parts.append(part)

    def pathways(self, override: torch.Tensor | None, kind: str) -> torch.Tensor | None:
        """(prompts, n_layers, n_experts) the routing each prompt's last token gets under the problems'
        pathways ``override``: a shared prompt takes its problem's pathway ω as it is; a multiple-input
        problem's prompt keeps its own routing, moved by ω - ω̄ (module docstring)."""
        if override is None:
            return None
        pathways = override[self.token0.row_problem]
        if self.moves is None:
            return pathways
        own, base, multiple = self.moves
        moved = _valid(own + (pathways - base), own, kind)
        return torch.where(multiple.view(-1, 1, 1), moved, pathways)

    def forward(self, model, layers: list[int], override: torch.Tensor | None = None):
        """Choice scores (problems, max_choices) as lm-eval sums them (-inf where a problem has fewer
        choices) and greedy flags (same shape).  ``override`` (problems, n_layers, n_experts) is each
        problem's pathway at the critical ``layers`` (those the problems were frozen for), replacing
        the routing scores at its last context token (``pathways``)."""
        k, n_layers = layers[0], len(decoder_layers(model))
        t0 = self.token0
        pathways = self.pathways(override, spec_for(model).score_kind if self.moves is not None else "softmax")
        with _steer(model, pathways, layers, [k]), capture_layer_input(model, k + 1, stop=True) as leaving:
            run_from_layer(model, k, t0.hidden, **t0.forward_kwargs(k, n_layers))
        new_token0 = leaving["hidden_states"][:, 0]  # (prompts, hidden) leaving layer k
        device = t0.row_problem.device
        scores = torch.full(self.shape, float("-inf"), device=device)
        greedy = torch.zeros(self.shape, dtype=torch.bool, device=device)
        for part in self.parts:
            hidden = torch.cat([new_token0[part.row_prompt].unsqueeze(1).to(part.hidden.dtype), part.hidden[:, 1:]], 1)
            with _steer(model, None if pathways is None else pathways[part.row_prompt], layers, layers[1:]):
                logits = run_from_layer(model, k + 1, hidden, **part.forward_kwargs(k + 1, n_layers)).logits
            row_scores, row_greedy = (t.to(device) for t in part.scores(logits))
            scores = scores.index_put((part.row_problem, part.row_choice), row_scores)
            greedy = greedy.index_put((part.row_problem, part.row_choice), row_greedy)
        return scores, greedy


def _prefix_pass(model, problems: Sequence[Problem], device) -> Prefixes:
    """Keys/values of every layer for each prompt but its last token (right-padded batch, sliced back)."""
    lens = {(i, p): len(context) - 1 for i, problem in enumerate(problems) for p,
            context in enumerate(problem.contexts)}
    with_prefix = [key for key, n in lens.items() if n > 0]
    out: Prefixes = dict.fromkeys(lens)
    if not with_prefix:
        return out
    width = max(lens.values())
    ids = torch.zeros(len(with_prefix), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, (i, p) in enumerate(with_prefix):
        ids[row, : lens[i, p]] = torch.tensor(problems[i].contexts[p][:-1])
        mask[row, : lens[i, p]] = 1
    ids, mask = ids.to(device), mask.to(device)
    kv = prefix_keys_values(model, input_ids=ids, attention_mask=mask)
    for row, key in enumerate(with_prefix):
        out[key] = [(keys[row, :, : lens[key]], values[row, :, : lens[key]]) for keys, values in kv]
    return out


def _check_attention(model, problems: Sequence[Problem]) -> None:
    longest = max(len(c) + len(t) for p in problems for c in p.contexts for t in p.continuations)
    if not prefix_cache_exact(model, longest):
        why = prefix_cache_problem(model) or (f"a prompt of {longest} tokens exceeds its sliding window of "
                                             f"{model.config.sliding_window}")
        raise RomaEvalError(f"C3PO needs a reusable prefix cache: {why}; evaluate shorter prompts or use --model hf")


@torch.no_grad()
def freeze(model, problems: Sequence[Problem], layers: list[int]) -> list[Frozen]:
    """One full pass over ``problems`` (prefixes, then the tails against them): each problem's frozen
    state for steering ``layers`` (sorted decoder-layer indices), with its base routing."""
    _check_attention(model, problems)
    device = input_device(model)
    k = layers[0]
    prefixes = _prefix_pass(model, problems, device)
    entering_k, entering_next, routing = {}, {}, {}
    rows = [(i, problem.prompt(j), j) for i, problem in enumerate(problems) for j in range(len(problem.continuations))]
    for group in _buckets([len(problems[i].tail(j)) for i, _, j in rows]):
        part = _Rows(problems, prefixes, [rows[r] for r in group], device, slice(0, None))
        positions = torch.zeros(len(part.rows), 1, dtype=torch.long, device=device)
        with record_routing(model, positions, layers) as record, capture_layer_input(model, k) as at_k, \
                capture_layer_input(model, k + 1) as at_next:
            model(input_ids=part.tail_ids, **part.forward_kwargs(0, len(decoder_layers(model))))
        for r, (i, p, j) in enumerate(part.rows):
            entering_next[i, j] = at_next["hidden_states"][r, : part.tail_lens[r]]
            entering_k.setdefault((i, p), at_k["hidden_states"][r, 0])
            routing.setdefault((i, p), record.scores[r, 0].float())
    frozen = []
    for i, problem in enumerate(problems):
        tails = [entering_next[i, j] for j in range(len(problem.continuations))]
        width = max(len(t) for t in tails)
        prompts = range(len(problem.contexts))
        kv = [None if prefixes[i, p] is None else [(keys.clone(), values.clone()) for keys, values in prefixes[i,
                                                                                                               p][k:]]
              for p in prompts]
        frozen.append(Frozen(problem, kv, torch.stack([entering_k[i, p] for p in prompts]),
                             torch.stack([F.pad(t, (0, 0, 0, width - len(t))) for t in tails]),
                             torch.stack([routing[i, p] for p in prompts])))
    return frozen

"""One model's routing on some samples: one forward pass per batch of prompts, every analysed layer read at every
context token (``roma_eval.routing.choices``: the family's own scores, selection and what its top-k ranks).

A sample's prompts are the ones lm-eval gives the model: its context, tokenised as lm-eval's ``HFLM`` does
(``scoring.encode_pair`` for a multiple-choice request, whose trailing blank moves into the continuation;
``scoring.encode`` for a generation prompt) and left-truncated as lm-eval truncates.  A multiple-input task
(winogrande) has one prompt per choice; the sample's routing is then the mean over its prompts (label-free, as RoMA
and C3PO read it), and each prompt counts 1/choices in the loads.  The model is causal, so the routing at a context
token does not depend on what follows it: the continuations are not run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from roma_eval.samples import Sample


@dataclass(frozen=True)
class Prompt:
    sample: int  # index of its sample
    tokens: tuple[int, ...]  # the context tokens the model reads
    share: float  # its weight in its sample: 1, or 1/choices for a multiple-input task


@dataclass
class Routing:
    """What the analysis reads of one model's routing on N samples, at L layers of E experts (numpy, float64)."""

    layers: list[int]
    model_type: str  # the model's config.model_type
    scoring: str  # the family's score kind: "softmax" or "sigmoid"
    top_k: int
    weights: np.ndarray  # (N, L, E) routing weights at the last context token (RoMA's r_i, layer by layer)
    margin: np.ndarray  # (N, L) k-th minus (k+1)-th value of what the top-k ranks, at the last context token
    load_last: np.ndarray  # (L, E) selections at each sample's last context token (k per sample)
    load_context: np.ndarray  # (L, E) selections at every context token

    @property
    def num_experts(self) -> int:
        return self.weights.shape[-1]

    @property
    def vectors(self) -> np.ndarray:
        """(N, L·E) each sample's routing weights of every analysed layer, concatenated (RoMA's r_i)."""
        return self.weights.reshape(len(self.weights), -1)


def prompts(tokenizer, samples: Sequence[Sample], max_length: int) -> list[Prompt]:
    """Every sample's prompts as lm-eval's ``HFLM`` feeds them (see the module docstring)."""
    from roma_eval.scoring import encode, encode_pair

    out = []
    for index, sample in enumerate(samples):
        contexts = sample.choice_contexts or (sample.context,)
        for context in contexts:
            if sample.output_type == "multiple_choice":
                context_ids, continuation_ids = encode_pair(tokenizer, context, sample.continuations[0])
                window = (context_ids + continuation_ids)[-(max_length + 1):][:-1]  # lm-eval's loglikelihood input
                tokens = window[: max(1, len(window) - len(continuation_ids) + 1)]
            else:
                tokens = encode(tokenizer, context)[-max_length:]
            out.append(Prompt(index, tuple(tokens), 1.0 / len(contexts)))
    return out


class _Totals:
    """The sums ``collect_routing`` builds batch by batch."""

    def __init__(self, n_samples: int, layers: list[int]):
        self.n_samples, self.layers = n_samples, layers
        self.weights = self.margin = self.load_last = self.load_context = None
        self.top_k = 0

    def _allocate(self, n_experts: int, top_k: int) -> None:
        n, n_layers = self.n_samples, len(self.layers)
        self.weights = np.zeros((n, n_layers, n_experts))
        self.margin = np.zeros((n, n_layers))
        self.load_last, self.load_context = np.zeros((n_layers, n_experts)), np.zeros((n_layers, n_experts))
        self.top_k = top_k

    def add(self, record, batch: Sequence[Prompt]) -> None:
        import torch

        lengths = torch.tensor([len(p.tokens) for p in batch])
        rows, last = torch.arange(len(batch)), lengths - 1
        share = np.array([p.share for p in batch])
        sample = np.array([p.sample for p in batch])
        for slot, layer in enumerate(self.layers):
            choices = record[layer]
            if self.weights is None:
                self._allocate(choices.scores.shape[-1], choices.top_k)
            at_last = choices.scores[rows, last].double().cpu().numpy()
            np.add.at(self.weights[:, slot], sample, share[:, None] * at_last)
            np.add.at(self.margin[:, slot], sample, share * _margin(choices.choice[rows, last], self.top_k))
            self.load_last[slot] += _counts(choices.chosen[rows, last], share, self.load_last.shape[1])
            context = torch.arange(choices.chosen.shape[1]) < lengths[:, None]  # (batch, seq): the prompt's tokens
            token_share = np.broadcast_to(share[:, None], context.shape)[context.numpy()]
            self.load_context[slot] += _counts(choices.chosen.cpu()[context], token_share, self.load_context.shape[1])


def _margin(choice, top_k: int) -> np.ndarray:
    """k-th minus (k+1)-th largest value of each row (NaN when there are only k experts)."""
    import torch

    if choice.shape[-1] <= top_k:
        return np.full(len(choice), np.nan)
    top = torch.topk(choice.double(), top_k + 1, dim=-1).values
    return (top[:, top_k - 1] - top[:, top_k]).cpu().numpy()


def _counts(chosen, share: np.ndarray, n_experts: int) -> np.ndarray:
    """How often each expert is chosen in ``chosen`` (rows, k), each row weighted by its ``share``."""
    index = chosen.cpu().numpy()
    return np.bincount(index.reshape(-1), weights=np.repeat(share, index.shape[-1]), minlength=n_experts)


def collect_routing(model, tokenizer, samples: Sequence[Sample], layers=None, batch_size: int = 8,
                    progress: bool = False) -> Routing:
    """The routing of ``model`` as it is (its routers now) on ``samples``, at ``layers`` (``resolve_layers``)."""
    import torch
    from tqdm.auto import tqdm

    from roma_eval.devices import input_device
    from roma_eval.routing import resolve_layers, spec_for
    from roma_eval.routing.choices import record_choices
    from roma_eval.scoring import model_max_length

    layers = resolve_layers(model, layers)
    todo = sorted(prompts(tokenizer, samples, model_max_length(model)), key=lambda p: -len(p.tokens))
    totals = _Totals(len(samples), layers)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = input_device(model)
    with tqdm(total=len(todo), desc="routing", unit="prompt", disable=not progress) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            width = len(batch[0].tokens)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, prompt in enumerate(batch):  # right padding: a prompt's tokens keep their positions
                ids[row, : len(prompt.tokens)], mask[row, : len(prompt.tokens)] = torch.tensor(prompt.tokens), 1
            with torch.inference_mode(), record_choices(model, len(batch), layers) as record:
                model(input_ids=ids.to(device), attention_mask=mask.to(device))
            totals.add(record, batch)
            bar.update(len(batch))
    return Routing(layers, model.config.model_type, spec_for(model).score_kind, totals.top_k, totals.weights,
                   totals.margin, totals.load_last, totals.load_context)

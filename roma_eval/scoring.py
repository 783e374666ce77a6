"""Multiple-choice scoring exactly as lm-eval does it, but differentiable.

A choice's score is the sum of its continuation tokens' log-probabilities given the context;
acc = argmax of the scores, acc_norm = argmax of score / len(choice in characters) (lm-eval's
``process_results`` for multiple_choice).  Tokenisation mirrors lm-eval's ``_encode_pair``:
trailing context whitespace moves into the continuation, the pair is encoded whole and split at
the context's length, and sequences are left-truncated to ``max_length + 1`` tokens with the last
token dropped from the input.  RoMA's L_task (Eq. 8), the oracle and C3PO all score through here.
Multiple-input tasks (winogrande) score one shared continuation after a different prompt per choice,
and lm-eval's acc_norm then divides by the length of the choice (that prompt's option text).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from roma_eval.samples import Sample


def encode(tokenizer, text: str, add_bos: bool | None = None) -> list[int]:
    # lm-eval's HFLM.tok_encode: the tokenizer's default special tokens unless add_bos_token is set,
    # and none when the string already starts with the BOS text.
    kwargs = {} if add_bos is None else {"add_special_tokens": add_bos}
    if add_bos is None and tokenizer.bos_token and text.startswith(tokenizer.bos_token):
        kwargs = {"add_special_tokens": False}
    return tokenizer.encode(text, **kwargs)


def encode_pair(tokenizer, context: str, continuation: str, add_bos: bool | None = None):
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = encode(tokenizer, context + continuation, add_bos)
    context_ids = encode(tokenizer, context, add_bos)
    return context_ids, whole[len(context_ids):]


@dataclass
class ChoiceBatch:
    """Every (sample, choice) pair of some samples as one right-padded batch of rows."""

    input_ids: torch.Tensor  # (rows, seq)
    attention_mask: torch.Tensor  # (rows, seq)
    last_context: torch.Tensor  # (rows,) position of the last context token (predicts the first continuation token)
    continuation_ids: torch.Tensor  # (rows, max_continuation) padded with 0
    continuation_mask: torch.Tensor  # (rows, max_continuation)
    row_sample: torch.Tensor  # (rows,)
    row_choice: torch.Tensor  # (rows,)
    golds: torch.Tensor  # (samples, max_choices) bool: the right choices (Sample.right_choices; ReCoRD has several)
    char_lens: torch.Tensor  # (samples, max_choices), inf where a sample has fewer choices
    row_share: torch.Tensor  # (rows,) weight of each row in its sample's context routing (``per_sample``)

    @property
    def n_samples(self) -> int:
        return self.golds.shape[0]

    @property
    def gold(self) -> torch.Tensor:
        """(samples,) each sample's right choice (the lowest-indexed one, when several are right)."""
        return self.golds.int().argmax(dim=1)

    def right(self, predicted: torch.Tensor) -> torch.Tensor:
        """(samples,) bool: is each predicted choice index one of the right ones (lm-eval's acc of the prediction)."""
        return self.golds.gather(1, predicted.to(self.golds.device).unsqueeze(1)).squeeze(1)

    def to(self, device) -> ChoiceBatch:
        return ChoiceBatch(**{k: v.to(device) for k, v in vars(self).items()})

    def per_sample(self, row_values: torch.Tensor) -> torch.Tensor:
        """(rows, ...) values read at context tokens -> (samples, ...).  The choices of an ordinary sample
        share its context, so its value is its first row's; a multiple-input sample has one prompt per
        choice, and its value is the mean over them (label-free: the gold prompt is not singled out)."""
        weighted = row_values * self.row_share.to(row_values.dtype).view(-1, *[1] * (row_values.dim() - 1))
        out = row_values.new_zeros((self.n_samples, *row_values.shape[1:]))
        return out.index_add(0, self.row_sample.to(row_values.device), weighted)


def build_choice_batch(tokenizer, samples: Sequence[Sample], max_length: int,
                       add_bos: bool | None = None) -> ChoiceBatch:
    rows, last_context, continuations, row_sample, row_choice, row_share = [], [], [], [], [], []
    max_choices = max(len(s.continuations) for s in samples)
    char_lens = torch.full((len(samples), max_choices), float("inf"))
    for i, sample in enumerate(samples):
        n = len(sample.continuations)
        for j, (context, continuation, choice) in enumerate(zip(sample.contexts, sample.continuations, sample.choices)):
            context_ids, continuation_ids = encode_pair(tokenizer, context, continuation, add_bos)
            row_share.append(1 / n if sample.multiple_input else float(j == 0))
            tokens = (context_ids + continuation_ids)[-(max_length + 1):][:-1]
            rows.append(tokens)
            last_context.append(len(tokens) - len(continuation_ids))
            continuations.append(continuation_ids)
            row_sample.append(i)
            row_choice.append(j)
            char_lens[i, j] = float(len(choice))
    seq = max(map(len, rows))
    cont = max(map(len, continuations))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(rows), seq), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), seq), dtype=torch.long)
    continuation_ids = torch.zeros((len(rows), cont), dtype=torch.long)
    continuation_mask = torch.zeros((len(rows), cont), dtype=torch.bool)
    for r, (tokens, cont_ids) in enumerate(zip(rows, continuations)):
        input_ids[r, : len(tokens)] = torch.tensor(tokens)
        attention_mask[r, : len(tokens)] = 1
        continuation_ids[r, : len(cont_ids)] = torch.tensor(cont_ids)
        continuation_mask[r, : len(cont_ids)] = True
    golds = torch.zeros((len(samples), max_choices), dtype=torch.bool)
    for i, sample in enumerate(samples):
        golds[i, list(sample.right_choices)] = True
    return ChoiceBatch(input_ids, attention_mask, torch.tensor(last_context), continuation_ids, continuation_mask,
                       torch.tensor(row_sample), torch.tensor(row_choice), golds, char_lens, torch.tensor(row_share))


def choice_scores(logits: torch.Tensor, batch: ChoiceBatch) -> torch.Tensor:
    """(samples, max_choices) sums of continuation log-probabilities; -inf where there is no choice.

    ``logits`` are the model's (rows, seq, vocab) outputs for ``batch.input_ids``.
    """
    positions = batch.last_context.unsqueeze(1) + torch.arange(batch.continuation_ids.shape[1], device=logits.device)
    positions = positions.clamp(max=logits.shape[1] - 1)
    picked = logits.gather(1, positions.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
    token_logprobs = F.log_softmax(picked.float(), dim=-1).gather(-1, batch.continuation_ids.unsqueeze(-1)).squeeze(-1)
    row_scores = (token_logprobs * batch.continuation_mask).sum(dim=1)
    scores = torch.full(batch.char_lens.shape, float("-inf"), device=logits.device, dtype=row_scores.dtype)
    return scores.index_put((batch.row_sample, batch.row_choice), row_scores)


def task_loss(scores: torch.Tensor, gold: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """L_task (Eq. 8): -log Σ_{g ∈ gold} p(g), p the softmax over the choices' scores.

    ``gold``: (samples,) indices of the right choice -- the cross-entropy -- or a (samples, choices) bool mask of the
    right choices (``ChoiceBatch.golds``).  With one right choice the two are the same loss.  With several (ReCoRD's
    gold entities, all of which lm-eval's acc and em count as right) it is the probability of answering *any* of them
    that is raised, as acc rewards; a mean of per-gold cross-entropies would instead push the model to split its
    probability evenly between equally right answers (docs/roma.md).  Written as the log-sum-exp of the gold choices'
    log-probabilities, one gold gives the cross-entropy's per-sample values and gradients bit for bit."""
    if gold.dtype != torch.bool:
        return F.cross_entropy(scores, gold, reduction=reduction)
    loss = -torch.logsumexp(F.log_softmax(scores, dim=1).masked_fill(~gold, float("-inf")), dim=1)
    return {"mean": loss.mean, "sum": loss.sum, "none": lambda: loss}[reduction]()


def predictions(scores: torch.Tensor, batch: ChoiceBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(acc prediction, acc_norm prediction) per sample, as lm-eval's argmaxes.  A sample with fewer choices
    than the batch's widest has -inf scores and inf lengths in the padding: -inf / inf is NaN, which argmax
    would pick, so the padding's normalised score is -inf."""
    char_lens = batch.char_lens.to(scores.device)
    normalised = torch.where(torch.isfinite(char_lens), scores / char_lens, float("-inf"))
    return scores.argmax(dim=1), normalised.argmax(dim=1)


def model_max_length(model, default: int = 2048) -> int:
    # lm-eval's HFLM.max_length: the first of these config attributes that is set.
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(model.config, attr, None)
        if value:
            return int(value)
    return default


@dataclass(frozen=True)
class SampleResult:
    task: str
    doc_id: int
    scores: tuple[float, ...]
    acc: float
    acc_norm: float


@torch.no_grad()
def score_samples(model, tokenizer, samples: Sequence[Sample], batch_size: int = 8, add_bos: bool | None = None,
                  max_length: int | None = None) -> list[SampleResult]:
    """Score multiple-choice samples with the model as it is; per-sample acc and acc_norm as lm-eval's."""
    max_length = max_length or model_max_length(model)
    device = next(model.parameters()).device
    results = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        batch = build_choice_batch(tokenizer, chunk, max_length, add_bos).to(device)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        scores = choice_scores(logits, batch)
        acc_pred, norm_pred = predictions(scores, batch)
        acc, acc_norm = batch.right(acc_pred).tolist(), batch.right(norm_pred).tolist()
        for i, sample in enumerate(chunk):
            results.append(SampleResult(sample.task, sample.doc_id, tuple(scores[i, : len(sample.choices)].tolist()),
                                        float(acc[i]), float(acc_norm[i])))
    return results

"""RoMA's training data on the device: samples tokenised once, batches planned per epoch, the frozen-layer cache.

A training step must not wait for the host.  Everything a step needs is therefore prepared before the
loop, and a step only indexes device tensors with sizes the host already knows:

  - ``TrainingRows``: every (sample, choice) row tokenised once, exactly as ``scoring.build_choice_batch``
    tokenises it (it is called to do so, a chunk of samples at a time), kept flat: token ids, continuation
    ids and per-row / per-sample facts, on the device, with host copies of the lengths;
  - ``EpochPlan``: an epoch's batches (this process's share of each), as one set of device index tensors,
    copied once per epoch, and per step the host-side shapes (longest row, longest continuation, most
    choices) that ``build_choice_batch`` would pad to;
  - ``LayerCache``: the hidden states entering the first tuned layer, one row per token of every row (the
    tokens of ``TrainingRows``), written by the base pass and gathered (zero-padded) by every step.  It stays on
    the device when it fits in half of the free device memory, else in pinned host memory (copied per step,
    asynchronously).

``TrainingRows.batch(plan, step)`` returns the ``ChoiceBatch`` that ``build_choice_batch`` would have built for
the same samples, value for value, already on the device; so do the cached hidden states of
``LayerCache.gather`` equal ``build_choice_batch``'s per-batch padding.  Which samples share a batch is
``training.loop.epoch_batches`` (with length grouping, a flag that changes the training run).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from roma_eval.samples import Sample
from roma_eval.scoring import ChoiceBatch, build_choice_batch

TOKENISE_CHUNK = 256  # samples tokenised per build_choice_batch call


def _as_device(array: np.ndarray, device, dtype=None) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if dtype is not None:
        tensor = tensor.to(dtype)
    return tensor.to(device)


class TrainingRows:
    """Every choice row of ``samples`` tokenised once, flat.  Row r holds tokens ``tokens[row_start[r]:][:row_len[r]]``
    (the input of ``build_choice_batch``: context + continuation, left-truncated, last token dropped)."""

    def __init__(self, tokenizer, samples: Sequence[Sample], max_length: int, device):
        self.device = torch.device(device)
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.max_choices = max((len(s.continuations) for s in samples), default=1)
        char_lens = np.full((len(samples), self.max_choices), np.inf, dtype=np.float32)
        golds = np.zeros((len(samples), self.max_choices), dtype=bool)
        tokens, conts, columns, n_rows = [], [], [], []
        for start in range(0, len(samples), TOKENISE_CHUNK):
            chunk = build_choice_batch(tokenizer, samples[start:start + TOKENISE_CHUNK], max_length)
            lengths, cont_lengths = chunk.attention_mask.sum(1).numpy(), chunk.continuation_mask.sum(1).numpy()
            tokens += [row[:n] for row, n in zip(chunk.input_ids.numpy(), lengths)]
            conts += [row[:n] for row, n in zip(chunk.continuation_ids.numpy(), cont_lengths)]
            columns.append((lengths, cont_lengths, chunk.last_context.numpy(), chunk.row_choice.numpy(),
                            chunk.row_share.numpy()))
            char_lens[start:start + chunk.n_samples, :chunk.char_lens.shape[1]] = chunk.char_lens.numpy()
            golds[start:start + chunk.n_samples, :chunk.golds.shape[1]] = chunk.golds.numpy()
            n_rows.append(np.bincount(chunk.row_sample.numpy(), minlength=chunk.n_samples))
        cat = lambda parts, dtype: np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)  # noqa: E731
        self.row_len, self.cont_len, last_context, row_choice = (cat([c[i] for c in columns], np.int64)
                                                                  for i in range(4))
        row_share = cat([c[4] for c in columns], np.float32)
        self.sample_rows = cat(n_rows, np.int64)
        self.sample_row_start = np.concatenate([[0], np.cumsum(self.sample_rows)[:-1]]).astype(np.int64)
        self.row_start = np.concatenate([[0], np.cumsum(self.row_len)[:-1]]).astype(np.int64)
        cont_start = np.concatenate([[0], np.cumsum(self.cont_len)[:-1]]).astype(np.int64)
        self.n_tokens = int(self.row_len.sum())
        # each sample's longest row: what its batch is padded to (length grouping sorts by it)
        self.sample_len = np.maximum.reduceat(self.row_len, self.sample_row_start) if len(self.row_len) else \
            np.zeros(0, np.int64)
        d = self.device
        # One spare slot at the end of the flat arrays: reads of padded positions are clamped there (and masked).
        self.tokens = _as_device(np.append(cat(tokens, np.int64), 0), d)
        self.cont = _as_device(np.append(cat(conts, np.int64), 0), d)
        self.d_row_start, self.d_row_len = _as_device(self.row_start, d), _as_device(self.row_len, d)
        self.d_cont_start, self.d_cont_len = _as_device(cont_start, d), _as_device(self.cont_len, d)
        self.d_last_context, self.d_row_choice = _as_device(last_context, d), _as_device(row_choice, d)
        self.d_row_share = _as_device(row_share, d)
        self.d_golds = _as_device(golds, d)
        self.d_char_lens = _as_device(char_lens, d)

    def __len__(self) -> int:
        return len(self.sample_rows)

    def plan(self, batches: Sequence[Sequence[int]]) -> EpochPlan:
        """The device index tensors of ``batches`` (lists of sample indices into these rows), copied at once."""
        return EpochPlan(self, batches)

    def batch(self, plan: EpochPlan, step: int, input_ids: bool = False) -> ChoiceBatch:
        """Step ``step`` of ``plan`` as ``build_choice_batch`` builds it (``input_ids`` only when asked: the
        cached path never reads them), on the device, without waiting for it."""
        s0, s1, r0, r1, seq, cont, choices = plan.steps[step]
        samples, rows = plan.samples[s0:s1], plan.rows[r0:r1]
        positions = torch.arange(seq, device=self.device)
        starts = self.d_row_start[rows]
        mask = positions < self.d_row_len[rows].unsqueeze(1)
        ids = None
        if input_ids:
            index = (starts.unsqueeze(1) + positions).clamp(max=self.tokens.shape[0] - 1)
            ids = torch.where(mask, self.tokens[index], self.pad)
        cont_positions = torch.arange(cont, device=self.device)
        cont_mask = cont_positions < self.d_cont_len[rows].unsqueeze(1)
        cont_index = (self.d_cont_start[rows].unsqueeze(1) + cont_positions).clamp(max=self.cont.shape[0] - 1)
        return ChoiceBatch(input_ids=ids, attention_mask=mask.long(), last_context=self.d_last_context[rows],
                           continuation_ids=torch.where(cont_mask, self.cont[cont_index], 0),
                           continuation_mask=cont_mask, row_sample=plan.row_sample[r0:r1],
                           row_choice=self.d_row_choice[rows], golds=self.d_golds[samples, :choices],
                           char_lens=self.d_char_lens[samples, :choices], row_share=self.d_row_share[rows])


class EpochPlan:
    """Batches of sample indices -> one device tensor each of samples, rows and each row's sample within its batch,
    and per step (sample slice, row slice, longest row, longest continuation, most choices), host integers."""

    def __init__(self, rows: TrainingRows, batches: Sequence[Sequence[int]]):
        samples, row_ids, row_sample, self.steps = [], [], [], []
        s = r = 0
        for batch in batches:
            batch = np.asarray(batch, dtype=np.int64)
            counts = rows.sample_rows[batch]
            ids = np.concatenate([np.arange(a, a + n) for a, n in zip(rows.sample_row_start[batch], counts)]) \
                if len(batch) else np.zeros(0, np.int64)
            samples.append(batch)
            row_ids.append(ids)
            row_sample.append(np.repeat(np.arange(len(batch)), counts))
            seq = int(rows.row_len[ids].max()) if len(ids) else 0
            cont = int(rows.cont_len[ids].max()) if len(ids) else 0
            choices = int(counts.max()) if len(batch) else 0
            self.steps.append((s, s + len(batch), r, r + len(ids), seq, cont, choices))
            s, r = s + len(batch), r + len(ids)
        cat = lambda parts: np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)  # noqa: E731
        self.samples = _as_device(cat(samples), rows.device)
        self.rows = _as_device(cat(row_ids), rows.device)
        self.row_sample = _as_device(cat(row_sample), rows.device)
        self.host_rows = row_ids  # per step: its rows, as numpy (the host cache gathers with them)

    def __len__(self) -> int:
        return len(self.steps)


def _can_pin(device: torch.device) -> bool:
    """Page-locked host memory (asynchronous copies) exists only beside an accelerator."""
    return device.type != "cpu" and torch.accelerator.is_available()


@dataclass
class LayerCache:
    """Hidden states entering the first tuned layer, per token of ``TrainingRows`` (plus one spare row that padded
    positions are written to), on the device or in pinned host memory."""

    hidden: torch.Tensor  # (n_tokens + 1, hidden_size)
    device: torch.device  # where the steps run
    on_device: bool  # False: ``hidden`` is in pinned host memory

    @classmethod
    def allocate(cls, rows: TrainingRows, hidden_size: int, dtype, device, placement: str = "auto") -> LayerCache:
        """``placement``: "auto" (the device when the cache takes at most half its free memory, else pinned host
        memory), "device" or "host"."""
        device = torch.device(device)
        size = (rows.n_tokens + 1) * hidden_size * torch.finfo(dtype).bits // 8
        on_device = placement == "device" or (placement == "auto" and device.type == "cpu")
        if placement == "auto" and device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            on_device = size <= free // 2
        elif placement == "auto" and device.type != "cpu":
            on_device = True
        if on_device:
            hidden = torch.empty(rows.n_tokens + 1, hidden_size, dtype=dtype, device=device)
        else:
            hidden = torch.empty(rows.n_tokens + 1, hidden_size, dtype=dtype, pin_memory=_can_pin(device))
        return cls(hidden, device, on_device)

    def _index(self, rows: TrainingRows, row_ids: torch.Tensor, seq: int):
        positions = torch.arange(seq, device=row_ids.device)
        mask = positions < rows.d_row_len[row_ids].unsqueeze(1)
        index = rows.d_row_start[row_ids].unsqueeze(1) + positions
        return index, mask

    def write(self, rows: TrainingRows, plan: EpochPlan, step: int, states: torch.Tensor) -> None:
        """Store ``states`` (rows, seq, hidden), the layer input of step ``step`` of ``plan``, at its tokens."""
        _, _, r0, r1, seq, _, _ = plan.steps[step]
        index, mask = self._index(rows, plan.rows[r0:r1], seq)
        spare = self.hidden.shape[0] - 1
        target = torch.where(mask, index, spare).flatten()  # padded positions all land on the spare row
        values = states[:, :seq].flatten(0, 1)
        if self.on_device:
            self.hidden.index_copy_(0, target, values.to(self.hidden.dtype))
        else:  # one copy back per base-pass batch
            self.hidden.index_copy_(0, target.cpu(), values.to(self.hidden.dtype).cpu())

    def gather(self, rows: TrainingRows, plan: EpochPlan, step: int) -> torch.Tensor:
        """(rows, seq, hidden) of step ``step`` of ``plan``: its rows' cached states, zero after each row's end."""
        _, _, r0, r1, seq, _, _ = plan.steps[step]
        if self.on_device:
            index, mask = self._index(rows, plan.rows[r0:r1], seq)
            index = index.clamp(max=self.hidden.shape[0] - 1)
            return torch.where(mask.unsqueeze(-1), self.hidden[index], 0).to(self.hidden.dtype)
        # Host cache: gather on the host (numpy lengths known there), into pinned memory, copied without waiting.
        ids = plan.host_rows[step]
        starts, lengths = rows.row_start[ids], rows.row_len[ids]
        positions = np.arange(seq)
        mask = positions[None, :] < lengths[:, None]
        index = torch.from_numpy(np.where(mask, starts[:, None] + positions, self.hidden.shape[0] - 1).reshape(-1))
        staged = torch.empty(len(ids) * seq, self.hidden.shape[1], dtype=self.hidden.dtype,
                             pin_memory=_can_pin(self.device))
        torch.index_select(self.hidden, 0, index, out=staged)
        staged[torch.from_numpy(~mask.reshape(-1))] = 0
        return staged.view(len(ids), seq, -1).to(self.device, non_blocking=True)

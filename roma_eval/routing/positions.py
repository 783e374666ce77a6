"""Token positions: which tokens of each row routing is read or steered at.

RoMA reads r_i at the last context token (the paper's "Last1"; ablations First1, Middle1, Last3), the
oracle and C3PO steer there; routers see a flattened (batch * seq_len) input, so positions become rows.
"""

from __future__ import annotations

import torch

from roma_eval.errors import RomaEvalError


def token_positions(spec: str, last_context: torch.Tensor) -> torch.Tensor:
    """(rows, N) context-token positions for ``first:N``, ``middle:N`` or ``last:N`` (paper: Last1)."""
    name, _, count = spec.partition(":")
    n = int(count) if count.isdigit() and int(count) > 0 else 0
    if name not in ("first", "middle", "last") or not n:
        raise RomaEvalError(f"tokens={spec!r} is not understood; use first:N, middle:N or last:N")
    offsets = torch.arange(n, device=last_context.device)
    start = {"first": torch.zeros_like(last_context), "middle": last_context // 2 - (n - 1) // 2,
             "last": last_context - n + 1}[name]
    return (start.unsqueeze(1) + offsets).clamp(min=0).minimum(last_context.unsqueeze(1))


def last_context_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each row: right after the prompt under right padding,
    the final column under left padding."""
    seq_len = attention_mask.shape[1]
    return seq_len - 1 - attention_mask.flip(1).long().argmax(dim=1)


def as_positions(positions, attention_mask: torch.Tensor | None, batch: int, seq_len: int) -> torch.Tensor:
    """Normalise ``positions`` to a (batch, n_positions) LongTensor; None = last context token."""
    if positions is None:
        if attention_mask is None:
            return torch.full((batch, 1), seq_len - 1, dtype=torch.long)
        return last_context_positions(attention_mask).unsqueeze(1)
    positions = torch.as_tensor(positions, dtype=torch.long)
    if positions.dim() == 1:
        positions = positions.unsqueeze(1)
    if positions.shape[0] != batch or positions.min() < 0 or positions.max() >= seq_len:
        raise RomaEvalError(f"positions of shape {tuple(positions.shape)} do not fit a batch of {batch} "
                            f"sequences of length {seq_len}; give one row of in-range token indices per sequence")
    return positions


def token_rows(positions: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Rows of a router's flattened (batch * seq_len, ...) input for (batch, n_positions) positions."""
    batch = positions.shape[0]
    return (torch.arange(batch, device=positions.device).unsqueeze(1) * seq_len + positions).reshape(-1)

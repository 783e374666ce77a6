"""The domain of routing scores, and the projection back onto it after a gradient step.

Softmax routers' scores over all experts are a probability distribution (RoMA's r_i, C3PO's pathway ω, the
oracle's ``--variables scores``); sigmoid routers' (DeepSeek-V3) are independent affinities in [0, 1].
"""

from __future__ import annotations

import torch


def project_scores(values: torch.Tensor, kind: str, mass: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Per row: the Euclidean projection onto {v >= 0, Σ v = mass} for softmax scores (Duchi et al. 2008;
    ``mass`` < 1 for a subset of experts keeping its share), or the clip to [0, 1] for sigmoid scores."""
    if kind == "sigmoid":
        return values.clamp(0.0, 1.0)
    ordered = values.sort(dim=-1, descending=True).values
    excess = ordered.cumsum(dim=-1) - mass
    rank = torch.arange(1, values.shape[-1] + 1, device=values.device, dtype=values.dtype)
    support = (ordered - excess / rank > 0).sum(dim=-1, keepdim=True)  # at least 1 since mass > 0
    shift = excess.gather(-1, support - 1) / support
    return (values - shift).clamp(min=0.0)

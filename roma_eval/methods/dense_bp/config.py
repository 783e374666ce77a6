"""Dense BP configuration: RoMA's budget and layers, the task loss alone (Router Tuning's objective), and the
dense-gradient estimator.  Every field is a `roma-eval dense-bp` flag of the same name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from roma_eval.errors import RomaEvalError
from roma_eval.routing.dense import DEFAULT_BETA
from roma_eval.training.budget import RouterBudget


@dataclass
class DenseBPConfig(RouterBudget):
    estimator: Literal["default", "exact"] = field(default="default", metadata={"help":
        "default: Dense BP's Default MoE (unchosen experts' outputs approximated by an EMA of their past outputs); "
        "exact: every expert runs on every token (the exact dense gradient; E times the experts' cost)"})
    ema_beta: float = field(default=DEFAULT_BETA, metadata={"help":
        "EMA coefficient β of the default outputs, Ê ← β Ê + (1 - β) mean (not stated for post-training; ours)"})

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.ema_beta < 1:
            raise RomaEvalError(f"ema_beta={self.ema_beta} must be in [0, 1)")

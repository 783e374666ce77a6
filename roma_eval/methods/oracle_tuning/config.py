"""Oracle Tuning configuration: RoMA's layers, tokens, λ schedule and budget, with each sample's own oracle routing
as the target of the routing term.  Every field is a `roma-eval oracle-tuning` flag of the same name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from roma_eval.errors import RomaEvalError
from roma_eval.methods.roma.config import RomaConfig
from roma_eval.training.budget import RouterBudget
from roma_eval.training.schedule import HELP as SCHEDULE_HELP

_ROMA = RomaConfig()


@dataclass
class OracleTuningConfig(RouterBudget):
    oracle_routing: str | None = field(default=None, metadata={"help":
        "the --output_path of `roma-eval oracle --split train --save_routing` on the same training tasks, base model, "
        "layers and tokens (required)"})
    tokens: str = field(default=_ROMA.tokens, metadata={"help":
        "context tokens whose routing is matched: last:N, first:N, middle:N (must be the oracle run's)"})
    lam: float = field(default=_ROMA.lam, metadata={"help":
        "weight of the routing term ||r_i - r_i*||² beside the task loss, reached after the λ warm-up (RoMA's λ)"})
    lam_warmup_steps: int = field(default=_ROMA.lam_warmup_steps, metadata={"help": SCHEDULE_HELP["lam_warmup_steps"]})
    lam_warmup_ratio: float | None = field(default=_ROMA.lam_warmup_ratio, metadata={"help":
        SCHEDULE_HELP["lam_warmup_ratio"]})

    def __post_init__(self):
        super().__post_init__()
        if not self.oracle_routing:
            raise RomaEvalError("Oracle Tuning needs --oracle_routing DIR: the output of `roma-eval oracle "
                                "--split train --save_routing` on the training tasks")
        if self.lam < 0:
            raise RomaEvalError(f"lam={self.lam} must not be negative")

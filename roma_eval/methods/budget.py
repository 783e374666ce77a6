"""The training budget every trained baseline of Table 1 shares with RoMA: the same data, steps and schedule.

RoMA's released settings (FACTS.md: AdamW, 3 epochs, batch 32, linear warm-up over 10% then linear decay, max
length 1024; RomaConfig) are the defaults, so "same data, same budget" holds unless a flag changes it.  The
router-training baselines (Oracle Tuning, Dense BP) also take RoMA's learning rate and tuned layers; the peft
baselines choose their own learning rate (docs/baselines.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from roma_eval.errors import RomaEvalError
from roma_eval.methods.roma.config import RomaConfig

_ROMA = RomaConfig()


@dataclass
class TrainingBudget:
    epochs: int = field(default=_ROMA.epochs, metadata={"help": "passes over the training samples (RoMA's)"})
    batch_size: int = field(default=_ROMA.batch_size, metadata={"help": "training samples per step (RoMA's)"})
    weight_decay: float = field(default=_ROMA.weight_decay, metadata={"help": "AdamW weight decay (RoMA's)"})
    warmup_ratio: float = field(default=_ROMA.warmup_ratio, metadata={"help":
        "share of steps over which the LR rises linearly (then decays linearly; RoMA's)"})
    max_length: int = field(default=_ROMA.max_length, metadata={"help":
        "tokens per (context + choice), left-truncated like lm-eval (RoMA's)"})
    train_fraction: float = field(default=1.0, metadata={"help": "share of the training samples used"})
    limit: int | None = field(default=None, metadata={"help": "at most this many documents per training task"})
    seed: int = field(default=_ROMA.seed, metadata={"help": "seed for shuffling and sub-sampling"})

    def __post_init__(self):
        from roma_eval.methods.choices import check_choices

        check_choices(self)
        if not 0 < self.train_fraction <= 1:
            raise RomaEvalError(f"train_fraction={self.train_fraction} must be in (0, 1]")
        for name, low in (("epochs", 1), ("batch_size", 1), ("max_length", 2)):
            if getattr(self, name) < low:
                raise RomaEvalError(f"{name}={getattr(self, name)} must be at least {low}")
        if self.weight_decay < 0 or not 0 <= self.warmup_ratio <= 1:
            raise RomaEvalError(f"weight_decay={self.weight_decay}, warmup_ratio={self.warmup_ratio}: weight decay "
                                "must be >= 0 and the warm-up share in [0, 1]")
        if getattr(self, "lr", 1.0) is not None and not getattr(self, "lr", 1.0) > 0:
            raise RomaEvalError(f"lr={self.lr} must be positive")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RouterBudget(TrainingBudget):
    """RoMA's budget for a method that trains the same routers (Oracle Tuning, Dense BP)."""

    layers: str | None = field(default=None, metadata={"help":
        "tuned MoE layers: last:N, first:N, middle:N, all, or indices (default: RoMA's last 5, all when fewer)"})
    lr: float = field(default=_ROMA.lr, metadata={"help": "AdamW learning rate (RoMA's)"})

    def roma_config(self, **overrides) -> RomaConfig:
        """The RomaConfig that drives RoMA's loop (methods/roma/train.py) with this budget."""
        shared = {f.name: getattr(self, f.name) for f in fields(RouterBudget)}
        return RomaConfig(**{**shared, **overrides})

"""The training budget every trained baseline of Table 1 shares with RoMA: the same data, steps and schedule.

RoMA's defaults (RomaConfig: the released trainer's AdamW, 3 epochs, batch 32, max length 1024, and its LR schedule,
a linear warm-up over 2,000 steps then constant, with our cap of half the run's steps: ``methods/schedule.py``) are
the defaults here, so "same data, same budget" holds unless a flag changes it.  The router-training baselines
(Oracle Tuning, Dense BP) also take RoMA's learning rate and tuned layers; the peft baselines choose their own
learning rate (docs/baselines.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from roma_eval.errors import RomaEvalError
from roma_eval.methods.roma.config import RomaConfig
from roma_eval.methods.schedule import HELP as SCHEDULE_HELP
from roma_eval.methods.schedule import LRSchedule, check_schedule

_ROMA = RomaConfig()


@dataclass
class TrainingBudget:
    epochs: int = field(default=_ROMA.epochs, metadata={"help": "passes over the training samples (RoMA's)"})
    batch_size: int = field(default=_ROMA.batch_size, metadata={"help": "training samples per step (RoMA's)"})
    weight_decay: float = field(default=_ROMA.weight_decay, metadata={"help": "AdamW weight decay (RoMA's)"})
    lr_schedule: LRSchedule = field(default=_ROMA.lr_schedule, metadata={"help": SCHEDULE_HELP["lr_schedule"]})
    warmup_steps: int = field(default=_ROMA.warmup_steps, metadata={"help": SCHEDULE_HELP["warmup_steps"]})
    warmup_ratio: float | None = field(default=_ROMA.warmup_ratio, metadata={"help": SCHEDULE_HELP["warmup_ratio"]})
    max_length: int = field(default=_ROMA.max_length, metadata={"help":
        "tokens per (context + choice), left-truncated like lm-eval (RoMA's)"})
    train_fraction: float = field(default=1.0, metadata={"help": "share of the training samples used"})
    limit: int | None = field(default=None, metadata={"help": "at most this many documents per training task"})
    seed: int = field(default=_ROMA.seed, metadata={"help": "seed for shuffling and sub-sampling"})

    def __post_init__(self):
        from roma_eval.choices import check_choices

        check_choices(self)
        if not 0 < self.train_fraction <= 1:
            raise RomaEvalError(f"train_fraction={self.train_fraction} must be in (0, 1]")
        for name, low in (("epochs", 1), ("batch_size", 1), ("max_length", 2)):
            if getattr(self, name) < low:
                raise RomaEvalError(f"{name}={getattr(self, name)} must be at least {low}")
        if self.weight_decay < 0:
            raise RomaEvalError(f"weight_decay={self.weight_decay} must not be negative")
        check_schedule(self)
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
        """The RomaConfig that drives RoMA's loop (methods/roma/train.py) with this budget and every other field
        RomaConfig shares with the method's config (Oracle Tuning's tokens, λ and λ warm-up)."""
        names = {f.name for f in fields(RomaConfig)}
        shared = {f.name: getattr(self, f.name) for f in fields(self) if f.name in names}
        return RomaConfig(**{**shared, **overrides})

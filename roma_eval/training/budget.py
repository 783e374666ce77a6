"""The training budget every trained row of Table 1 shares with RoMA: the same data, steps and schedule.

The defaults are the released RoMA trainer's (``finetune_roma.py``: AdamW with lr 7e-5 and weight decay 0.01,
3 epochs, batch 32, max length 1024) and its LR schedule, a linear warm-up over 2,000 steps then constant, with our
cap of half the run's steps (``training/schedule.py``).  ``RomaConfig`` takes its defaults from here, so "same data,
same budget" holds unless a flag changes it.  The router-training baselines (Oracle Tuning, Dense BP) also take RoMA's
learning rate and tuned layers (``RouterBudget``); the peft baselines choose their own learning rate
(docs/baselines.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from roma_eval.errors import RomaEvalError
from roma_eval.training.schedule import HELP as SCHEDULE_HELP
from roma_eval.training.schedule import RELEASED_WARMUP_STEPS, LRSchedule, check_schedule

# The released trainer's settings (the paper states none of them).
RELEASED_LR = 7e-5
RELEASED_WEIGHT_DECAY = 0.01
RELEASED_EPOCHS = 3
RELEASED_BATCH_SIZE = 32
RELEASED_MAX_LENGTH = 1024
RELEASED_LR_SCHEDULE = "constant"
SEED = 0  # ours: shuffling, sub-sampling and random neighbours


@dataclass
class TrainingBudget:
    epochs: int = field(default=RELEASED_EPOCHS, metadata={"help": "passes over the training samples (RoMA's)"})
    batch_size: int = field(default=RELEASED_BATCH_SIZE, metadata={"help": "training samples per step (RoMA's)"})
    weight_decay: float = field(default=RELEASED_WEIGHT_DECAY, metadata={"help": "AdamW weight decay (RoMA's)"})
    lr_schedule: LRSchedule = field(default=RELEASED_LR_SCHEDULE, metadata={"help": SCHEDULE_HELP["lr_schedule"]})
    warmup_steps: int = field(default=RELEASED_WARMUP_STEPS, metadata={"help": SCHEDULE_HELP["warmup_steps"]})
    warmup_ratio: float | None = field(default=None, metadata={"help": SCHEDULE_HELP["warmup_ratio"]})
    max_length: int = field(default=RELEASED_MAX_LENGTH, metadata={"help":
        "tokens per (context + choice), left-truncated like lm-eval (RoMA's)"})
    train_fraction: float = field(default=1.0, metadata={"help": "share of the training samples used"})
    limit: int | None = field(default=None, metadata={"help": "at most this many documents per training task"})
    seed: int = field(default=SEED, metadata={"help": "seed for shuffling and sub-sampling"})

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
    lr: float = field(default=RELEASED_LR, metadata={"help": "AdamW learning rate (RoMA's)"})

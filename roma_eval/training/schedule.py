"""The learning-rate and λ schedules of every trained method (RoMA, Router Tuning, Oracle Tuning, Dense BP, Prefix and
Prompt Tuning), as functions of the step: a run resumed from ``DIR.partial`` continues where it stopped.

Who chose what.  The paper states no schedule.  The released trainer (RoMA's ``finetune_roma.py``) raises the LR
linearly over the first 2,000 steps and then keeps it constant (no decay), and raises λ linearly over the first
2,000 steps too: those are the defaults.  Ours: each warm-up lasts at most half the run's steps
(``MAX_WARMUP_SHARE``; on the 49k mixture, 4,594 steps, the released 2,000 fit, but a short run would otherwise
never leave its warm-up), a warm-up may be given as a share of the run's steps instead (``--warmup_ratio``,
``--lam_warmup_ratio``), and the LR may decay after the warm-up (``--lr_schedule linear`` or ``cosine``).

Step s (0-based) of a run of T steps with a warm-up of w steps runs at ``lr · factor(s)``:
  s < w:  (s + 1) / w  — the λ ramp too: the first step already learns and step w − 1 reaches the full value
          (transformers' ramp s / w would spend step 0 at LR 0);
  s ≥ w:  transformers' schedule of that name at step s: constant 1, linear (T − s) / (T − w), cosine
          ½ (1 + cos(π (s − w) / (T − w))).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, get_args

from roma_eval.errors import RomaEvalError

LRSchedule = Literal["constant", "linear", "cosine"]
LR_SCHEDULES = get_args(LRSchedule)
RELEASED_WARMUP_STEPS = 2000  # the released trainer's LR and λ warm-ups
MAX_WARMUP_SHARE = 0.5  # ours: a warm-up given in steps lasts at most this share of the run
_TRANSFORMERS_NAMES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}

# Help strings of the fields (argparse formats them: "%%" prints "%").
HELP = {
    "lr_schedule": "the LR after its warm-up: constant (the released code's; the paper states no schedule), linear "
                   "(decays to 0 at the end) or cosine (half a cosine to 0); transformers' schedules",
    "warmup_steps": f"steps over which the LR rises linearly to --lr (the released code's {RELEASED_WARMUP_STEPS:,}), "
                    f"at most {MAX_WARMUP_SHARE:.0%}% of the run's steps (ours: a short run leaves its warm-up)",
    "warmup_ratio": "the LR warm-up as a share of the run's steps, in place of --warmup_steps and its cap (ours)",
    "lam_warmup_steps": f"steps over which λ rises linearly to --lam (the released code's {RELEASED_WARMUP_STEPS:,}), "
                        f"at most {MAX_WARMUP_SHARE:.0%}% of the run's steps (ours: a short run leaves its warm-up)",
    "lam_warmup_ratio": "the λ warm-up as a share of the run's steps, in place of --lam_warmup_steps and its cap "
                        "(ours)",
}


def warmup_length(steps: int, ratio: float | None, total: int) -> int:
    """A warm-up's steps in a run of ``total``: ``ratio`` of them (at least 1 when positive) if given, else
    ``steps`` capped at ``MAX_WARMUP_SHARE`` of the run."""
    if ratio is not None:
        return max(1, round(ratio * total)) if ratio > 0 else 0
    return min(steps, int(MAX_WARMUP_SHARE * total))


def ramp(step: int, warmup: int) -> float:
    """The linear warm-up factor of step ``step`` (0-based): (step + 1) / warmup, then 1."""
    return 1.0 if step + 1 >= warmup else (step + 1) / warmup


def _after_warmup(name: str, warmup: int, total: int) -> Callable[[int], float]:
    """transformers' LR factor of ``name`` (its ``LambdaLR``'s lambda; read from a throwaway optimiser, since the
    training loops set the LR by hand each step)."""
    import torch
    from transformers import get_scheduler

    throwaway = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    return get_scheduler(_TRANSFORMERS_NAMES[name], throwaway, num_warmup_steps=warmup,
                         num_training_steps=total).lr_lambdas[0]


@dataclass
class StepSchedule:
    """The LR and λ factors of each step of a run of ``total`` steps (multiply by --lr and --lam)."""

    name: str
    total: int
    warmup: int
    lam_warmup: int = 0
    _after: Callable[[int], float] = field(init=False, repr=False)

    def __post_init__(self):
        self._after = _after_warmup(self.name, self.warmup, self.total)

    @classmethod
    def of(cls, config, total: int) -> StepSchedule:
        """The schedule of ``config`` (the fields in ``HELP``; peft's configs have no λ) for ``total`` steps."""
        return cls(config.lr_schedule, total, warmup_length(config.warmup_steps, config.warmup_ratio, total),
                   warmup_length(getattr(config, "lam_warmup_steps", 0), getattr(config, "lam_warmup_ratio", None),
                                 total))

    def lr(self, step: int) -> float:
        return ramp(step, self.warmup) if step < self.warmup else float(self._after(step))

    def lam(self, step: int) -> float:
        return ramp(step, self.lam_warmup)

    def describe(self) -> dict:
        """What the run used, for its summary."""
        return {"lr_schedule": self.name, "steps": self.total, "warmup_steps": self.warmup,
                "lam_warmup_steps": self.lam_warmup}


def check_schedule(config) -> None:
    """One clear line for a negative warm-up or a share outside [0, 1] (``lr_schedule`` is a checked Literal)."""
    for name in ("warmup_steps", "lam_warmup_steps"):
        if getattr(config, name, 0) < 0:
            raise RomaEvalError(f"{name}={getattr(config, name)} must be at least 0")
    for name in ("warmup_ratio", "lam_warmup_ratio"):
        value = getattr(config, name, None)
        if value is not None and not 0 <= value <= 1:
            raise RomaEvalError(f"{name}={value} must be in [0, 1]")

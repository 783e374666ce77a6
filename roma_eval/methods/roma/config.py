"""RoMA training configuration.  Defaults: the paper's best setting where the paper states one, the released trainer's
(RoMA's ``finetune_roma.py``) where the paper is silent, ours where neither says; each field's help says which.

Every field is a `roma-eval train` flag of the same name (dashes for underscores).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Literal

from roma_eval.choices import check_choices
from roma_eval.neighbours import DEFAULT_K, DEFAULT_SIGMA, Kernel
from roma_eval.training import budget
from roma_eval.training.schedule import HELP as SCHEDULE_HELP
from roma_eval.training.schedule import RELEASED_WARMUP_STEPS, LRSchedule, check_schedule


@dataclass
class RomaConfig:
    layers: str | None = field(default=None, metadata={"help":
        "tuned MoE layers: last:N, first:N, middle:N, all, or indices (default: the paper's last 5, all when the model"
        " has fewer)"})
    tokens: str = field(default="last:1", metadata={"help":
        "context tokens whose routing forms r_i: last:N, first:N, middle:N (paper: Last1)"})
    regulariser: Literal["manifold", "l1", "l2", "entropy", "none"] = field(default="manifold", metadata={"help":
        "manifold (Eq. 7), l1 / l2 (router weight change), entropy (routing entropy), none (plain router tuning)"})
    lam: float = field(default=0.8, metadata={"help":
        "λ in Eq. 9, reached after the λ warm-up (the released code's 0.8; the paper states none)"})
    neighbours: Literal["knn", "eps", "random"] = field(default="knn", metadata={"help":
        "knn (Eq. 3), eps (Eq. 4) or random (ablation)"})
    k: int = field(default=DEFAULT_K, metadata={"help": "neighbours per sample for knn / random (paper: 3)"})
    eps: float | None = field(default=None, metadata={"help":
        "ε-ball radius in embedding distance, for --neighbours eps"})
    sigma: float = field(default=DEFAULT_SIGMA, metadata={"help":
        "Gaussian kernel width σ (0.4: the released code's number for its own kernel, --kernel released; the paper "
        "states none; Eq. 5 with the same σ is much sharper: a neighbour at cosine 0.8 gets sim 0.29 in Eq. 5, 0.88 in "
        "the released kernel)"})
    kernel: Kernel = field(default="eq5", metadata={"help":
        "eq5: the paper's Eq. 5, exp(-||E(x_i) - E(x_j)||² / (2σ²)); released: the released code's "
        "exp(-(1 - cos)² / (2σ²)) on the embeddings' cosine similarity"})
    embedder: str | None = field(default=None, metadata={"help":
        "sentence-transformers model (default: the packaged all-MiniLM-L6-v2, the released code's)"})
    lr: float = field(default=budget.RELEASED_LR, metadata={"help":
        "AdamW learning rate (the released code's, for models of the paper's size; small models need more: the toy's "
        "is 1e-2)"})
    weight_decay: float = field(default=budget.RELEASED_WEIGHT_DECAY, metadata={"help":
        "AdamW weight decay (the released code's)"})
    epochs: int = field(default=budget.RELEASED_EPOCHS, metadata={"help":
        "passes over the training samples (the released code's)"})
    batch_size: int = field(default=budget.RELEASED_BATCH_SIZE, metadata={"help":
        "training samples per step (the released code's)"})
    lr_schedule: LRSchedule = field(default=budget.RELEASED_LR_SCHEDULE, metadata={"help":
        SCHEDULE_HELP["lr_schedule"]})
    warmup_steps: int = field(default=RELEASED_WARMUP_STEPS, metadata={"help": SCHEDULE_HELP["warmup_steps"]})
    warmup_ratio: float | None = field(default=None, metadata={"help": SCHEDULE_HELP["warmup_ratio"]})
    lam_warmup_steps: int = field(default=RELEASED_WARMUP_STEPS, metadata={"help": SCHEDULE_HELP["lam_warmup_steps"]})
    lam_warmup_ratio: float | None = field(default=None, metadata={"help": SCHEDULE_HELP["lam_warmup_ratio"]})
    max_length: int = field(default=budget.RELEASED_MAX_LENGTH, metadata={"help":
        "tokens per (context + choice), left-truncated like lm-eval (the released code's)"})
    train_fraction: float = field(default=1.0, metadata={"help": "share of the training samples used (data ablation)"})
    refresh_neighbour_routing: bool = field(default=False, metadata={"help":
        "recompute neighbours' r_j with the current routers each epoch (default: base routing, fixed)"})
    limit: int | None = field(default=None, metadata={"help": "at most this many documents per training task"})
    seed: int = field(default=budget.SEED, metadata={"help": "seed for shuffling, sub-sampling and random neighbours"})
    no_layer_cache: bool = field(default=False, metadata={"help":
        "run every layer at every step instead of caching the hidden states entering the first tuned layer (same "
        "routers within float rounding; slower, less memory: for training sets whose cache fits nowhere)"})
    group_by_length: bool = field(default=False, metadata={"help":
        "batch samples of similar length together (less padding, faster): each run of 50 batches of the shuffled "
        "order is sorted by length and the batches shuffled again (changes which samples share a step, so the run)"})
    log_every: int = field(default=50, metadata={"help":
        "steps between copies of the losses to the host (the training log, the progress bar and the non-finite "
        "loss check); the device never waits for the host in between"})

    def __post_init__(self):
        from roma_eval.errors import RomaEvalError

        check_choices(self)
        if not 0 < self.train_fraction <= 1:
            raise RomaEvalError(f"train_fraction={self.train_fraction} must be in (0, 1]")
        at_least = {"k": (self.k, 1), "epochs": (self.epochs, 1), "batch_size": (self.batch_size, 1),
                    "log_every": (self.log_every, 1),
                    "max_length": (self.max_length, 2)}
        for name, (value, low) in at_least.items():
            if value < low:
                raise RomaEvalError(f"{name}={value} must be at least {low}")
        for name in ("sigma", "lr"):
            if not getattr(self, name) > 0:
                raise RomaEvalError(f"{name}={getattr(self, name)} must be positive")
        if self.lam < 0 or self.weight_decay < 0:
            raise RomaEvalError(f"lam={self.lam}, weight_decay={self.weight_decay}: neither may be negative "
                                "(lam 0 or --regulariser none trains on the task loss alone)")
        check_schedule(self)
        if self.neighbours == "eps" and not (self.eps or 0) > 0:
            raise RomaEvalError(f"eps={self.eps}: --neighbours eps needs a positive --eps (a distance between "
                                "embeddings)")

    @property
    def method(self) -> str:
        """Table 1's row this configuration trains: Router Tuning when only the task loss trains the routers."""
        return "router_tuning" if self.regulariser == "none" or self.lam == 0 else "roma"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def sharing(cls, settings, **overrides) -> RomaConfig:
        """The RomaConfig that drives the router-training recipe (``methods/roma/recipe.py``) for another method's
        ``settings``: every field the two share (the budget and layers, Oracle Tuning's tokens, λ and λ warm-up),
        then ``overrides``."""
        names = {f.name for f in fields(cls)}
        shared = {f.name: getattr(settings, f.name) for f in fields(settings) if f.name in names}
        return cls(**{**shared, **overrides})

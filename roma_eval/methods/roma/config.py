"""RoMA training configuration: defaults are the paper's best setting (FACTS.md), then the released code's.

Every field is a `roma-eval train` flag of the same name (dashes for underscores).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from roma_eval.methods.choices import check_choices
from roma_eval.neighbours import DEFAULT_K, DEFAULT_SIGMA


@dataclass
class RomaConfig:
    layers: str | None = field(default=None, metadata={"help":
        "tuned MoE layers: last:N, first:N, middle:N, all, or indices (default: the paper's last 5, all when the model"
        " has fewer)"})
    tokens: str = field(default="last:1", metadata={"help":
        "context tokens whose routing forms r_i: last:N, first:N, middle:N (paper: Last1)"})
    regulariser: Literal["manifold", "l1", "l2", "entropy", "none"] = field(default="manifold", metadata={"help":
        "manifold (Eq. 7), l1 / l2 (router weight change), entropy (routing entropy), none (plain router tuning)"})
    lam: float = field(default=0.8, metadata={"help": "λ in Eq. 9, reached after the warm-up"})
    neighbours: Literal["knn", "eps", "random"] = field(default="knn", metadata={"help":
        "knn (Eq. 3), eps (Eq. 4) or random (ablation)"})
    k: int = field(default=DEFAULT_K, metadata={"help": "neighbours per sample for knn / random (paper: 3)"})
    eps: float | None = field(default=None, metadata={"help":
        "ε-ball radius in embedding distance, for --neighbours eps"})
    sigma: float = field(default=DEFAULT_SIGMA, metadata={"help": "Gaussian kernel width σ of Eq. 5"})
    embedder: str | None = field(default=None, metadata={"help":
        "sentence-transformers model (default: packaged all-MiniLM-L6-v2)"})
    lr: float = field(default=7e-5, metadata={"help": "AdamW learning rate"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    epochs: int = field(default=3, metadata={"help": "passes over the training samples"})
    batch_size: int = field(default=32, metadata={"help": "training samples per step"})
    warmup_ratio: float = field(default=0.1, metadata={"help":
        "share of steps over which LR and λ rise linearly (then LR decays linearly)"})
    max_length: int = field(default=1024, metadata={"help":
        "tokens per (context + choice), left-truncated like lm-eval"})
    train_fraction: float = field(default=1.0, metadata={"help": "share of the training samples used (data ablation)"})
    refresh_neighbour_routing: bool = field(default=False, metadata={"help":
        "recompute neighbours' r_j with the current routers each epoch (default: base routing, fixed)"})
    limit: int | None = field(default=None, metadata={"help": "at most this many documents per training task"})
    seed: int = field(default=0, metadata={"help": "seed for shuffling, sub-sampling and random neighbours"})
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
        if not 0 <= self.warmup_ratio <= 1:
            raise RomaEvalError(f"warmup_ratio={self.warmup_ratio} must be in [0, 1]")
        if self.neighbours == "eps" and not (self.eps or 0) > 0:
            raise RomaEvalError(f"eps={self.eps}: --neighbours eps needs a positive --eps (a distance between "
                                "embeddings)")

    def to_dict(self) -> dict:
        return asdict(self)

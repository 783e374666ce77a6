"""ICL configuration.  The paper's Table 1 has an "ICL" row (retrieved demonstrations) and states neither k, nor the
order, nor the pool; our choices (docs/baselines.md): k = 3 (RoMA's and C3PO's best neighbourhood size), the pool is
RoMA's success set S (Eq. 2), the neighbours are RoMA's (same embedder, same kNN), the nearest example last (next
to the question).  Every field is a `roma-eval icl` flag of the same name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from roma_eval.choices import check_choices
from roma_eval.errors import RomaEvalError
from roma_eval.neighbours import DEFAULT_K


@dataclass
class IclConfig:
    k: int = field(default=DEFAULT_K, metadata={"help":
        "in-context examples per evaluation document (not stated in the paper; RoMA's neighbourhood size)"})
    order: Literal["nearest_last", "nearest_first"] = field(default="nearest_last", metadata={"help":
        "order of the examples: nearest_last puts the most similar example next to the question"})
    embedder: str | None = field(default=None, metadata={"help":
        "sentence-transformers model (default: packaged all-MiniLM-L6-v2, RoMA's)"})
    train_limit: int | None = field(default=None, metadata={"help":
        "at most this many documents per training task enter the pool (before the success filter)"})
    batch_size: int = field(default=32, metadata={"help":
        "batch size of the base model's pass over the training samples and of lm-eval's evaluation"})
    max_length: int | None = field(default=None, metadata={"help":
        "tokens per (context + choice) when scoring the training samples (default: the model's, as lm-eval)"})

    def __post_init__(self):
        check_choices(self)
        if self.k < 1 or self.batch_size < 1:
            raise RomaEvalError(f"k={self.k}, batch_size={self.batch_size}: both must be at least 1")
        if self.train_limit is not None and self.train_limit < 1:
            raise RomaEvalError(f"train_limit={self.train_limit} must be at least 1 (or unset)")

    def to_dict(self) -> dict:
        return asdict(self)

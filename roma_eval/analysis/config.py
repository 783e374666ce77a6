"""What `roma-eval analyze` measures and how: every field is a flag of the verb (dashes for underscores).

The defaults are ours (docs/analysis.md says why): the paper's routing weights (the last five MoE layers, RoMA's
tuned ones, all experts, the last context token) and its embedder; k = 10 neighbours; a 95% percentile bootstrap of
1,000 resamples.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from roma_eval.errors import RomaEvalError

DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"  # the name of roma_eval.embedding's default embedder


@dataclass(frozen=True)
class AnalysisConfig:
    layers: str | None = field(default=None, metadata={"help":
        "analysed MoE layers: last:N, first:N, middle:N, all, or indices (default: the last 5 MoE layers, RoMA's "
        "tuned ones; all of them when the model has fewer)"})
    limit: int | None = field(default=None, metadata={"help":
        "analyse at most this many of the run's documents per task (default: every document the run evaluated)"})
    k: int = field(default=10, metadata={"help":
        "neighbours per sample in the embedding space and in the routing space (the kNN overlap and the neighbour "
        "similarity; fewer when a task has fewer samples)"})
    embedder: str | None = field(default=None, metadata={"help":
        "sentence-transformers directory or hub name of the embedder (default: all-MiniLM-L6-v2, RoMA's, from its "
        "package)"})
    bootstrap: int = field(default=1000, metadata={"help":
        "bootstrap resamples of the samples for the 95% intervals"})
    seed: int = field(default=0, metadata={"help": "seed of the random pairs and of the bootstrap"})
    overload_factor: float = field(default=2.0, metadata={"help":
        "an expert is overloaded when its share of the selections over context tokens exceeds this many times the "
        "uniform share 1/num_experts"})
    batch_size: int = field(default=8, metadata={"help": "prompts per forward pass (results do not depend on it)"})

    def __post_init__(self):
        if self.k < 1 or self.bootstrap < 1 or self.batch_size < 1 or (self.limit is not None and self.limit < 1):
            raise RomaEvalError(f"k={self.k}, bootstrap={self.bootstrap}, batch_size={self.batch_size}, "
                                f"limit={self.limit}: each must be at least 1")
        if self.overload_factor <= 1:
            raise RomaEvalError(f"overload_factor={self.overload_factor} must be above 1 (1 is the uniform load)")

    def settings(self) -> dict:
        """The analysis' ``settings`` object: what changes its numbers besides the run, the tasks and the layers."""
        return {"k": self.k, "embedder": self.embedder or DEFAULT_EMBEDDER, "bootstrap": self.bootstrap,
                "seed": self.seed, "overload_factor": self.overload_factor}

    def to_dict(self) -> dict:
        return asdict(self)

"""Oracle configuration.  The paper (arXiv 2511.07419, §1 and Table 1 "Oracle") gives no steps, rate
or variables for its per-sample routing descent; these defaults are ours (docs/oracle.md says why).

Every field is a `roma-eval oracle` flag of the same name (dashes for underscores).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from roma_eval.choices import check_choices
from roma_eval.errors import RomaEvalError

CPU_BATCH, ACCELERATOR_BATCH = 32, 128  # default samples descending together


@dataclass
class OracleConfig:
    layers: str | None = field(default=None, metadata={"help":
        "steered MoE layers: last:N, first:N, middle:N, all, or indices (default, ours: the last 5 MoE layers, "
        "RoMA's tuned and C3PO's critical ones; all when the model has fewer)"})
    positions: Literal["all", "tokens"] = field(default="all", metadata={"help":
        "steered positions in the steered layers: all = every position the scores depend on (the context, shared "
        "by a sample's choices, and each choice's continuation; a generation task's prompt); tokens = only the "
        "context tokens of --tokens (with last:1, the last context token)"})
    tokens: str = field(default="last:1", metadata={"help":
        "context tokens, last:N, first:N or middle:N: the steered ones with --positions tokens; where "
        "--save_routing reads the routing either way"})
    variables: Literal["offset", "scores"] = field(default="offset", metadata={"help":
        "offset: additive router-logit offsets starting at 0; scores: routing probabilities over all experts, starting"
        " at the base routing, kept on the simplex"})
    optimizer: Literal["sample-adam", "adam", "sgd"] = field(default="sample-adam", metadata={"help":
        "sample-adam: Adam with one second moment per sample (each step moves a sample's variables by about lr in RMS;"
        " directions without gradient stay put); adam: per-coordinate Adam; sgd"})
    lr: float = field(default=0.2, metadata={"help":
        "learning rate; 0 keeps the base routing (a sanity check: the oracle then equals base)"})
    max_steps: int = field(default=30, metadata={"help": "gradient steps per sample at most (the step budget)"})
    stable: int = field(default=2, metadata={"help":
        "a multiple-choice sample stops once it has been right at this many consecutive iterates (a generation sample "
        "stops at its first real generation with full marks)"})
    criterion: Literal["both", "acc", "acc_norm"] = field(default="both", metadata={"help":
        "what 'right' means for multiple choice: both = every metric the task reports among acc and acc_norm, or the "
        "one named; never at the cost of a metric right at the base routing"})
    batch_size: int | None = field(default=None, metadata={"help":
        "samples descending together, each with its own variables (default: 32 on a CPU, 128 on an accelerator, where "
        "a descent step costs about as much for 128 samples as for 32; results do not depend on it)"})
    prefix_cache: bool = field(default=True, metadata={"help":
        "--positions tokens: run the tokens before the first steered token once and reuse their KV cache; "
        "--positions all: run a sample's shared context once per step for all of its choices"})
    save_routing: bool = field(default=False, metadata={"help":
        "also write each sample's base and oracle routing scores at the --tokens positions, and with --positions "
        "tokens the reported variables (routing_<task>_<date>.jsonl)"})
    seed: int = field(default=0, metadata={"help": "torch seed (the descent itself is deterministic)"})

    def __post_init__(self):
        if self.max_steps < 1:
            raise RomaEvalError(f"max_steps={self.max_steps}: the step budget must be at least 1 "
                                "(use `roma-eval eval --model hf` for the base model's scores)")
        check_choices(self)
        if self.lr < 0 or self.stable < 1 or (self.batch_size is not None and self.batch_size < 1):
            raise RomaEvalError(f"lr={self.lr}, stable={self.stable}, batch_size={self.batch_size}: "
                                "lr must be >= 0, stable and batch_size >= 1")

    def to_dict(self) -> dict:
        return asdict(self)

    def for_device(self, device) -> OracleConfig:
        """The config with ``batch_size`` set for ``device`` when it was left unset."""
        from dataclasses import replace

        if self.batch_size is not None:
            return self
        return replace(self, batch_size=CPU_BATCH if str(device).startswith("cpu") else ACCELERATOR_BATCH)

    def settings(self) -> dict:
        """The fields that change what is written (batching and the prefix cache do not)."""
        return {k: v for k, v in self.to_dict().items() if k not in ("batch_size", "prefix_cache")}

"""C3PO configuration: defaults are the C3PO paper's best setting (arXiv 2504.07964), the released NGD's, then ours.

``C3POConfig``: every field is an lm-eval ``--model c3po`` model_arg of the same name.  The critical layers and the
embedder are not there: they are fixed when the reference set is built, by ``ReferenceBuild``
(``roma-eval c3po build-reference``).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from typing import Literal

from roma_eval.choices import check_choices
from roma_eval.errors import RomaEvalError
from roma_eval.harness import typed_value
from roma_eval.neighbours import DEFAULT_K, DEFAULT_SIGMA

PREFIX = "c3po_"  # lm-eval model_args name of a field: c3po_method=ngd, c3po_k=3, ...


@dataclass
class C3POConfig:
    method: Literal["ngd", "kernel", "mode"] = field(default="ngd", metadata={"help":
        "ngd (neighbourhood gradient descent, the paper's best), kernel (kernel regression with an α search) or mode "
        "(mean-shift mode finding)"})
    k: int = field(default=DEFAULT_K, metadata={"help":
        "neighbours per test prompt, by embedding kNN (paper: 3); also the size of mode finding's N(ω)"})
    sigma: float = field(default=DEFAULT_SIGMA, metadata={"help":
        "width of the Gaussian kernel K on embedding distances (ours: RoMA's released value)"})
    dedup: float = field(default=0.95, metadata={"help":
        "references whose prompt has cosine similarity above this to the test prompt are near-duplicates and dropped, "
        "so that a copy of the test question cannot be its own neighbour (ours, not the paper's; >1 keeps all)"})
    steps: int = field(default=10, metadata={"help": "NGD gradient steps (paper: 10)"})
    optimizer: Literal["adam", "sgd"] = field(default="adam", metadata={"help":
        "NGD optimiser: adam (torch.optim.Adam, cosine schedule CosineAnnealingLR(T_max=steps, eta_min=lr_min): the "
        "same group's released NGD, R2-T2's evaluate.py; a step moves each routing score by about the learning rate "
        "whatever the gradient's scale) or sgd (plain gradient descent, lr_min reached at the last step; at lr 1e-2 it "
        "barely moves routing probabilities)"})
    lr: float = field(default=1e-2, metadata={"help":
        "NGD learning rate at the first step, annealed by a cosine (paper: 1e-2)"})
    lr_min: float = field(default=1e-5, metadata={"help":
        "NGD learning rate the cosine anneals to (paper: 1e-5): reached after the last step with adam (as R2-T2's "
        "code), at the last step with sgd"})
    core_experts: int = field(default=0, metadata={"help":
        "re-mix only the top-n experts of the test prompt's own pathway per layer; 0 = all (paper: top-20 of 64 is as "
        "good as all)"})
    alpha: float | None = field(default=None, metadata={"help":
        "kernel regression and mode finding: fix α in ω ← αω + (1-α)ω̂ (or ω̄) instead of searching it (1 keeps the "
        "base routing; 0 makes mode finding a plain mean-shift)"})
    alpha_step: float = field(default=0.1, metadata={"help":
        "kernel regression and mode finding: grid step of the α search over [0, 1], a divisor of 1 (paper: 0.1)"})
    mode_neighbours: Literal["pathway", "embedding"] = field(default="pathway", metadata={"help":
        "mode finding: N(ω), the reference pathways ω̄ averages — pathway (the k nearest to the current ω, re-found "
        "every iteration, near-duplicates of the test prompt excluded: the paper's neighbourhood in pathway space) or "
        "embedding (the test prompt's k embedding neighbours, fixed) (ours)"})
    mode_steps: int = field(default=3, metadata={"help":
        "mode finding: iterations of ω ← αω + (1-α)ω̄ at most, each with its own α search; stops once no prompt moves "
        "(ours: 3 iterations are 33 gradient-free loss evaluations, against NGD's 10 forward + backward)"})
    bandwidth: float | None = field(default=None, metadata={"help":
        "mode finding: width h of the pathway kernel K(ω_i, ω) = exp(-||ω_i - ω||² / 2h²) (ours, default: per test "
        "prompt, the median distance from its base pathway to N(ω0))"})
    all_generated_tokens: bool = field(default=False, metadata={"help":
        "generation: also override every generated token, not only the last prompt token (the public code did; "
        "generation collapsed)"})
    group: int | None = field(default=None, metadata={"help":
        "test prompts optimised together, each with its own pathway (default: 8 on a CPU, 64 on an accelerator, where "
        "a steered pass costs about as much for 64 prompts as for 8; the grouping changes only float rounding)"})

    def __post_init__(self):
        check_choices(self)
        if self.k < 1 or self.steps < 1 or self.mode_steps < 1 or (self.group is not None and self.group < 1):
            raise RomaEvalError(f"k={self.k}, steps={self.steps}, mode_steps={self.mode_steps}, group={self.group}: "
                                "each must be at least 1")
        if self.core_experts < 0:
            raise RomaEvalError(f"core_experts={self.core_experts} must be >= 0 (0 re-mixes all experts)")
        if self.alpha is not None and not 0 <= self.alpha <= 1:
            raise RomaEvalError(f"alpha={self.alpha} must be in [0, 1] (or unset to search it)")
        if not 0 < self.alpha_step <= 1 or abs(1 / self.alpha_step - round(1 / self.alpha_step)) > 1e-6:
            raise RomaEvalError(f"alpha_step={self.alpha_step} must divide 1 (e.g. 0.1, 0.05, 0.25) so that the α grid "
                                "runs from 1 to 0 in equal steps")
        if self.bandwidth is not None and self.bandwidth <= 0:
            raise RomaEvalError(f"bandwidth={self.bandwidth} must be positive (or unset for the median distance)")
        if self.sigma <= 0 or self.lr < 0 or self.lr_min < 0:
            raise RomaEvalError(f"sigma={self.sigma} must be positive and lr={self.lr}, lr_min={self.lr_min} "
                                "non-negative")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_model_args(cls, args: dict) -> C3POConfig:
        """Take the ``c3po_<field>`` entries out of lm-eval model_args (prefixed: they share HFLM's namespace and
        land in the results' ``config.model_args``); strings are typed as lm-eval types its own model_args."""
        names = [f.name for f in fields(cls)]
        if unprefixed := [name for name in names if name in args]:
            raise RomaEvalError(f"model_arg {unprefixed[0]}= is now c3po_{unprefixed[0]}= (C3PO's settings are "
                                "prefixed with c3po_)")
        values = {name: args.pop(f"{PREFIX}{name}") for name in names if f"{PREFIX}{name}" in args}
        values = {name: typed_value(v) if isinstance(v, str) else v for name, v in values.items()}
        try:
            return cls(**values)
        except RomaEvalError as exc:  # name the model_args as the user typed them: c3po_optimizer=, not optimizer=
            raise RomaEvalError(re.sub(rf"\b({'|'.join(names)})=", rf"{PREFIX}\1=", str(exc))) from None
        except TypeError as exc:  # a value of the wrong type reached a comparison in __post_init__
            raise RomaEvalError(f"C3PO model_args {values}: {exc}; give numbers for numeric settings") from None


@dataclass
class ReferenceBuild:
    """How a reference set is built (``build_reference``): the base model it is for and the build's settings,
    recorded in its reference.json.  The settings are `roma-eval c3po build-reference`'s flags."""

    base_model: str = field(metadata={"help": "the base model's hub id or path, as recorded in the reference"})
    revision: str | None = field(default=None, metadata={"help": "the base model's revision on the hub"})
    layers: str | list[int] | None = field(default=None, metadata={"help":
        "critical layers: last:N, first:N, middle:N, all, or indices (default: the paper's last 5, all when the "
        "model has fewer)"})
    embedder: str | None = field(default=None, metadata={"help":
        "sentence-transformers model (default: packaged all-MiniLM-L6-v2)"})
    batch_size: int = field(default=8, metadata={"help": "samples per forward pass"})
    chunk_size: int = field(default=256, metadata={"help": "samples per saved chunk, the unit of resumption"})
    prefixes: bool = field(default=True, metadata={"help":
        "store frozen prefixes (without them the file is smaller and C3PO computes them once per run)"})
    max_length: int | None = field(default=None, metadata={"help":
        "tokens per (context + choice) (default: the model's, as lm-eval)"})

    def __post_init__(self):
        if self.batch_size < 1 or self.chunk_size < 1:
            raise RomaEvalError(f"batch_size={self.batch_size}, chunk_size={self.chunk_size}: both must be at least 1")

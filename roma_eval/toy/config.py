"""What defines a toy model: the generator version, the architecture and the training recipe.

The whole ``ToyConfig`` (and nothing else) is hashed into the cache key, so two runs with equal
configs share one pretrained model and any change retrains.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace

from roma_eval.errors import RomaEvalError
from roma_eval.toy.suite import GENERATOR_VERSION

# How each architecture names its expert count and per-expert width (the rest is shared).
EXPERT_FIELDS = {
    "olmoe": ("num_experts", "intermediate_size"),
    "qwen3_moe": ("num_experts", "moe_intermediate_size"),
    "mixtral": ("num_local_experts", "intermediate_size"),
}


@dataclass(frozen=True)
class ModelConfig:
    arch: str = field(default="olmoe", metadata={"help": "transformers MoE architecture: " + ", ".join(EXPERT_FIELDS)})
    layers: int = field(default=6, metadata={"help": "decoder layers, every one a MoE layer"})
    hidden_size: int = field(default=128, metadata={"help": "model width"})
    heads: int = field(default=4, metadata={"help": "attention heads (as many key/value heads)"})
    experts: int = field(default=8, metadata={"help": "routed experts per layer"})
    top_k: int = field(default=2, metadata={"help": "experts chosen per token"})
    expert_size: int = field(default=128, metadata={"help": "hidden width of one expert's MLP"})
    router_aux_loss_coef: float = field(default=0.01, metadata={
        "help": "weight of the load-balancing loss during pretraining (OLMoE's own value)"})
    vocab_size: int = field(default=2048, metadata={
        "help": "upper bound for the BPE tokenizer; the toy text needs about 1,560 for every word to be one token"})

    def overrides(self) -> dict:
        """Keyword overrides for ``roma_eval.tiny.tiny_config``."""
        if self.arch not in EXPERT_FIELDS:
            raise RomaEvalError(f"toy models support the architectures {', '.join(EXPERT_FIELDS)}, not {self.arch!r}; "
                                "pick one of them")
        n_experts, width = EXPERT_FIELDS[self.arch]
        return {"hidden_size": self.hidden_size, "num_hidden_layers": self.layers,
                "num_attention_heads": self.heads, "num_key_value_heads": self.heads,
                "head_dim": self.hidden_size // self.heads, n_experts: self.experts, width: self.expert_size,
                "num_experts_per_tok": self.top_k, "router_aux_loss_coef": self.router_aux_loss_coef,
                "max_position_embeddings": 512}


@dataclass(frozen=True)
class TrainConfig:
    steps: int = field(default=1500, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=32, metadata={"help": "rows per step"})
    seq_len: int = field(default=128, metadata={"help": "tokens per row (whole documents packed, then padded)"})
    lr: float = field(default=3e-3, metadata={"help": "peak AdamW learning rate"})
    warmup_steps: int = field(default=100, metadata={"help": "linear warm-up, then constant"})
    decay_steps: int = field(default=600, metadata={"help": "the last steps: cosine decay to lr/10"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay"})
    threads: int = field(default=2, metadata={
        "help": "torch CPU threads; part of the key because float sums depend on the split of work"})
    seed: int = field(default=0, metadata={"help": "seeds the weights and the order of the pretraining text"})


@dataclass(frozen=True)
class ToyConfig:
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    generator_version: str = GENERATOR_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    def key(self) -> str:
        """A short hash of the full config: the name of the cached model."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def with_seed(self, seed: int) -> ToyConfig:
        return replace(self, train=replace(self.train, seed=seed))


# "default" is the demo's model; "fast" is the same world and architecture, trained briefly, for CI.
PRESETS = {
    "default": ToyConfig(),
    "fast": ToyConfig(train=TrainConfig(steps=40, warmup_steps=5, decay_steps=30)),
}


def preset(name: str, seed: int = 0) -> ToyConfig:
    if name not in PRESETS:
        raise RomaEvalError(f"unknown toy preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name].with_seed(seed)

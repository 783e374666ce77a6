"""Prefix / Prompt Tuning configuration: RoMA's data, task loss and budget (epochs, batch, schedule); the peft
method's own size, initialisation and learning rate, which the paper does not state (docs/baselines.md).

Every field is a `roma-eval prefix-tuning` / `prompt-tuning` flag of the same name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from roma_eval.errors import RomaEvalError
from roma_eval.training.budget import TrainingBudget

METHODS = ("prefix_tuning", "prompt_tuning")
# The learning rates of peft's own guides: prompt tuning for causal LMs (3e-2), prefix tuning (1e-2).
DEFAULT_LR = {"prompt_tuning": 3e-2, "prefix_tuning": 1e-2}


@dataclass
class PeftTuningConfig(TrainingBudget):
    method: Literal["prefix_tuning", "prompt_tuning"] = field(default="prompt_tuning", metadata={"help":
        "prefix_tuning: trained keys/values at every layer (peft PrefixTuningConfig); prompt_tuning: trained input "
        "embeddings (peft PromptTuningConfig)"})
    num_virtual_tokens: int = field(default=20, metadata={"help": "virtual tokens (not stated in the paper; ours)"})
    lr: float | None = field(default=None, metadata={"help":
        "AdamW learning rate (default: 3e-2 for prompt tuning, 1e-2 for prefix tuning: peft's guides)"})
    prompt_tuning_init: Literal["random", "text"] = field(default="random", metadata={"help":
        "prompt tuning: initial virtual-token embeddings, random (peft's default) or --prompt_tuning_init_text"})
    prompt_tuning_init_text: str | None = field(default=None, metadata={"help":
        "prompt tuning with --prompt_tuning_init text: the text whose token embeddings start the prompt"})
    prefix_projection: bool = field(default=False, metadata={"help":
        "prefix tuning: reparameterise the prefix through an MLP (Li & Liang); peft's default is off"})

    def __post_init__(self):
        if self.lr is None:
            self.lr = DEFAULT_LR.get(self.method, 1e-2)
        super().__post_init__()
        if self.num_virtual_tokens < 1:
            raise RomaEvalError(f"num_virtual_tokens={self.num_virtual_tokens} must be at least 1")
        if self.prompt_tuning_init == "text" and not self.prompt_tuning_init_text:
            raise RomaEvalError("--prompt_tuning_init text needs --prompt_tuning_init_text")
        if self.method != "prompt_tuning" and self.prompt_tuning_init != "random":
            raise RomaEvalError("--prompt_tuning_init applies to --method prompt_tuning only")
        if self.method != "prefix_tuning" and self.prefix_projection:
            raise RomaEvalError("--prefix_projection applies to --method prefix_tuning only")

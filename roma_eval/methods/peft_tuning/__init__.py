"""Prefix Tuning and Prompt Tuning (peft's ``PrefixTuningConfig`` / ``PromptTuningConfig``) on the router-training
mixture with RoMA's task loss, saved as peft adapters (docs/baselines.md).

    from roma_eval.methods.peft_tuning import PeftTuningConfig, train_peft_tuning

lm-eval: ``--model hf-peft --model_args pretrained=M,peft=DIR`` (``PeftLM``; why not plain ``hf``: lm_eval.py).
"""

from roma_eval._lazy import lazy_exports

_EXPORTS = {"PeftTuningConfig": "config", "train_peft_tuning": "train", "PeftResult": "train",
            "virtual_tokens": "train", "choice_logits": "train", "PeftLM": "lm_eval"}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)

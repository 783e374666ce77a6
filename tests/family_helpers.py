"""Tiny models of every supported family for tests: the transformers ones (roma_eval.tiny) and DeepSeekMoE's
remote code (a fixture directory loaded with trust_remote_code)."""

from pathlib import Path

import pytest

from roma_eval.tiny import ALL_ARCHITECTURES, ARCHITECTURES, build_tiny_model, build_tiny_remote_model

DEEPSEEK_MOE_DIR = Path(__file__).parent / "fixtures" / "deepseek_moe"  # DeepSeekMoE as remote code (trust_remote_code)
REMOTE = {"deepseek": DEEPSEEK_MOE_DIR}
ALL_FAMILIES = (*ALL_ARCHITECTURES, *REMOTE)


def build_family_model(arch, tokenizer, seed=0, **overrides):
    """A tiny model of ``arch``: a transformers family (roma_eval.tiny) or a remote-code fixture."""
    if arch in REMOTE:
        return build_tiny_remote_model(REMOTE[arch], tokenizer, seed=seed, **overrides)
    return build_tiny_model(arch, tokenizer, seed=seed, **overrides)


def family_params(fast=ARCHITECTURES):
    """The six original families, then every other one marked slow."""
    return [pytest.param(arch, marks=[] if arch in fast else [pytest.mark.slow], id=arch)
            for arch in (*fast, *(a for a in ALL_FAMILIES if a not in fast))]

"""Tiny models of every supported family for tests: the transformers ones (roma_eval.tiny) and DeepSeekMoE's
remote code (a fixture directory loaded with trust_remote_code)."""

from pathlib import Path

import pytest

from roma_eval.tiny import ALL_ARCHITECTURES, FAST_ARCHITECTURES, build_tiny_model, build_tiny_remote_model

DEEPSEEK_MOE_DIR = Path(__file__).parent / "fixtures" / "deepseek_moe"  # DeepSeekMoE as remote code (trust_remote_code)
REMOTE = {"deepseek": DEEPSEEK_MOE_DIR}
ALL_FAMILIES = (*ALL_ARCHITECTURES, *REMOTE)


def build_family_model(arch, tokenizer, seed=0, **overrides):
    """A tiny model of ``arch``: a transformers family (roma_eval.tiny) or a remote-code fixture."""
    if arch in REMOTE:
        return build_tiny_remote_model(REMOTE[arch], tokenizer, seed=seed, **overrides)
    return build_tiny_model(arch, tokenizer, seed=seed, **overrides)


def family_params(fast=FAST_ARCHITECTURES):
    """The fast test set's families, then every other one marked slow."""
    return [pytest.param(arch, marks=[] if arch in fast else [pytest.mark.slow], id=arch)
            for arch in (*fast, *(a for a in ALL_FAMILIES if a not in fast))]


def c3po_cached_and_full_scores(model, tokenizer, samples, layers):
    """C3PO's cached pass (frozen prefixes, tails from the first steered layer) and scoring.py's full forward, both
    under one random override of the routing scores at the last context token: (frozen, override, cached, full)."""
    import torch

    from roma_eval.methods.c3po import TailBatch, freeze
    from roma_eval.methods.c3po.reference import problem_of
    from roma_eval.routing import steer_routing
    from roma_eval.scoring import build_choice_batch, choice_scores

    frozen = freeze(model, [problem_of(tokenizer, s, 512) for s in samples], layers)
    torch.manual_seed(0)
    experts = frozen[0].routing.shape[-1]
    override = torch.softmax(3 * torch.randn(len(samples), len(layers), experts), dim=-1).requires_grad_()
    cached, _ = TailBatch(frozen, "cpu").forward(model, layers, override)
    batch = build_choice_batch(tokenizer, samples, max_length=512)
    with steer_routing(model, override[batch.row_sample].unsqueeze(1), batch.last_context.unsqueeze(1), layers,
                       mode="scores"):
        full = choice_scores(model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits, batch)
    return frozen, override, cached, full

import pytest
import torch

from roma_eval.routing import probe_routing, resolve_layers, router_weights, routers, spec_for


def last_tokens(batch):
    return [int(torch.nonzero(row).max()) for row in batch["attention_mask"]]


def reference_scores(model, batch, spec):
    """Routing scores straight from transformers' own output_router_logits, at the last real token."""
    with torch.no_grad():
        out = model(**batch, output_router_logits=True)
    batch_size, seq_len = batch["attention_mask"].shape
    last = last_tokens(batch)
    per_layer = [logits.view(batch_size, seq_len, -1)[torch.arange(batch_size), last] for logits in out.router_logits]
    scores = torch.stack(per_layer, dim=1)
    return torch.softmax(scores.float(), -1) if spec.score_kind == "softmax" else scores.sigmoid()


def gate_choices(model, batch):
    """Per MoE layer, the (indices, weights) a gate returned at the last real tokens (a gate without logits)."""
    calls = {}
    handles = [g.register_forward_hook(lambda m, a, out, i=i: calls.__setitem__(i, out))
               for i, g in routers(model).items()]
    with torch.no_grad():
        model(**batch)
    for handle in handles:
        handle.remove()
    seq_len = batch["attention_mask"].shape[1]
    rows = torch.tensor([b * seq_len + t for b, t in enumerate(last_tokens(batch))])
    return {i: (out[0][rows], out[1][rows]) for i, out in sorted(calls.items())}


@pytest.mark.parametrize("side", ["right", "left"])
def test_probe_equals_transformers_router_logits(family_model, padded_batch, side):
    arch, model = family_model
    batches, _ = padded_batch
    batch = batches[side]
    with torch.no_grad():
        probed = probe_routing(model, batch["input_ids"], batch["attention_mask"], layers="all")
    assert probed.shape == (2, len(routers(model)), 8)
    if not getattr(model.config, "n_routed_experts", None) or arch != "deepseek":
        expected = reference_scores(model, batch, spec_for(model))
        # Same values up to float32 rounding (elementwise kernels may vectorise differently per shape).
        torch.testing.assert_close(probed, expected, rtol=1e-6, atol=1e-7)
        return
    # DeepSeekMoE's MoEGate reports no logits: its own top-k weights (norm_topk_prob off) are the probed
    # scores of the experts it chose, bit for bit, and those are the probed top-k.
    assert not model.config.norm_topk_prob
    for slot, (index, weights) in enumerate(gate_choices(model, batch).values()):
        assert torch.equal(probed[:, slot].gather(1, index), weights)
        assert sorted(probed[:, slot].topk(index.shape[1]).indices[0].tolist()) == sorted(index[0].tolist())


def test_probe_of_padded_batch_matches_each_sequence_alone(family_model, padded_batch):
    arch, model = family_model
    batches, singles = padded_batch
    with torch.no_grad():
        alone = torch.cat([probe_routing(model, s["input_ids"], s["attention_mask"]) for s in singles])
        for side, batch in batches.items():
            probed = probe_routing(model, batch["input_ids"], batch["attention_mask"])
            torch.testing.assert_close(probed, alone, atol=1e-5, rtol=1e-4, msg=f"{arch} {side} padding")


def test_probe_default_is_last_five_moe_layers(tokenizer, padded_batch):
    """On an 8-layer model (last 5 != all): the default reads layers 3..7, the same scores as asking for them."""
    from roma_eval.tiny import build_tiny_model

    model = build_tiny_model("olmoe", tokenizer, seed=4, num_hidden_layers=8)
    assert resolve_layers(model) == [3, 4, 5, 6, 7]
    batch = padded_batch[0]["right"]
    default = probe_routing(model, batch["input_ids"], batch["attention_mask"])
    assert default.shape[1] == 5
    assert torch.equal(default, probe_routing(model, batch["input_ids"], batch["attention_mask"],
                                              layers=[3, 4, 5, 6, 7]))
    # a smaller model: all of its MoE layers
    small = build_tiny_model("olmoe", tokenizer, seed=4)
    assert resolve_layers(small) == sorted(routers(small)) == [0, 1, 2, 3]


def test_probe_is_differentiable_wrt_router_weights(family_model, padded_batch):
    arch, model = family_model
    batch = padded_batch[0]["right"]
    layers = resolve_layers(model, "last:2")
    scores = probe_routing(model, batch["input_ids"], batch["attention_mask"], layers=layers)
    (scores * torch.randn_like(scores)).sum().backward()
    for i, weight in router_weights(model).items():
        if i in layers:
            assert weight.grad is not None and weight.grad.abs().sum() > 0, (arch, i)


def test_probe_several_positions(tiny_models, padded_batch):
    model = tiny_models["qwen3_moe"]
    batch = padded_batch[0]["right"]
    positions = torch.tensor([[0, 3], [1, 2]])
    with torch.no_grad():
        several = probe_routing(model, batch["input_ids"], batch["attention_mask"], positions=positions)
        first = probe_routing(model, batch["input_ids"], batch["attention_mask"], positions=positions[:, 0])
    assert several.shape[:2] == (2, 2)
    assert torch.equal(several[:, 0], first)

"""DeepSeekMoE's remote code as the seam meets it: decoder layers that return tuples, an eval-mode MoE sum under
``@torch.no_grad()``, and a training branch that adds the gate's load-balancing loss (the stand-in in
tests/fixtures/deepseek_moe behaves so; the first tests check that it does, the others that the seam copes)."""

import pytest
import torch
from family_helpers import build_family_model

from roma_eval.routing import resolve_layers, routers
from roma_eval.routing.arch import gradient_path, moe_blocks
from roma_eval.routing.families import _deepseek_moe_infer
from roma_eval.routing.partial import capture_layer_input, run_from_layer


@pytest.fixture(scope="module")
def model(tokenizer):
    return build_family_model("deepseek", tokenizer, seed=6)


@pytest.fixture(scope="module")
def batch(tokenizer):
    tokenizer.padding_side = "left"
    encoded = tokenizer(["Question: which animal is a mammal?", "2+2="], return_tensors="pt", padding=True)
    tokenizer.padding_side = "right"
    return encoded


def every_expert_on_every_token(block, x, index, weights):
    """Σ_k w_k E_{index_k}(x), written out: every expert on every token, the chosen ones weighted."""
    outputs = torch.stack([expert(x) for expert in block.experts], dim=1)
    return (outputs.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1])) * weights.unsqueeze(-1)).sum(1)


def test_the_stand_in_behaves_as_the_published_remote_code(model, batch):
    layer = model.model.layers[1]
    hidden = model.model.embed_tokens(batch["input_ids"])
    position_ids = torch.arange(hidden.shape[1]).unsqueeze(0)
    mask = torch.zeros(1, 1, hidden.shape[1], hidden.shape[1])
    assert isinstance(layer(hidden, attention_mask=mask, position_ids=position_ids), tuple)
    gate = routers(model)[1]
    gate.weight.requires_grad_(True)
    try:
        model(**batch).logits.sum().backward()  # eval mode: moe_infer under no_grad, no gradient to the gate
        assert gate.weight.grad is None
        model.train()
        out = model.model.layers[1].mlp(hidden)
        (out * 0).sum().backward()  # training: the balance loss's gradient arrives through AddAuxiliaryLoss alone
        assert gate.weight.grad is not None and gate.weight.grad.abs().sum() > 0
    finally:
        model.eval()
        gate.weight.requires_grad_(False)
        gate.weight.grad = None


def test_the_mirror_of_moe_infer_is_bit_identical_and_differentiable(model):
    for layer, block in moe_blocks(model).items():
        x = torch.randn(2, 7, model.config.hidden_size, generator=torch.Generator().manual_seed(layer))
        index, weights, _ = block.gate(x)
        flat_x = x.view(-1, x.shape[-1])
        weights = weights.detach().requires_grad_(True)
        own = block.moe_infer(flat_x, index.view(-1), weights.view(-1, 1))
        mirrored = _deepseek_moe_infer(block, flat_x, index.view(-1), weights.view(-1, 1))
        assert torch.equal(mirrored, own), layer
        probe = torch.randn_like(own)
        (grad,) = torch.autograd.grad((mirrored * probe).sum(), weights)
        (expected,) = torch.autograd.grad((every_expert_on_every_token(block, flat_x, index, weights) * probe).sum(),
                                          weights)
        torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-6)


def test_gradient_path_changes_no_bit_and_gives_every_router_a_gradient(model, batch):
    gates = routers(model)
    with torch.no_grad():
        plain = model(**batch).logits
    for gate in gates.values():
        gate.weight.requires_grad_(True)
    try:
        with gradient_path(model):
            logits = model(**batch).logits
            logits.sum().backward()
        assert torch.equal(logits.detach(), plain)
        assert all(gate.weight.grad is not None and gate.weight.grad.abs().sum() > 0 for gate in gates.values())
        assert not any("moe_infer" in vars(block) for block in moe_blocks(model).values())  # restored
    finally:
        for gate in gates.values():
            gate.weight.requires_grad_(False)
            gate.weight.grad = None


@pytest.mark.parametrize("use_cache", [False, True])
def test_run_from_layer_on_tuple_returning_layers_skips_five_or_more(model, batch, use_cache):
    """The tuned last five MoE layers leave layers 0..4 skipped: each returns its input as the tuple the model loop
    reads (``layer_outputs[0]``, and the cache at ``[1]``), so the output equals the full forward."""
    k = resolve_layers(model)[0]
    assert k >= 5 and len(resolve_layers(model)) == 5
    with torch.no_grad():
        with capture_layer_input(model, k) as captured:
            full = model(**batch, use_cache=use_cache)
        partial = run_from_layer(model, k, captured["hidden_states"], batch["attention_mask"], use_cache=use_cache)
    assert torch.equal(full.logits, partial.logits)
    assert (partial.past_key_values is not None) == use_cache
    assert not any("forward" in vars(layer) for layer in model.model.layers)

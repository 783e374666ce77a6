import pytest
import torch

from roma_eval.errors import RomaEvalError
from roma_eval.routing import (
    as_positions,
    probe_routing,
    resolve_layers,
    routers,
    spec_for,
    steer_routing,
)


def forward_logits(model, batch):
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def zeros_override(model, positions, layers):
    return torch.zeros(*positions.shape, len(layers), 8, requires_grad=True)


def test_select_mirrors_each_router_exactly(arch_model):
    """spec.select(spec.scores(logits)) is bit-identical to the router's own forward."""
    arch, model = arch_model
    spec = spec_for(model)
    torch.manual_seed(0)
    hidden = torch.randn(37, model.config.hidden_size)
    for gate in routers(model).values():
        logits, weights, index = gate(hidden)
        my_weights, my_index = spec.select(gate, spec.scores(logits), logits.dtype)
        assert torch.equal(my_weights, weights) and torch.equal(my_index, index), arch


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("mode", ["offset", "scores"])
def test_noop_override_is_bit_identical(arch_model, padded_batch, side, mode):
    arch, model = arch_model
    batch = padded_batch[0][side]
    layers = resolve_layers(model, "all")
    positions = as_positions(None, batch["attention_mask"], *batch["input_ids"].shape)
    with torch.no_grad():
        plain = forward_logits(model, batch)
        if mode == "offset":
            override = torch.zeros(*positions.shape, len(layers), 8)
        else:  # replacing the scores by the router's own scores changes nothing either
            override = probe_routing(model, batch["input_ids"], batch["attention_mask"], layers=layers).unsqueeze(1)
        with steer_routing(model, override, positions, layers=layers, mode=mode):
            steered = forward_logits(model, batch)
    assert torch.equal(plain, steered)


def test_steering_position_p_changes_nothing_before_p(arch_model, padded_batch):
    arch, model = arch_model
    batch = padded_batch[0]["right"]
    p = 4
    positions = torch.full((2, 1), p)
    layers = resolve_layers(model, "all")
    torch.manual_seed(0)
    override = 10 * torch.randn(2, 1, len(layers), 8)
    with torch.no_grad():
        plain = forward_logits(model, batch)
        with steer_routing(model, override, positions, layers=layers):
            steered = forward_logits(model, batch)
    # Earlier tokens agree to float32 rounding, not bit for bit: changing which tokens an expert
    # sees changes the row count of its batched matmul, and so the blocking of the sums.
    torch.testing.assert_close(plain[:, :p], steered[:, :p], rtol=0, atol=1e-6)
    assert (plain[:, p:] - steered[:, p:]).abs().max() > 1e-3


def test_override_changes_the_expert_choice(arch_model, padded_batch):
    """A large offset on one expert makes it selected, through the architecture's own top-k."""
    arch, model = arch_model
    batch = padded_batch[0]["right"]
    layers = resolve_layers(model, "last:1")
    positions = as_positions(None, batch["attention_mask"], *batch["input_ids"].shape)
    chosen = {}
    gate = routers(model)[layers[0]]
    handle = gate.register_forward_hook(lambda m, a, out: chosen.update(index=out[2]))
    override = torch.zeros(2, 1, 1, 8)
    target = 5 if arch != "deepseek_v3" else int(gate.e_score_correction_bias.argmax())
    override[..., target] = 50.0
    try:
        with torch.no_grad(), steer_routing(model, override, positions, layers=layers):
            forward_logits(model, batch)
    finally:
        handle.remove()
    seq_len = batch["input_ids"].shape[1]
    for b in range(2):
        assert target in chosen["index"][b * seq_len + int(positions[b, 0])].tolist()


def test_gradients_reach_override_and_router_weights(arch_model, padded_batch):
    arch, model = arch_model
    batch = padded_batch[0]["right"]
    layers = resolve_layers(model, "all")
    positions = torch.full((2, 1), 2)
    override = zeros_override(model, positions, layers)
    with steer_routing(model, override, positions, layers=layers):
        loss = forward_logits(model, batch)[:, 2:].logsumexp(-1).sum()
    loss.backward()
    assert override.grad is not None and override.grad.abs().sum() > 0
    assert all(g.weight.grad is not None and g.weight.grad.abs().sum() > 0 for g in routers(model).values())


def test_steer_rejects_bad_override_shape(tiny_models):
    model = tiny_models["olmoe"]
    with pytest.raises(RomaEvalError, match="expected"):
        with steer_routing(model, torch.zeros(2, 1, 3, 8), torch.zeros(2, 1, dtype=torch.long), layers="all"):
            pass

import pytest
import torch

from roma_eval.errors import RomaEvalError
from roma_eval.routing import (
    as_positions,
    decoder_layers,
    probe_routing,
    resolve_layers,
    router_weights,
    routers,
    selectors,
    spec_for,
    steer_routing,
)


def forward_logits(model, batch):
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def zeros_override(model, positions, layers):
    return torch.zeros(*positions.shape, len(layers), 8, requires_grad=True)


def router_calls(model, input_ids):
    """Layer -> (router module, its call's args, its output) during one forward."""
    calls = {}
    handles = [gate.register_forward_hook(lambda m, a, out, i=i: calls.__setitem__(i, (m, a, out)))
               for i, gate in routers(model).items()]
    try:
        with torch.no_grad():
            model(input_ids=input_ids)
    finally:
        for handle in handles:
            handle.remove()
    return calls


def chosen_experts(model, layer, module, args, output):
    """(tokens, k) the experts a router call chose: from its output, or (a router returning logits only) by the
    selection its block makes on them (which test_select_mirrors_each_router_exactly checks)."""
    spec = spec_for(model)
    index = spec.output.index(output)
    if index is None:
        logits = spec.output.logits(module, args, output)
        index = spec.select(selectors(model)[layer], logits, spec.scores(logits), args)[1]
    return index


def choice_bias(model, layer):
    """The bias a family adds to the scores for the choice only (DeepSeek-V3, GLM, Ernie, LFM2), or None."""
    block = decoder_layers(model)[layer]
    for name, tensor in [*block.named_buffers(), *block.named_parameters()]:
        if name.endswith(("e_score_correction_bias", "expert_bias")):
            return tensor.reshape(-1)
    return None


def test_select_mirrors_each_router_exactly(family_model):
    """spec.select(spec.scores(logits)) rebuilds the router's own output bit for bit (for a router that returns
    logits only, it equals its block's own selection)."""
    arch, model = family_model
    spec = spec_for(model)
    torch.manual_seed(0)
    input_ids = torch.randint(3, model.config.vocab_size, (2, 19))
    choosers = selectors(model)
    for layer, (module, args, output) in router_calls(model, input_ids).items():
        logits = spec.output.logits(module, args, output)
        weights, index = spec.select(choosers[layer], logits, spec.scores(logits), args)
        if spec.output.selects:
            rows = torch.arange(logits.shape[0])
            rebuilt = spec.output.rebuild(module, args, output, rows, logits, weights, index)
            for mine, theirs in zip(rebuilt, output):
                assert (mine is None and theirs is None) or torch.equal(mine, theirs), (arch, layer)
        else:  # DBRX: the FFN's own route_tokens_to_experts
            their_weights, their_index = choosers[layer].route_tokens_to_experts(logits)
            assert torch.equal(weights, their_weights) and torch.equal(index, their_index), (arch, layer)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("mode", ["offset", "scores"])
def test_noop_override_is_bit_identical(family_model, padded_batch, side, mode):
    arch, model = family_model
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


def test_steering_position_p_changes_nothing_before_p(family_model, padded_batch):
    arch, model = family_model
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
    assert (plain[:, p:] - steered[:, p:]).abs().max() > 1e-4


def test_override_changes_the_expert_choice(family_model, padded_batch):
    """A large offset on one expert makes it selected, through the architecture's own top-k."""
    arch, model = family_model
    batch = padded_batch[0]["right"]
    layers = resolve_layers(model, "last:1")
    positions = as_positions(None, batch["attention_mask"], *batch["input_ids"].shape)
    chosen = {}
    gate = routers(model)[layers[0]]
    handle = gate.register_forward_hook(
        lambda m, a, out: chosen.update(index=chosen_experts(model, layers[0], m, a, out)))
    bias = choice_bias(model, layers[0])
    target = 5 if bias is None else int(bias.argmax())  # a biased choice: the expert the bias favours
    override = torch.full((2, 1, 1, 8), -50.0)  # every other expert pushed down: group-limited top-k picks its group
    override[..., target] = 50.0
    try:
        with torch.no_grad(), steer_routing(model, override, positions, layers=layers):
            forward_logits(model, batch)
    finally:
        handle.remove()
    seq_len = batch["input_ids"].shape[1]
    for b in range(2):
        assert target in chosen["index"][b * seq_len + int(positions[b, 0])].tolist()


# Families whose routing weights are piecewise constant in the logits in eval mode: no gradient reaches a
# routing override (PhiMoE's sparsemixer weights each chosen expert by a softmax over the experts within a
# jitter threshold of it, mostly itself alone; its gradient estimator exists in training mode only).
FLAT_IN_EVAL = {"phimoe"}


@pytest.mark.parametrize("mode", ["offset", "scores"])
def test_gradients_reach_override_and_router_weights(family_model, padded_batch, mode):
    arch, model = family_model
    if arch in FLAT_IN_EVAL:
        pytest.skip(f"{arch}: eval-mode routing weights are piecewise constant in the logits (docs/families.md)")
    batch = padded_batch[0]["right"]
    layers = resolve_layers(model, "all")
    positions = torch.full((2, 1), 2)
    if mode == "offset":
        override = zeros_override(model, positions, layers)
    else:
        with torch.no_grad():
            own = probe_routing(model, batch["input_ids"], batch["attention_mask"], layers=layers,
                                positions=positions[:, 0])
        override = own.unsqueeze(1).clone().requires_grad_(True)
    with steer_routing(model, override, positions, layers=layers, mode=mode):
        loss = forward_logits(model, batch)[:, 2:].logsumexp(-1).sum()
    loss.backward()
    assert override.grad is not None and override.grad.abs().sum() > 0 and override.grad.isfinite().all()
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in router_weights(model).values())


def test_steer_rejects_bad_override_shape(tiny_models):
    model = tiny_models["olmoe"]
    with pytest.raises(RomaEvalError, match="expected"):
        with steer_routing(model, torch.zeros(2, 1, 3, 8), torch.zeros(2, 1, dtype=torch.long), layers="all"):
            pass

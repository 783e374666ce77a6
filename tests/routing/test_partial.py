import pytest
import torch

from roma_eval.routing import decoder_layers, resolve_layers, routers
from roma_eval.routing.partial import (
    attend_to_prefix,
    capture_layer_input,
    prefix_cache_exact,
    prefix_cache_problem,
    prefix_keys_values,
    run_from_layer,
)


@pytest.mark.parametrize("where", ["last:2", "first:1", "end"])
def test_run_from_layer_equals_the_full_forward(family_model, padded_batch, where):
    """From the first of the last two MoE layers, from the first MoE layer (in hybrid stacks with
    mamba / linear-attention / convolution layers on both sides of it), and from past the last layer."""
    arch, model = family_model
    batch = padded_batch[0]["left"]
    layers = decoder_layers(model)
    k = len(layers) if where == "end" else resolve_layers(model, where)[0]
    with torch.no_grad():
        with capture_layer_input(model, k) as captured:
            full = model(**batch).logits
        partial = run_from_layer(model, k, captured["hidden_states"], batch["attention_mask"]).logits
    assert torch.equal(full, partial), arch
    assert len(layers) == model.config.num_hidden_layers  # restored
    assert not any("forward" in vars(layer) for layer in layers)


def test_gradients_reach_only_the_upper_routers(tiny_models, padded_batch):
    model = tiny_models["mixtral"]
    batch = padded_batch[0]["right"]
    with torch.no_grad(), capture_layer_input(model, 2) as captured:
        model(**batch)
    run_from_layer(model, 2, captured["hidden_states"], batch["attention_mask"]).logits.sum().backward()
    grads = {i: g.weight.grad for i, g in routers(model).items()}
    assert grads[0] is None and grads[1] is None
    assert grads[2].abs().sum() > 0 and grads[3].abs().sum() > 0


def test_prefix_cache_then_run_from_layer_equals_the_full_forward(family_model, tokenizer):
    """How the methods use a prefix cache: the tokens before the steered one run once (prefix_keys_values); the
    rest runs from layer k against their keys/values (attend_to_prefix).  Where a family keeps more than
    keys/values (sliding windows, recurrent/convolution states, indexer keys), prefix_cache_problem says so,
    naming the layers, and prefix_cache_exact is False."""
    arch, model = family_model
    problem = prefix_cache_problem(model)
    assert prefix_cache_exact(model) == (problem is None)
    if problem is not None:
        assert problem.startswith(f"{model.config.model_type} layers ") and "prefix caching is off" in problem
        return
    ids = tokenizer(["Question: which animal is a mammal? Answer: whale"], return_tensors="pt")["input_ids"]
    split, k = ids.shape[1] - 4, resolve_layers(model, "last:2")[0]
    with torch.no_grad():
        with capture_layer_input(model, k) as captured:
            full = model(input_ids=ids).logits[:, split:]
        hidden = captured["hidden_states"][:, split:]
        kv = prefix_keys_values(model, input_ids=ids[:, :split])[k:]
        positions = torch.arange(split, ids.shape[1]).unsqueeze(0)
        partial = run_from_layer(model, k, hidden, torch.ones_like(ids), position_ids=positions,
                                 **attend_to_prefix(kv, k)).logits
    torch.testing.assert_close(partial, full, rtol=0, atol=2e-5, msg=arch)

import torch

from roma_eval.routing import resolve_layers, routers
from roma_eval.routing.partial import capture_layer_input, run_from_layer


def test_run_from_layer_equals_the_full_forward(arch_model, padded_batch):
    arch, model = arch_model
    batch = padded_batch[0]["left"]
    k = resolve_layers(model, "last:2")[0]
    with torch.no_grad():
        with capture_layer_input(model, k) as captured:
            full = model(**batch).logits
        partial = run_from_layer(model, k, captured["hidden_states"], batch["attention_mask"]).logits
    assert torch.equal(full, partial), arch
    assert len(model.model.layers) == model.config.num_hidden_layers  # restored


def test_gradients_reach_only_the_upper_routers(tiny_models, padded_batch):
    model = tiny_models["mixtral"]
    batch = padded_batch[0]["right"]
    with torch.no_grad(), capture_layer_input(model, 2) as captured:
        model(**batch)
    run_from_layer(model, 2, captured["hidden_states"], batch["attention_mask"]).logits.sum().backward()
    grads = {i: g.weight.grad for i, g in routers(model).items()}
    assert grads[0] is None and grads[1] is None
    assert grads[2].abs().sum() > 0 and grads[3].abs().sum() > 0

"""Dense router gradients (Dense BP / Default MoE) against brute force: every expert run by hand."""

from types import SimpleNamespace

import pytest
import torch
from family_helpers import build_family_model

from roma_eval.errors import RomaEvalError
from roma_eval.routing import routers
from roma_eval.routing.arch import gradient_path, moe_blocks
from roma_eval.routing.dense import DefaultOutputs, dense_gradient_problem, dense_router_gradient
from roma_eval.tiny import build_tiny_model

LAYER = 3


def expert_by_hand(model, layer, j, h):
    """Expert j on tokens h, from its weights: down(silu(gate(h)) * up(h)) (independent of the modelling code):
    OLMoE/Qwen3's fused expert tensors, or DeepSeekMoE's list of MLPs."""
    experts = moe_blocks(model)[layer].experts
    if isinstance(experts, torch.nn.ModuleList):
        gate, up, down = experts[j].gate_proj.weight, experts[j].up_proj.weight, experts[j].down_proj.weight
    else:
        (gate, up), down = experts.gate_up_proj[j].chunk(2, dim=0), experts.down_proj[j]
    return (torch.nn.functional.silu(h @ gate.T) * (h @ up.T)) @ down.T


def block_and_input(model, seed=0, tokens=12):
    block = model.model.layers[LAYER].mlp
    h = torch.randn(1, tokens, model.config.hidden_size, generator=torch.Generator().manual_seed(seed))
    return block, h


def router_grad(model, block, h, g, context):
    model.zero_grad(set_to_none=True)
    weight = routers(model)[LAYER].weight
    weight.requires_grad_(True)
    with context:
        out = block(h)
    (out * g).sum().backward()
    grad = weight.grad.clone()
    weight.requires_grad_(False)
    return out.detach(), grad


def brute_force_grad(model, h, g, default_for_unchosen):
    """d<g, y>/dW for y = Σ_{j∈T} w_j E_j(x) + Σ_{j∉T} p_j D_j(x), written out: p = softmax(x W^T) over all experts,
    T = top-k of p, w = p (renormalised over T when the family does), D_j(x) = default_for_unchosen(j, x)."""
    gate = routers(model)[LAYER]
    weight = gate.weight.detach().clone().requires_grad_(True)
    x = h.reshape(-1, h.shape[-1])
    p = torch.softmax(x @ weight.T, dim=-1)
    top = p.topk(gate.top_k, dim=-1).indices
    chosen = torch.zeros_like(p, dtype=torch.bool).scatter(1, top, True)
    w = torch.where(chosen, p, torch.zeros_like(p))
    if gate.norm_topk_prob:
        w = w / w.sum(-1, keepdim=True)
    y = sum(torch.where(chosen[:, j:j + 1], w[:, j:j + 1] * expert_by_hand(model, LAYER, j, x),
                        p[:, j:j + 1] * default_for_unchosen(j, x)) for j in range(p.shape[1]))
    (y.reshape(g.shape) * g).sum().backward()
    return weight.grad, chosen


@pytest.mark.parametrize("arch", ["olmoe", "qwen3_moe", "deepseek"])
def test_exact_dense_gradient_equals_running_every_expert(tokenizer, arch):
    """DeepSeekMoE (remote code): a list of experts summed by a no-grad method in eval mode; its sparse gradient
    is taken on the seam's differentiable path."""
    model = build_family_model(arch, tokenizer, seed=4)
    block, h = block_and_input(model)
    g = torch.randn(1, h.shape[1], h.shape[2], generator=torch.Generator().manual_seed(1))
    sparse_out, sparse_grad = router_grad(model, block, h, g, gradient_path(model))
    dense_out, dense_grad = router_grad(model, block, h, g, dense_router_gradient(model, [LAYER], "exact"))
    assert torch.equal(dense_out, sparse_out)  # the forward value is the sparse model's, bit for bit
    expected, chosen = brute_force_grad(model, h, g, lambda j, x: expert_by_hand(model, LAYER, j, x))
    torch.testing.assert_close(dense_grad, expected, rtol=1e-4, atol=1e-6)
    # and it is really denser: the sparse gradient misses the unchosen experts' terms
    assert (dense_grad - sparse_grad).abs().max() > 1e-2 * dense_grad.abs().max()


def test_default_moe_gradient_and_its_ema(tokenizer):
    model = build_tiny_model("olmoe", tokenizer, seed=4)
    block, h = block_and_input(model)
    g = torch.randn(1, h.shape[1], h.shape[2], generator=torch.Generator().manual_seed(2))
    x = h.reshape(-1, h.shape[-1])
    gate = routers(model)[LAYER]
    top = torch.softmax(x @ gate.weight.detach().T, dim=-1).topk(gate.top_k, dim=-1).indices
    defaults = DefaultOutputs(beta=0.9)
    _, grad = router_grad(model, block, h, g, dense_router_gradient(model, [LAYER], "default", defaults))
    # EMA after one forward: each routed-to expert's mean output on its tokens (the first observation starts it)
    for j in range(8):
        tokens = (top == j).any(-1)
        assert bool(defaults.seen[LAYER][j]) == bool(tokens.any())
        if tokens.any():
            torch.testing.assert_close(defaults.vectors[LAYER][j],
                                       expert_by_hand(model, LAYER, j, x[tokens]).mean(0).detach(), rtol=1e-5,
                                       atol=1e-6)
    vectors = defaults.vectors[LAYER].clone()
    expected, _ = brute_force_grad(model, h, g, lambda j, x: vectors[j].expand(x.shape[0], -1))
    torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-6)

    # a second forward moves the defaults by (1 - beta) towards the new means; padding tokens do not count
    h2 = torch.randn_like(h)
    with dense_router_gradient(model, [LAYER], "default", defaults) as dense:
        dense.token_mask = torch.tensor([[1] * 6 + [0] * 6])
        block(h2)
    x2 = h2.reshape(-1, h2.shape[-1])[:6]
    top2 = torch.softmax(x2 @ gate.weight.detach().T, dim=-1).topk(gate.top_k, dim=-1).indices
    for j in range(8):
        tokens = (top2 == j).any(-1)
        if tokens.any() and bool((top == j).any()):
            new = expert_by_hand(model, LAYER, j, x2[tokens]).mean(0).detach()
            torch.testing.assert_close(defaults.vectors[LAYER][j], 0.9 * vectors[j] + 0.1 * new, rtol=1e-5, atol=1e-6)


def test_whole_model_forward_unchanged_and_no_update_without_grad(tokenizer):
    model = build_tiny_model("olmoe", tokenizer, seed=4)
    ids = tokenizer(["Question: which animal is a mammal?"], return_tensors="pt").input_ids
    plain = model(ids).logits
    defaults = DefaultOutputs()
    with dense_router_gradient(model, "last:2", "default", defaults):
        with torch.no_grad():
            same = model(ids).logits
        assert not defaults.vectors  # a forward without gradients leaves the defaults alone
        steered = model(ids).logits
    assert torch.equal(same, plain) and torch.equal(steered.detach(), plain)
    assert sorted(defaults.vectors) == [2, 3]


def test_default_moe_runs_on_deepseek_moe_and_leaves_its_output_alone(tokenizer):
    model = build_family_model("deepseek", tokenizer, seed=4)
    block, h = block_and_input(model)
    with torch.no_grad():
        plain = block(h)
    defaults = DefaultOutputs()
    out, grad = router_grad(model, block, h, torch.ones_like(h), dense_router_gradient(model, [LAYER], "default",
                                                                                          defaults))
    assert torch.equal(out, plain) and grad.abs().sum() > 0 and bool(defaults.seen[LAYER].any())


@pytest.mark.parametrize("model_type, layout", [("dbrx", "logits_only"), ("llama4_text", "dense_scores_logits")])
def test_routers_without_a_top_k_choice_are_refused_in_one_line(model_type, layout):
    fake = SimpleNamespace(config=SimpleNamespace(model_type=model_type))
    problem = dense_gradient_problem(fake)
    assert "\n" not in problem and model_type in problem and layout in problem
    with pytest.raises(RomaEvalError, match="Dense BP needs"):
        with dense_router_gradient(fake):
            pass


def test_bad_estimator_is_one_clear_error(tokenizer):
    model = build_tiny_model("olmoe", tokenizer, seed=4)
    with pytest.raises(RomaEvalError, match="estimator"):
        with dense_router_gradient(model, None, "sparse"):
            pass

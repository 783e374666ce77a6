"""Router training differentiates the method's own objective and nothing else.

The routers train with the model as it is evaluated (eval mode): no auxiliary load-balancing loss
(DeepSeekMoE's remote code adds one to every tuned gate in training mode), no routing jitter or sampling
(PhiMoE), and still a gradient on DeepSeekMoE, whose eval-mode MoE output comes from a no-grad method.  The
tuned routers' gradient at RoMA's first step must equal the gradient of L_task + λ·Σ_j W_ij ||r_i - r_j||²
(Eqs. 8-9) computed here by hand, on a copy of the model whose MoE sums are written out (DeepSeekMoE: every
expert run on every token) and whose routing scores are softmax(x Wᵀ) of the router's input.
"""

import copy
import types

import pytest
import torch
from family_helpers import build_family_model
from lm_eval_helpers import FIXTURE_TASKS

from roma_eval.methods.roma.config import RomaConfig
from roma_eval.methods.roma.recipe import RouterTraining, RouterWeights
from roma_eval.methods.roma.train import TowardsRouting
from roma_eval.routing import resolve_layers, router_weights, routers
from roma_eval.samples import load_samples
from roma_eval.scoring import build_choice_batch, choice_scores, task_loss
from roma_eval.training.loop import RunOptions

# Each family with the training-mode branches its config can turn on (OLMoE has none: the control).
FAMILIES = {"deepseek": dict(aux_loss_alpha=0.05), "phimoe": dict(router_jitter_noise=0.01, input_jitter_noise=0.01),
            "olmoe": {}}
LAYERS = "last:2"


def every_expert_on_every_token(block, x, flat_index, flat_weights):
    """DeepSeekMoE's routed sum Σ_k w_k E_{idx_k}(x), written out (a stand-in for its no-grad moe_infer)."""
    index = flat_index.view(x.shape[0], -1)
    outputs = torch.stack([expert(x) for expert in block.experts], dim=1)  # (tokens, experts, hidden)
    chosen = outputs.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    return (chosen * flat_weights.view(x.shape[0], -1, 1)).sum(1)


def objective_by_hand(model, tokenizer, samples, layers, targets, lam):
    """L_task + λ·mean_i ||r_i - target_i||² on ``model`` (eval mode), and its gradient w.r.t. the tuned routers."""
    inputs = {}
    handles = [routers(model)[i].register_forward_pre_hook(lambda m, args, i=i: inputs.__setitem__(i, args[0]))
               for i in layers]
    batch = build_choice_batch(tokenizer, samples, max_length=512)
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    for handle in handles:
        handle.remove()
    l_task = task_loss(choice_scores(logits, batch), batch.gold)
    first_row = [int((batch.row_sample == i).nonzero()[0]) for i in range(len(samples))]
    weights = router_weights(model, layers)
    r = torch.cat([torch.softmax(inputs[i].reshape(len(batch.row_sample), -1, inputs[i].shape[-1])
                                 [first_row, batch.last_context[first_row]].float() @ weights[i].T.float(), dim=-1)
                   for i in layers], dim=1)
    loss = l_task + lam * ((r - targets) ** 2).sum(1).mean()
    return torch.autograd.grad(loss, [weights[i] for i in layers])


@pytest.mark.parametrize("arch", list(FAMILIES))
def test_the_first_step_gradient_is_the_objective_alone(arch, tokenizer, tmp_path, monkeypatch):
    model = build_family_model(arch, tokenizer, seed=3, **FAMILIES[arch])
    reference = copy.deepcopy(model).eval()
    if arch == "deepseek":
        for layer in reference.model.layers:
            if hasattr(layer.mlp, "gate"):
                layer.mlp.moe_infer = types.MethodType(every_expert_on_every_token, layer.mlp)
    samples = load_samples(["tiny_parity"], split="train", include_path=[FIXTURE_TASKS])[:6]
    layers = resolve_layers(model, LAYERS)
    targets = torch.softmax(2 * torch.randn(len(samples), len(layers) * 8, generator=torch.Generator().manual_seed(0))
                            .view(len(samples), len(layers), 8), dim=-1).flatten(1)

    class FixedTargets(TowardsRouting):  # sample i is pulled towards targets[i] with weight 1
        def targets(self, recipe):
            return targets, torch.arange(len(samples)).unsqueeze(1), torch.ones(len(samples), 1)

    captured = []
    original = RouterWeights.gradients_to_master

    def capture(self):
        if not captured:
            captured.append([w.grad.clone() for w in self.model])
        original(self)

    monkeypatch.setattr(RouterWeights, "gradients_to_master", capture)
    config = RomaConfig(layers=LAYERS, epochs=1, batch_size=len(samples), lr=1e-3, lam=0.8)
    recipe = RouterTraining(config, FixedTargets(config, config.lam), tmp_path / "ckpt",
                            RunOptions("tiny", progress=False))
    result = recipe.run(model, tokenizer, samples)
    assert result.log[0]["lambda"] > 0  # the manifold term is part of the first step
    expected = objective_by_hand(reference, tokenizer, samples, layers, targets, result.log[0]["lambda"])
    assert any(g.abs().max() > 1e-5 for g in expected)
    for got, want in zip(captured[0], expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7, msg=lambda text: f"{arch}: {text}")

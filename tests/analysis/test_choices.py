"""What the routing analysis reads of a router (``routing.choices``): on every family, the experts it records as
chosen are the model's own choice (the MoE block's), and they are the k largest of the values it records as what
the top-k ranks, the values the top-k margin is read on."""

import torch

from roma_eval.routing import routers, spec_for
from roma_eval.routing.arch import moe_blocks
from roma_eval.routing.choices import record_choices


def test_chosen_experts_are_the_top_k_of_the_choice_values(family_model, padded_batch):
    arch, model = family_model
    batches, _ = padded_batch
    batch = batches["right"]
    blocks = moe_blocks(model)
    seen = {}

    def capture(layer):  # what the MoE block itself receives: the experts its sum is made of
        def fn(hidden, index, weights, output):
            seen[layer] = index.detach().clone()
            return output
        return fn

    spec = spec_for(model)
    # Llama 4's block runs its experts on a dense score matrix, not on a top-k index: its choice is compared with
    # the choice values only.
    hooked = spec.output.name != "dense_scores_logits"
    handles = [spec.block.hook_routed(blocks[i], capture(i)) for i in routers(model)] if hooked else []
    try:
        with torch.no_grad(), record_choices(model, batch["input_ids"].shape[0], layers="all") as record:
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    finally:
        for handle in handles:
            handle.remove()
    for layer in record.layer_indices:
        choices = record[layer]
        chosen = choices.chosen.reshape(-1, choices.top_k)
        ranked = torch.topk(choices.choice.reshape(-1, choices.choice.shape[-1]), choices.top_k, dim=-1).indices
        assert torch.equal(chosen.sort(dim=-1).values, ranked.sort(dim=-1).values), (arch, layer)
        if hooked:
            block = seen[layer].reshape(-1, choices.top_k)
            assert torch.equal(chosen.sort(dim=-1).values, block.sort(dim=-1).values), (arch, layer)

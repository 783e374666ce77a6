"""The oracle's variables at every position its scores depend on (``--positions all``, the default;
methods/oracle/every_position.py): the step layout against the plain full forward, the gradient at a continuation
position against transformers' own forward with an independent router hook, the all-positions oracle against the
last-token one, and the flag that restores the last-token form.

The brute-force one-sample descent with every position steered: test_oracle.py (``reference_descent``).
"""

import pytest
import torch
import torch.nn.functional as F

from roma_eval.methods.oracle import OracleConfig, descend
from roma_eval.methods.oracle.every_position import prepare_every_position, slot_map
from roma_eval.routing import decoder_layers, num_experts, resolve_layers, steer_routing, token_positions
from roma_eval.samples import Sample
from roma_eval.scoring import build_choice_batch, choice_scores, predictions, task_loss
from roma_eval.tiny import build_tiny_model

STRONG = dict(initializer_range=0.3)  # routing then moves the answers of a tiny random model
NAMES = [("whale", 0), ("shark", 1), ("eagle", 2), ("bat", 0), ("trout", 1), ("owl", 2), ("dog", 0), ("eel", 1),
         ("duck", 2), ("cow", 0), ("cod", 1), ("hawk", 2)]


def ordinary(n=5, spread=3):
    """Contexts of different lengths, three one- or two-token choices."""
    choices = ("mammal", "fish", "bird")
    return [Sample("t", i, f"Question:{' Think.' * (spread * i)} What is a {name}?\nAnswer:", "multiple_choice", "",
                   continuations=tuple(f" {c}" for c in choices), choices=choices, gold=gold)
            for i, (name, gold) in enumerate(NAMES[:n])]


def two_prompts():
    """A multiple-input sample (winogrande: a prompt per choice, one shared continuation): the prompts share their
    start only."""
    contexts = ("The whale met the trout because the whale", "The whale met the trout because the trout")
    return Sample("w", 0, "The whale met the trout because the", "multiple_choice", "",
                  continuations=(" was hungry.", " was hungry."), choices=("whale", "trout"), gold=1,
                  choice_contexts=contexts)


def full_forward_scores(model, batch, variables, slots, layers):
    """Choice scores from one plain forward of the right-padded batch, every steered position at its slot."""
    positions = torch.arange(batch.input_ids.shape[1]).expand_as(slots.slot).masked_fill(slots.slot < 0, -1)
    override = variables[batch.row_sample.unsqueeze(1), slots.slot.clamp(min=0)]
    with steer_routing(model, override, positions, layers):
        return choice_scores(model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits, batch)


@pytest.mark.parametrize("max_length", [512, 30])  # 30: lm-eval's left truncation cuts a sample's choices differently
def test_the_step_layout_equals_the_full_forward(arch_model, tokenizer, max_length):
    """Shared contexts run once per step (a head the rows attend to, differentiably) or every row whole: the same
    scores as the plain forward, at zero offsets (lm-eval's base scores) and at random ones."""
    arch, model = arch_model
    batch = build_choice_batch(tokenizer, [*ordinary(), two_prompts()], max_length)
    layers = resolve_layers(model, "last:2")
    slots = slot_map(batch, batch.attention_mask.sum(1))
    context = batch.last_context + 1
    if max_length == 512:  # untruncated: an ordinary sample shares its context; the two prompts their start only
        assert (slots.shared[:5] == context[batch.row_choice == 0][:5]).all()
        assert 0 < slots.shared[5] < context[-1]
    torch.manual_seed(0)
    shape = (batch.n_samples, int(slots.count.max()), len(layers), num_experts(model))
    recorded = token_positions("last:1", batch.last_context)
    for variables in (torch.zeros(shape), 2 * torch.randn(shape)):
        with torch.no_grad():
            reference = full_forward_scores(model, batch, variables, slots, layers)
        for prefix_cache in (False, True):
            rows, step_batch = prepare_every_position(model, batch, slots, recorded, layers[0], prefix_cache)
            assert (rows.head is not None) == prefix_cache
            with torch.no_grad():
                scores = choice_scores(rows.steered_logits(model, variables, step_batch.row_sample, layers, "offset"),
                                       step_batch)
            torch.testing.assert_close(scores, reference, rtol=0, atol=5e-5, msg=f"{arch} prefix_cache={prefix_cache}")
    with torch.no_grad():
        plain = choice_scores(model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits, batch)
        torch.testing.assert_close(full_forward_scores(model, batch, torch.zeros(shape), slots, layers), plain,
                                   rtol=0, atol=0)


def olmoe_router_with_offsets(gate, offsets):
    """transformers' ``OlmoeTopKRouter.forward`` (modeling_olmoe.py), written out, plus ``offsets`` (tokens, experts)
    on its logits: the reference routing change, independent of roma_eval.routing."""
    def forward(hidden_states):
        hidden_states = hidden_states.reshape(-1, gate.hidden_dim)
        router_logits = F.linear(hidden_states, gate.weight) + offsets
        router_probs = torch.softmax(router_logits, dtype=torch.float, dim=-1)
        top_value, top_index = torch.topk(router_probs, gate.top_k, dim=-1)
        if gate.norm_topk_prob:
            top_value = top_value / top_value.sum(dim=-1, keepdim=True)
        return router_logits, top_value.to(router_logits.dtype), top_index
    return forward


def test_the_gradient_at_a_continuation_position_matches_transformers_own_forward(tokenizer):
    """d loss / d offset at every (layer, position), context and continuation, from the descent's step (shared
    context run once, rows attending to it) against autograd through transformers' plain forward whose routers
    add the offsets themselves: the same, and non-zero at a continuation position."""
    model = build_tiny_model("olmoe", tokenizer, seed=3, **STRONG).eval().requires_grad_(False)
    samples = ordinary(3, spread=1)
    batch = build_choice_batch(tokenizer, samples, 512)
    layers = resolve_layers(model, "last:2")
    slots = slot_map(batch, batch.attention_mask.sum(1))
    rows, step_batch = prepare_every_position(model, batch, slots, token_positions("last:1", batch.last_context),
                                              layers[0], prefix_cache=True)
    assert rows.head is not None
    torch.manual_seed(1)
    variables = (0.5 * torch.randn(batch.n_samples, int(slots.count.max()), len(layers), num_experts(model)))
    variables.requires_grad_(True)
    logits = rows.steered_logits(model, variables, step_batch.row_sample, layers, "offset")
    task_loss(choice_scores(logits, step_batch), step_batch.gold, reduction="sum").backward()

    offsets = variables.detach()[batch.row_sample.unsqueeze(1), slots.slot.clamp(min=0)]  # (rows, S, layers, E)
    offsets = offsets.masked_fill((slots.slot < 0)[..., None, None], 0).requires_grad_(True)
    gates = [decoder_layers(model)[i].mlp.gate for i in layers]
    for slot, gate in enumerate(gates):
        gate.forward = olmoe_router_with_offsets(gate, offsets[:, :, slot].reshape(-1, offsets.shape[-1]))
    try:
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    finally:
        for gate in gates:
            del gate.forward
    scores = torch.full((batch.n_samples, 3), float("-inf"))
    for r in range(len(batch.row_sample)):  # each choice's continuation log-likelihood, written out
        start, ids = int(batch.last_context[r]), batch.continuation_ids[r][batch.continuation_mask[r]]
        logp = torch.log_softmax(out[r, start:start + len(ids)].float(), -1)
        scores[batch.row_sample[r], batch.row_choice[r]] = logp.gather(1, ids.unsqueeze(1)).sum()
    F.cross_entropy(scores, batch.gold, reduction="sum").backward()

    expected = torch.zeros_like(variables)  # a shared slot gathers the gradient of every row using it
    real = slots.slot >= 0
    expected.index_put_((batch.row_sample.unsqueeze(1).expand_as(slots.slot)[real], slots.slot[real]),
                        offsets.grad[real], accumulate=True)
    torch.testing.assert_close(variables.grad, expected, rtol=1e-3, atol=1e-5)
    continuation = int(batch.last_context[0]) + 1  # the first row's second continuation token's input position
    assert batch.continuation_mask[0].sum() >= 2 or batch.continuation_mask[1].sum() >= 2
    row = 0 if batch.continuation_mask[0].sum() >= 2 else 1
    grad_there = offsets.grad[row, continuation]
    assert grad_there.abs().max() > 1e-4, "a continuation position's routing moves the score"
    assert variables.grad[0, int(slots.slot[row, continuation])].abs().max() > 1e-4


def accuracy(outcomes, batch):
    scores = torch.tensor([o.after.scores for o in outcomes])
    return float((predictions(scores, batch)[0] == batch.gold).float().mean())


def test_every_position_beats_the_last_token_on_a_tiny_fixture(tokenizer):
    """The same budget, step size and stopping rule: steering every position the scores depend on reaches at least
    the last-token oracle's accuracy (it can fail: more variables, one step size), and more than base."""
    model = build_tiny_model("qwen3_moe", tokenizer, seed=3, **STRONG)
    samples = ordinary(len(NAMES), spread=1)
    batch = build_choice_batch(tokenizer, samples, 512)
    layers = resolve_layers(model, "last:2")
    result = {}
    for positions in ("all", "tokens"):
        config = OracleConfig(layers="last:2", max_steps=10, criterion="acc", positions=positions)
        outcomes = descend(model, batch, config, layers)
        result[positions] = accuracy(outcomes, batch)
        base = float((predictions(torch.tensor([o.before.scores for o in outcomes]), batch)[0] == batch.gold)
                     .float().mean())
    assert result["all"] >= result["tokens"] and result["all"] > base, (result, base)


def test_every_position_is_the_default_and_tokens_restores_the_last_token_form(tokenizer):
    """The default steers a slot per position (context once, each continuation); --positions tokens steers the
    last context token only: one slot, and the steered rows' other positions keep the base routing."""
    assert OracleConfig().positions == "all" and "positions" in OracleConfig().settings()
    model = build_tiny_model("olmoe", tokenizer, seed=3, **STRONG)
    samples = ordinary(2)
    batch = build_choice_batch(tokenizer, samples, 512)
    layers = resolve_layers(model, "last:2")
    every = descend(model, batch, OracleConfig(layers="last:2", max_steps=1, stable=9), layers)
    last = descend(model, batch, OracleConfig(layers="last:2", max_steps=1, stable=9, positions="tokens"), layers)
    lengths = batch.attention_mask.sum(1)
    for i, (a, b) in enumerate(zip(every, last)):
        rows = batch.row_sample == i
        context = int(batch.last_context[rows][0]) + 1
        assert a.after.variables.shape[0] == context + int((lengths[rows] - context).sum())
        assert b.after.variables.shape[0] == 1
        assert a.before.scores == pytest.approx(b.before.scores, abs=1e-5)  # both start at the base routing
    with pytest.raises(Exception, match="positions"):
        OracleConfig(positions="every")

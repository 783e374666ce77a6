"""The routing analysis against a brute-force version: routing read from transformers' own router outputs
(``output_router_logits=True``, one prompt at a time, no padding), every number recomputed in numpy with loops, on a
softmax family (OLMoE) and a sigmoid family with a correction bias and group-limited top-k (DeepSeek-V3)."""

import numpy as np
import pytest
import torch

from roma_eval.analysis import metrics
from roma_eval.analysis.collect import collect_routing
from roma_eval.analysis.document import layer_entry
from roma_eval.samples import Sample
from roma_eval.tiny import build_tiny_model

CONTEXTS = ["Question: which animal is a mammal?\nAnswer:", "2+2=", "The quick brown fox jumps over the",
            "Which of these is a mammal? whale, shark", "Question: What is the capital of France?\nAnswer:",
            "0123456789 +-*/", "The lazy dog sleeps", "Answer: Paris is the capital", "a b c d e f g",
            "Which is heavier, a stone or a feather?", "fox dog whale shark trout eel", "Question: 3+4?\nAnswer:"]
K = 3


def samples():
    """Ordinary multiple-choice samples (one prompt each) and a generation sample, none with trailing blanks."""
    out = [Sample("t", i, c, "multiple_choice", c, continuations=(" yes", " no"), choices=("yes", "no"), gold=0)
           for i, c in enumerate(CONTEXTS[:-1])]
    return out + [Sample("g", 0, CONTEXTS[-1], "generate_until", CONTEXTS[-1], gold="7", until=("\n",))]


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def deepseek_v3_choice(gate, logits):
    """DeepSeek-V3's rule written out: sigmoid scores + correction bias; the top ``topk_group`` groups by the sum of
    their two best biased scores; the other groups' experts out (-inf)."""
    scores = 1 / (1 + np.exp(-logits))
    biased = scores + gate.e_score_correction_bias.detach().double().numpy()
    groups = biased.reshape(len(biased), gate.num_group, -1)
    group_score = np.sort(groups, axis=-1)[:, :, -2:].sum(axis=-1)
    keep = np.argsort(-group_score, axis=-1)[:, : gate.topk_group]
    allowed = np.zeros_like(group_score, dtype=bool)
    np.put_along_axis(allowed, keep, True, axis=-1)
    return scores, np.where(np.repeat(allowed, groups.shape[-1], axis=-1), biased, -np.inf)


def brute_force(model, tokenizer, arch):
    """Per MoE layer: (weights at the last token (N, E), margin (N,), load_last counts, load_context counts)."""
    gates = [layer.mlp.gate for layer in model.model.layers if hasattr(layer.mlp, "gate")]
    top_k = gates[0].top_k
    per_layer = [dict(weights=[], margin=[], last=np.zeros(8), context=np.zeros(8)) for _ in gates]
    for sample in samples():
        ids = torch.tensor([tokenizer.encode(sample.context)])
        with torch.no_grad():
            router_logits = model(input_ids=ids, output_router_logits=True).router_logits
        for found, gate, logits in zip(per_layer, gates, router_logits):
            logits = logits.double().numpy()
            if arch == "olmoe":
                scores = softmax(logits)
                choice = scores
            else:
                scores, choice = deepseek_v3_choice(gate, logits)
            for t in range(len(logits)):
                ranked = sorted(range(8), key=lambda e: -choice[t, e])
                for e in ranked[:top_k]:
                    found["context"][e] += 1
                    if t == len(logits) - 1:
                        found["last"][e] += 1
            last = sorted(choice[-1], reverse=True)
            found["weights"].append(scores[-1])
            found["margin"].append(last[top_k - 1] - last[top_k])
    return per_layer


def entropy(p):
    p = np.asarray(p, float) / np.sum(p)
    return -sum(x * np.log(x) for x in p if x > 0) / np.log(len(p))


def quantiles(values):
    values = np.asarray(values, float)
    return {"mean": values.mean(), "p10": np.quantile(values, 0.1), "median": np.median(values),
            "p90": np.quantile(values, 0.9)}


@pytest.mark.parametrize("arch", ["olmoe", "deepseek_v3"])
def test_loads_entropies_and_margins_equal_brute_force(arch, tokenizer):
    model = build_tiny_model(arch, tokenizer, seed=3)
    routing = collect_routing(model, tokenizer, samples(), layers="all", batch_size=5)  # padded batches
    expected = brute_force(model, tokenizer, arch)
    assert len(expected) == len(routing.layers)
    for slot, want in enumerate(expected):
        entry = layer_entry(routing, slot, None, overload_factor=2.0)
        np.testing.assert_allclose(routing.weights[:, slot], np.array(want["weights"]), atol=1e-6)
        np.testing.assert_allclose(entry["load_last"], want["last"] / want["last"].sum(), atol=1e-12)
        np.testing.assert_allclose(entry["load_context"], want["context"] / want["context"].sum(), atol=1e-12)
        assert entry["dead_experts"] == [e for e in range(8) if want["context"][e] == 0]
        share = want["context"] / want["context"].sum()
        assert entry["overloaded_experts"] == [e for e in range(8) if share[e] > 2.0 / 8]
        assert entry["load_entropy"] == pytest.approx(entropy(want["context"]), abs=1e-12)
        spread = quantiles([entropy(w) for w in want["weights"]])
        assert entry["routing_entropy"] == pytest.approx(spread, abs=1e-6)
        assert entry["topk_margin"] == pytest.approx(quantiles(want["margin"]), abs=1e-6)
        assert all(m > 0 for m in want["margin"])  # the margins compared are real ones, not a degenerate 0


def brute_force_overlap(embedding, routing, k):
    """Mean over samples of |kNN_emb ∩ kNN_route| / k, by cosine, every pair compared."""
    def neighbours(x, i):
        cos = [(x[i] @ x[j] / np.linalg.norm(x[i]) / np.linalg.norm(x[j]), j) for j in range(len(x)) if j != i]
        return {j for _, j in sorted(cos, reverse=True)[:k]}

    return np.mean([len(neighbours(embedding, i) & neighbours(routing, i)) / k for i in range(len(routing))])


def brute_force_neighbour_similarity(embedding, routing, k):
    total = []
    for i in range(len(routing)):
        cos = sorted(((embedding[i] @ embedding[j] / np.linalg.norm(embedding[i]) / np.linalg.norm(embedding[j]), j)
                      for j in range(len(routing)) if j != i), reverse=True)
        for _, j in cos[:k]:
            total.append(routing[i] @ routing[j] / np.linalg.norm(routing[i]) / np.linalg.norm(routing[j]))
    return np.mean(total)


def test_neighbour_overlap_and_similarity_equal_brute_force(tokenizer):
    model = build_tiny_model("olmoe", tokenizer, seed=3)
    routing = collect_routing(model, tokenizer, samples(), layers="all", batch_size=5)
    vectors = np.concatenate([np.array(layer["weights"]) for layer in brute_force(model, tokenizer, "olmoe")], axis=1)
    embedding = np.random.default_rng(0).normal(size=(len(vectors), 16))
    found = metrics.alignment(embedding, routing.vectors, K, iterations=200, seed=0)
    assert found["knn_overlap"] == pytest.approx(brute_force_overlap(embedding, vectors, K), abs=1e-6)
    assert found["neighbour_similarity"] == pytest.approx(brute_force_neighbour_similarity(embedding, vectors, K),
                                                          abs=1e-6)
    assert found["similarity_gap"] == pytest.approx(found["neighbour_similarity"] - found["random_similarity"])
    assert found["knn_overlap_interval"][0] <= found["knn_overlap"] <= found["knn_overlap_interval"][1]


def test_alignment_tells_aligned_routing_from_unrelated_routing():
    """Routing that follows the embedding's clusters scores high on both views; the same rows shuffled score at
    chance (kNN overlap near k/(n-1), no similarity gap), with intervals that separate the two."""
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(5, 16))
    cluster = rng.integers(0, 5, size=300)
    embedding = centres[cluster] + 0.3 * rng.normal(size=(300, 16))
    expert_of_cluster = np.eye(8)[rng.permutation(8)[:5]]
    aligned = np.concatenate([expert_of_cluster[cluster] + 0.05 * rng.random((300, 8))] * 2, axis=1)
    unrelated = aligned[rng.permutation(300)]
    good = metrics.alignment(embedding, aligned, 10, iterations=500, seed=0)
    bad = metrics.alignment(embedding, unrelated, 10, iterations=500, seed=0)
    assert good["similarity_gap"] > 0.5 and good["knn_overlap"] > 0.1
    assert abs(bad["similarity_gap"]) < 0.05 and bad["knn_overlap"] < 3 * bad["knn_overlap_chance"]
    assert bad["similarity_gap_interval"][1] < good["similarity_gap_interval"][0]
    assert bad["knn_overlap_interval"][1] < good["knn_overlap_interval"][0]


def test_task_similarity_equals_every_pair():
    rng = np.random.default_rng(2)
    routing, tasks = rng.random((30, 6)), np.array(["a"] * 10 + ["b"] * 12 + ["c"] * 8)
    unit = routing / np.linalg.norm(routing, axis=1, keepdims=True)
    pairs = [(unit[i] @ unit[j], tasks[i] == tasks[j]) for i in range(30) for j in range(30) if i != j]
    found = metrics.task_similarity(routing, tasks)
    assert found["within"] == pytest.approx(np.mean([c for c, same in pairs if same]), abs=1e-12)
    assert found["across"] == pytest.approx(np.mean([c for c, same in pairs if not same]), abs=1e-12)

"""The routing-consistency figure against a brute-force computation, and on aligned vs random routing."""

import numpy as np

from roma_eval.toy.consistency import consistency_figure


def normalised(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force_neighbour_cosine(routing, embeddings, k):
    n = len(routing)
    total = []
    for i in range(n):
        sims = sorted(((float(embeddings[i] @ embeddings[j]), j) for j in range(n) if j != i), key=lambda t: -t[0])
        for _, j in sims[:k]:
            total.append(routing[i] @ routing[j] / np.linalg.norm(routing[i]) / np.linalg.norm(routing[j]))
    return float(np.mean(total))


def test_matches_brute_force():
    rng = np.random.default_rng(0)
    embeddings = normalised(rng.normal(size=(40, 16)))
    routing = rng.random(size=(40, 2 * 8))
    figure = consistency_figure(routing, embeddings, n_layers=2, k=3)
    assert np.isclose(figure["neighbour_routing_cosine"], brute_force_neighbour_cosine(routing, embeddings, 3))
    assert figure["samples"] == 40 and figure["k"] == 3


def test_aligned_routing_scores_high_and_unrelated_routing_does_not():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(5, 16))
    cluster = rng.integers(0, 5, size=300)
    embeddings = normalised(centres[cluster] + 0.3 * rng.normal(size=(300, 16)))
    expert_of_cluster = np.eye(8)[rng.permutation(8)[:5]]
    aligned = np.concatenate([expert_of_cluster[cluster] + 0.05 * rng.random((300, 8))] * 2, axis=1)
    unrelated = aligned[rng.permutation(300)]
    good = consistency_figure(aligned, embeddings, n_layers=2)
    bad = consistency_figure(unrelated, embeddings, n_layers=2)
    assert good["neighbour_routing_cosine"] > good["random_routing_cosine"] + 0.5
    assert good["neighbour_top1_agreement"] > 0.9
    assert abs(bad["neighbour_routing_cosine"] - bad["random_routing_cosine"]) < 0.1

"""The routing analysis' numbers, as functions of numpy arrays (docs/analysis.md says how to read each).

Loads and entropies describe one layer; the alignment numbers test RoMA's premise (arXiv 2511.07419, Sec. 1 and 3):
samples that are close in the embedding space should be routed alike.  Two views of it, each per sample and then
averaged, with a 95% percentile bootstrap interval over the samples:

* kNN overlap: |kNN_emb(i) ∩ kNN_route(i)| / k, the share of a sample's k nearest neighbours by embedding (cosine)
  that are also among its k nearest by routing (cosine of the routing vectors r_i); k / (n − 1) if routing ignored
  the embedding;
* similarity gap: the mean cos(r_i, r_j) over i's embedding neighbours j minus that over k random partners j ≠ i.
"""

from __future__ import annotations

import numpy as np

# The quantiles a per-sample distribution is summarised by, and the interval's level.
LEVEL = 0.95


def shares(counts: np.ndarray) -> np.ndarray:
    """Selection counts (…, E) -> each expert's share of them (0 where nothing was selected)."""
    total = counts.sum(axis=-1, keepdims=True)
    return np.divide(counts, total, out=np.zeros_like(counts, dtype=float), where=total > 0)


def dead_experts(counts: np.ndarray) -> list[int]:
    """Experts never selected."""
    return [int(e) for e in np.flatnonzero(counts == 0)]


def overloaded_experts(share: np.ndarray, factor: float) -> list[int]:
    """Experts whose share exceeds ``factor`` times the uniform share 1/E."""
    return [int(e) for e in np.flatnonzero(share > factor / share.shape[-1])]


def normalised_entropy(p: np.ndarray) -> np.ndarray:
    """Entropy of the distributions along the last axis (normalised to sum 1 first), divided by log E: 0 when all
    mass is on one expert, 1 when it is uniform."""
    p = np.asarray(p, dtype=float)
    p = p / p.sum(axis=-1, keepdims=True)
    terms = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return terms.sum(axis=-1) / np.log(p.shape[-1])


def spread(values: np.ndarray) -> dict:
    """Mean, 10th percentile, median and 90th percentile of the finite values (all 0.0 when there are none)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if not len(values):
        return {"mean": 0.0, "p10": 0.0, "median": 0.0, "p90": 0.0}
    p10, median, p90 = np.quantile(values, [0.1, 0.5, 0.9])
    return {"mean": float(values.mean()), "p10": float(p10), "median": float(median), "p90": float(p90)}


def movement(run: np.ndarray, base: np.ndarray) -> dict:
    """Median and 90th percentile over samples of ||r_run − r_base||₂ (rows: samples)."""
    distance = np.linalg.norm(np.asarray(run, float) - np.asarray(base, float), axis=-1)
    median, p90 = np.quantile(distance, [0.5, 0.9])
    return {"median": float(median), "p90": float(p90)}


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)


def nearest(vectors: np.ndarray, k: int) -> np.ndarray:
    """(n, k) each row's k nearest other rows by cosine similarity (faiss' exact search on unit vectors, the
    neighbours of ``roma_eval.neighbours``; a row is never its own neighbour)."""
    from roma_eval.neighbours import NeighbourSearch, find_neighbours

    unit = unit_rows(vectors).astype(np.float32)
    ids = list(range(len(unit)))
    return find_neighbours(unit, unit, NeighbourSearch(method="knn", k=k), query_ids=ids, reference_ids=ids).index


def random_partners(n: int, k: int, seed: int) -> np.ndarray:
    """(n, k) random partners j ≠ i of each row i, drawn uniformly with ``seed``."""
    rng = np.random.default_rng(seed)
    return (np.arange(n)[:, None] + rng.integers(1, n, size=(n, k))) % n


def pair_cosine(unit: np.ndarray, partners: np.ndarray) -> np.ndarray:
    """(n, k) cos(u_i, u_j) for each row i's partners j (``unit``: unit rows), one partner column at a time (n × d
    memory, not n × k × d: tens of thousands of samples by hundreds of routing dimensions)."""
    return np.stack([np.einsum("nd,nd->n", unit, unit[column]) for column in partners.T], axis=1)


def bootstrap_interval(values: np.ndarray, iterations: int, seed: int) -> list[float]:
    """95% percentile bootstrap interval of the mean of ``values`` (one per sample)."""
    from scipy.stats import bootstrap

    values = np.asarray(values, dtype=float)
    if np.ptp(values) == 0:  # every resample has the same mean
        return [float(values[0])] * 2
    result = bootstrap((values,), np.mean, n_resamples=iterations, method="percentile", confidence_level=LEVEL,
                       random_state=np.random.default_rng(seed), vectorized=True, batch=100)
    return [float(result.confidence_interval.low), float(result.confidence_interval.high)]


def alignment(embedding: np.ndarray, routing: np.ndarray, k: int, iterations: int, seed: int) -> dict | None:
    """The alignment numbers of n samples (rows of ``embedding`` and of ``routing``), neighbours searched among them;
    None for fewer than 2 samples.  k is lowered to n − 1 when there are fewer others."""
    n = len(routing)
    if n < 2:
        return None
    k = min(k, n - 1)
    by_embedding, by_routing = nearest(embedding, k), nearest(routing, k)
    overlap = np.array([len(set(a) & set(b)) / k for a, b in zip(by_embedding.tolist(), by_routing.tolist())])
    unit = unit_rows(routing)
    neighbour = pair_cosine(unit, by_embedding).mean(axis=1)
    random = pair_cosine(unit, random_partners(n, k, seed)).mean(axis=1)
    gap = neighbour - random
    return {"n": n, "k": k, "knn_overlap": float(overlap.mean()),
            "knn_overlap_interval": bootstrap_interval(overlap, iterations, seed),
            "knn_overlap_chance": k / (n - 1),
            "neighbour_similarity": float(neighbour.mean()), "random_similarity": float(random.mean()),
            "similarity_gap": float(gap.mean()), "similarity_gap_interval": bootstrap_interval(gap, iterations, seed)}


def task_similarity(routing: np.ndarray, tasks: np.ndarray) -> dict:
    """Mean cos(r_i, r_j) over pairs i ≠ j of the same task ("within") and of different tasks ("across"; None with
    one task), from the per-task sums of unit routing vectors: Σ_{i,j∈T} cos(r_i, r_j) = ||Σ_{i∈T} u_i||²."""
    unit, tasks = unit_rows(routing), np.asarray(tasks)
    sums, sizes = [], []
    for task in dict.fromkeys(tasks.tolist()):
        members = unit[tasks == task]
        sums.append(members.sum(axis=0))
        sizes.append(len(members))
    sums, sizes = np.array(sums), np.array(sizes, dtype=float)
    own = (sums ** 2).sum(axis=1)  # Σ over ordered pairs of one task, each i with itself included (cos = 1)
    within_pairs = (sizes * (sizes - 1)).sum()
    within = (own.sum() - sizes.sum()) / within_pairs if within_pairs else None
    across_pairs = sizes.sum() ** 2 - (sizes ** 2).sum()
    across = ((sums.sum(axis=0) ** 2).sum() - own.sum()) / across_pairs if across_pairs else None
    return {"within": None if within is None else float(within), "across": None if across is None else float(across)}

"""Neighbourhoods in the embedding space and their Gaussian weights (RoMA Eqs. 3-6; C3PO's kernel).

Queries (training samples for RoMA, test samples for C3PO) find neighbours among a reference set
(the success set S, Eq. 2: training samples the base model answers correctly).  A sample is never
its own neighbour.  Distances are Euclidean between embeddings (L2-normalised by default, see
``embedding.embed``); faiss does the search exactly (IndexFlatL2), which is what the paper's
small reference sets need.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from roma_eval.errors import RomaEvalError

METHODS = ("knn", "eps", "random")
DEFAULT_K = 3  # the paper's best neighbourhood (FACTS.md: k=3 76.2 vs k=1 ~72, k=5 74.9)
# Kernel width of the released RoMA code (the paper does not state one).  With unit-norm
# embeddings ||a-b||² = 2 - 2cos, so a neighbour at cosine 0.8 gets sim = exp(-0.4 / 0.32) ≈ 0.29.
DEFAULT_SIGMA = 0.4


@dataclass
class Neighbourhoods:
    """Neighbours of each query, padded to a common width.

    ``index`` (queries, width) are positions in the reference set, -1 for padding; ``weight`` are
    W_ij (Eq. 6), each row summing to 1 over its real neighbours (0 for padding; an empty
    ε-ball row is all zeros); ``distance2`` the squared embedding distances.
    """

    index: np.ndarray
    weight: np.ndarray
    distance2: np.ndarray

    def sizes(self) -> np.ndarray:
        return (self.index >= 0).sum(axis=1)


def gaussian_weights(distance2: np.ndarray, valid: np.ndarray, sigma: float) -> np.ndarray:
    """W_ij = sim(i,j) / Σ_j sim(i,j) with sim = exp(-||E(x_i) - E(x_j)||² / (2σ²))  (Eqs. 5-6)."""
    d2 = np.where(valid, distance2, np.inf)
    # Subtracting each row's smallest distance cancels in the ratio and keeps exp() from underflowing.
    nearest = d2.min(axis=1, keepdims=True)
    sim = np.exp(-(d2 - np.where(np.isfinite(nearest), nearest, 0.0)) / (2 * sigma**2))  # padding -> exp(-inf) = 0
    total = sim.sum(axis=1, keepdims=True)
    return np.divide(sim, total, out=np.zeros_like(sim), where=total > 0).astype(np.float32)


def _search(reference: np.ndarray, queries: np.ndarray, width: int):
    import faiss

    index = faiss.IndexFlatL2(reference.shape[1])
    index.add(np.ascontiguousarray(reference, dtype=np.float32))
    distance2, found = index.search(np.ascontiguousarray(queries, dtype=np.float32), width)
    return distance2, found


def _drop_self(found, distance2, query_ids, reference_ids, k):
    """Remove each query's own entry (same id) and keep the first k others."""
    ref_ids = np.asarray(reference_ids)
    out_index = np.full((len(found), k), -1, dtype=np.int64)
    out_d2 = np.zeros((len(found), k), dtype=np.float32)
    for row, (hits, d2, qid) in enumerate(zip(found, distance2, query_ids)):
        keep = [(h, d) for h, d in zip(hits, d2) if h >= 0 and ref_ids[h] != qid][:k]
        out_index[row, : len(keep)] = [h for h, _ in keep]
        out_d2[row, : len(keep)] = [d for _, d in keep]
    return out_index, out_d2


def find_neighbours(queries: np.ndarray, reference: np.ndarray, method: str = "knn", k: int = DEFAULT_K,
                    eps: float | None = None, sigma: float = DEFAULT_SIGMA, query_ids: Sequence | None = None,
                    reference_ids: Sequence | None = None, seed: int = 0) -> Neighbourhoods:
    """Neighbours of each query among ``reference``: kNN (Eq. 3), ε-ball (Eq. 4) or random (ablation).

    ``query_ids`` / ``reference_ids`` identify samples across the two sets, so that a query that is
    also in the reference set is not its own neighbour.
    """
    if method not in METHODS:
        raise RomaEvalError(f"neighbourhood method {method!r} is unknown; use one of {', '.join(METHODS)}")
    if len(reference) == 0:
        raise RomaEvalError("the success set is empty: the base model answers no training sample correctly, "
                            "so there are no neighbours to align with; use more or easier training data")
    if sigma <= 0:
        raise RomaEvalError(f"sigma={sigma} must be positive")
    query_ids = list(range(-len(queries), 0)) if query_ids is None else list(query_ids)
    reference_ids = list(range(len(reference))) if reference_ids is None else list(reference_ids)
    overlap = len(set(query_ids) & set(reference_ids)) > 0
    if method in ("knn", "random") and k > len(reference):
        raise RomaEvalError(f"k={k} neighbours requested but the success set has only {len(reference)} samples; "
                            f"lower k to at most {len(reference)} or add training data")
    if method == "knn":
        distance2, found = _search(reference, queries, min(k + (1 if overlap else 0), len(reference)))
        index, distance2 = _drop_self(found, distance2, query_ids, reference_ids, k)
    elif method == "eps":
        if eps is None or eps <= 0:
            raise RomaEvalError("the ε-ball neighbourhood needs a positive eps (a distance between embeddings)")
        distance2, found = _search(reference, queries, len(reference))
        found = np.where(distance2 <= eps**2, found, -1)  # Eq. 4: ||E(x_i) - E(x_j)|| <= ε
        index, distance2 = _drop_self(found, distance2, query_ids, reference_ids, len(reference))
        width = max(int((index >= 0).sum(axis=1).max()), 1)
        index, distance2 = index[:, :width], distance2[:, :width]
    else:  # random neighbours: the paper's control (67.8, no better than base)
        rng = np.random.default_rng(seed)
        ref_ids = np.asarray(reference_ids)
        index = np.full((len(queries), k), -1, dtype=np.int64)
        for row, qid in enumerate(query_ids):  # a query inside the reference set has one candidate fewer
            candidates = np.flatnonzero(ref_ids != qid)
            index[row, : min(k, len(candidates))] = rng.choice(candidates, size=min(k, len(candidates)), replace=False)
        distance2 = ((queries[:, None, :] - reference[index.clip(min=0)]) ** 2).sum(-1).astype(np.float32)
    valid = index >= 0
    return Neighbourhoods(index, gaussian_weights(distance2, valid, sigma), np.where(valid, distance2, 0.0))

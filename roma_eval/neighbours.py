"""Neighbourhoods in the embedding space and their Gaussian weights (RoMA Eqs. 3-6; C3PO's kernel).

Queries (training samples for RoMA, test samples for C3PO) find neighbours among a reference set
(the success set S, Eq. 2: training samples the base model answers correctly).  A sample is never
its own neighbour.  Distances are Euclidean between embeddings (L2-normalised by default, see
``embedding.embed``); faiss does the search exactly (IndexFlatL2), which is what the paper's
small reference sets need.

Two kernels (``kernel``).  ``eq5`` (the default) is the paper's Eq. 5, sim = exp(-||a - b||² / (2σ²)); on
unit vectors ||a - b||² = 2(1 - cos), so sim = exp(-(1 - cos) / σ²).  ``released`` is the released RoMA
trainer's sim = exp(-(1 - cos)² / (2σ²)) on the cosine similarity of the embeddings, a different function
of cos, much flatter for the same σ: at cos 0.8 and σ = 0.4, 0.29 in Eq. 5 and 0.88 in the released kernel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from roma_eval.errors import RomaEvalError

METHODS = ("knn", "eps", "random")
Kernel = Literal["eq5", "released"]
KERNELS = get_args(Kernel)
DEFAULT_K = 3  # the paper's best neighbourhood (its ablation: k=3 76.2 vs k=1 ~72, k=5 74.9)
# The paper states no kernel width.  0.4 is the released RoMA code's σ for ITS kernel, exp(-(1 - cos)² / (2σ²))
# (kernel "released": a neighbour at cosine 0.8 gets sim = exp(-0.04 / 0.32) ≈ 0.88).  Our default kernel is
# Eq. 5, and Eq. 5 with σ = 0.4 is much sharper: with unit-norm embeddings ||a-b||² = 2 - 2cos, so the same
# neighbour gets sim = exp(-0.4 / 0.32) ≈ 0.29.
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


def _check_kernel(kernel: str) -> None:
    if kernel not in KERNELS:
        raise RomaEvalError(f"kernel={kernel!r} is unknown; use one of {', '.join(KERNELS)}")


def gaussian_weights(distance2: np.ndarray, valid: np.ndarray, sigma: float, kernel: Kernel = "eq5",
                     cosine: np.ndarray | None = None) -> np.ndarray:
    """W_ij = sim(i,j) / Σ_j sim(i,j)  (Eq. 6), with sim = exp(-||E(x_i) - E(x_j)||² / (2σ²))  (Eq. 5, ``eq5``) or
    the released code's exp(-(1 - cos_ij)² / (2σ²))  (``released``: needs ``cosine``, the pairs' cosine similarity)."""
    _check_kernel(kernel)
    if kernel == "released" and cosine is None:
        raise RomaEvalError("the released kernel needs the neighbours' cosine similarities")
    energy = distance2 if kernel == "eq5" else (1.0 - cosine) ** 2  # sim = exp(-energy / (2σ²))
    energy = np.where(valid, energy, np.inf)
    # Subtracting each row's smallest energy cancels in the ratio and keeps exp() from underflowing.
    nearest = energy.min(axis=1, keepdims=True)
    sim = np.exp(-(energy - np.where(np.isfinite(nearest), nearest, 0.0)) / (2 * sigma**2))  # padding -> exp(-inf) = 0
    total = sim.sum(axis=1, keepdims=True)
    return np.divide(sim, total, out=np.zeros_like(sim), where=total > 0).astype(np.float32)


def _cosine(queries: np.ndarray, reference: np.ndarray, index: np.ndarray) -> np.ndarray:
    """cos(query i, reference index[i, j]) for each neighbour (padding: index -1, any value)."""
    def unit(x):
        x = np.asarray(x, dtype=np.float64)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    return np.einsum("qd,qkd->qk", unit(queries), unit(reference)[index.clip(min=0)])


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


@dataclass(frozen=True)
class NeighbourSearch:
    """How neighbours are found and weighted: ``method`` kNN (Eq. 3, ``k`` nearest), ε-ball (Eq. 4, within ``eps``)
    or random (the paper's control, ``k`` drawn with ``seed``); weights by ``kernel`` of width ``sigma``
    (``gaussian_weights``; the neighbours themselves do not depend on it)."""

    method: str = "knn"
    k: int = DEFAULT_K
    eps: float | None = None
    sigma: float = DEFAULT_SIGMA
    kernel: Kernel = "eq5"
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise RomaEvalError(f"neighbourhood method {self.method!r} is unknown; use one of {', '.join(METHODS)}")
        _check_kernel(self.kernel)
        if self.sigma <= 0:
            raise RomaEvalError(f"sigma={self.sigma} must be positive")
        if self.method == "eps" and (self.eps is None or self.eps <= 0):
            raise RomaEvalError("the ε-ball neighbourhood needs a positive eps (a distance between embeddings)")


def find_neighbours(queries: np.ndarray, reference: np.ndarray, search: NeighbourSearch = NeighbourSearch(),
                    query_ids: Sequence | None = None, reference_ids: Sequence | None = None) -> Neighbourhoods:
    """Neighbours of each query among ``reference``, found and weighted as ``search`` says.

    ``query_ids`` / ``reference_ids`` identify samples across the two sets, so that a query that is
    also in the reference set is not its own neighbour.
    """
    method, k, kernel = search.method, search.k, search.kernel
    if len(reference) == 0:
        raise RomaEvalError("the success set is empty: the base model answers no training sample correctly, "
                            "so there are no neighbours to align with; use more or easier training data")
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
        distance2, found = _search(reference, queries, len(reference))
        found = np.where(distance2 <= search.eps**2, found, -1)  # Eq. 4: ||E(x_i) - E(x_j)|| <= ε
        index, distance2 = _drop_self(found, distance2, query_ids, reference_ids, len(reference))
        width = max(int((index >= 0).sum(axis=1).max()), 1)
        index, distance2 = index[:, :width], distance2[:, :width]
    else:  # random neighbours: the paper's control (67.8, no better than base)
        rng = np.random.default_rng(search.seed)
        ref_ids = np.asarray(reference_ids)
        index = np.full((len(queries), k), -1, dtype=np.int64)
        for row, qid in enumerate(query_ids):  # a query inside the reference set has one candidate fewer
            candidates = np.flatnonzero(ref_ids != qid)
            index[row, : min(k, len(candidates))] = rng.choice(candidates, size=min(k, len(candidates)), replace=False)
        distance2 = ((queries[:, None, :] - reference[index.clip(min=0)]) ** 2).sum(-1).astype(np.float32)
    valid = index >= 0
    cosine = _cosine(queries, reference, index) if kernel == "released" else None
    return Neighbourhoods(index, gaussian_weights(distance2, valid, search.sigma, kernel, cosine),
                          np.where(valid, distance2, 0.0))

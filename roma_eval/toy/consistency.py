"""The routing-consistency figure: do samples that mean similar things get similar routing?

RoMA's diagnosis (arXiv 2511.07419, Sec. 1) is that they do not: the task-embedding manifold and
the routing manifold are misaligned.  `roma-eval demo` measures it for the base model and again
after RoMA (``roma_eval.demo.base.routing_consistency``):

* r_i — routing weights as RoMA defines them: softmax over all experts at the last context token,
  last 5 MoE layers, concatenated (``roma_eval.routing.probe_routing``);
* neighbours — each sample's k nearest neighbours by cosine in the embedding space of
  all-MiniLM-L6-v2 (``roma_eval.embedding``);
* the figure — mean cos(r_i, r_j) over neighbour pairs against the same mean over random pairs,
  and how often a sample's top-1 expert in the last layer equals its neighbour's.

Well-aligned routing would put neighbour pairs far above random pairs; a small gap is the
phenomenon RoMA fixes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def routing_vectors(model, tokenizer, contexts: Sequence[str], layers=None, batch_size: int = 64) -> np.ndarray:
    """(n, n_layers * n_experts) routing weights at each context's last token."""
    import torch

    from roma_eval.routing import probe_routing
    from roma_eval.scoring import encode

    rows = []
    with torch.no_grad():
        for start in range(0, len(contexts), batch_size):
            encoded = [encode(tokenizer, c) for c in contexts[start:start + batch_size]]
            width = max(map(len, encoded))
            ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, seq in enumerate(encoded):  # right padding: the last real token is the last context token
                ids[i, : len(seq)], mask[i, : len(seq)] = torch.tensor(seq), 1
            rows.append(probe_routing(model, ids, attention_mask=mask, layers=layers).flatten(1).float().numpy())
    return np.concatenate(rows)


def _cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def consistency_figure(routing: np.ndarray, embeddings: np.ndarray, n_layers: int, k: int = 3,
                       seed: int = 0) -> dict:
    """Neighbour-vs-random routing agreement; ``embeddings`` are L2-normalised rows."""
    n = len(routing)
    similarity = embeddings @ embeddings.T
    np.fill_diagonal(similarity, -np.inf)
    neighbours = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    rows = np.repeat(np.arange(n), k)
    cols = neighbours.reshape(-1)
    rng = np.random.default_rng(seed)
    random_cols = (rows + rng.integers(1, n, size=rows.shape)) % n  # never the sample itself
    last_layer = routing.reshape(n, n_layers, -1)[:, -1]
    top1 = last_layer.argmax(1)
    neighbour_cos = _cosine_rows(routing[rows], routing[cols])
    random_cos = _cosine_rows(routing[rows], routing[random_cols])
    return {
        "samples": n,
        "k": k,
        "neighbour_routing_cosine": float(neighbour_cos.mean()),
        "random_routing_cosine": float(random_cos.mean()),
        "neighbour_top1_agreement": float((top1[rows] == top1[cols]).mean()),
        "random_top1_agreement": float((top1[rows] == top1[random_cols]).mean()),
        "neighbour_embedding_cosine": float(similarity[rows, cols].mean()),
    }


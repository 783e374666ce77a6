"""RoMA: Routing Manifold Alignment router post-training (arXiv 2511.07419, Eqs. 2-10).

Only the routers of the tuned layers train (the recipe: ``methods/roma/recipe.py``).  For each training sample i:
  L_task(i)     = CE over the choices' log-likelihood scores with the gold choice        (Eq. 8)
  L_manifold(i) = Σ_{j∈N(x_i)} W_ij ||r_i - r_j||²                                      (Eq. 7)
  L_RoMA        = L_task + λ·L_manifold                                                   (Eq. 9)
where N(x_i) are i's neighbours inside the success set S (Eq. 2) in the embedding space (Eqs. 3-4),
W_ij the normalised Gaussian weights (Eqs. 5-6), and r_i the routing scores of the tuned layers
at the chosen context tokens, concatenated.  r_i is computed *live*, with gradient to the router
weights — the released code read it from a file, so its manifold term had no gradient.  The
neighbours' r_j are the base model's routing (constant targets; ``refresh_neighbour_routing``
recomputes them with the current routers each epoch).

``--regulariser`` swaps the manifold term for an ablation (``RoutingEntropy``, ``WeightChange``) or drops it
(``none``: Router Tuning, the recipe's objective without a routing term; λ = 0 trains the same routers and logs the
manifold term).  ``TowardsRouting`` is Eq. 7 towards any routing targets: Oracle Tuning's are each sample's own oracle
routing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from roma_eval.methods.roma.config import RomaConfig
from roma_eval.methods.roma.recipe import RouterObjective, RouterTraining, Share, TrainResult
from roma_eval.neighbours import Neighbourhoods, NeighbourSearch, find_neighbours
from roma_eval.routing import router_weights
from roma_eval.samples import Sample
from roma_eval.training.loop import RunOptions


def manifold_terms(r: torch.Tensor, neighbour_r: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Eq. 7 per sample: Σ_j W_ij ||r_i - r_j||².  r (B, D), neighbour_r (B, K, D), weight (B, K) -> (B,)."""
    return (weight * ((r.unsqueeze(1) - neighbour_r) ** 2).sum(-1)).sum(1)


def manifold_loss(r: torch.Tensor, neighbour_r: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """L_manifold of a batch: the mean of Eq. 7 over its samples."""
    return manifold_terms(r, neighbour_r, weight).mean()


# RoMA's objectives are Table 1's RoMA row, or its Router Tuning row when λ is 0 (RomaConfig.method).
_ROMA_METHOD = property(lambda self: self.config.method)


class TowardsRouting(RouterObjective):
    """L_reg = the batch mean of Σ_j W_ij ||r_i - routing[index_ij]||² (Eq. 7) towards the routing targets that
    ``targets(recipe)`` returns: (routing (M, D), index (N, K), weight (N, K)) over the recipe's samples."""

    def __init__(self, config, lam: float):
        super().__init__(config)
        self.lam = lam

    def targets(self, recipe: RouterTraining) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def setup(self, recipe: RouterTraining) -> None:
        routing, index, weight = self.targets(recipe)
        # Indexed by this process's sample numbering (base.rows), on the device: nothing crosses per step.
        owned = torch.from_numpy(recipe.base.owned)
        self.index, self.weight = index[owned].to(recipe.device), weight[owned].to(recipe.device)
        self.routing = routing.to(recipe.device)

    def regulariser(self, recipe: RouterTraining, share: Share | None) -> torch.Tensor:
        if share is None:
            return super().regulariser(recipe, share)
        r = share.scores.flatten(1).float()
        terms = manifold_terms(r, self.routing[self.index[share.rows]], self.weight[share.rows])
        return terms.sum() / share.batch_size  # per-sample terms average over the whole batch


class Manifold(TowardsRouting):
    """RoMA: each sample's routing pulled towards its successful neighbours' (Eqs. 2-7)."""

    method = _ROMA_METHOD

    def __init__(self, config: RomaConfig, embedder=None):
        super().__init__(config, config.lam)
        self.embedder = embedder

    def targets(self, recipe: RouterTraining):
        """Neighbourhoods in the success set S (Eq. 2) by embedding (Eqs. 3-6); the targets are the base routing of
        S's samples."""
        from roma_eval.embedding import embed, load_embedder

        config, samples, base = self.config, recipe.samples, recipe.base
        self.success = np.flatnonzero(base.correct)
        with recipe.dist.main_process_first():  # the main process embeds (and caches); the others then read the cache
            embeddings = embed([s.text for s in samples], self.embedder or load_embedder(config.embedder))
        search = NeighbourSearch(config.neighbours, config.k, config.eps, config.sigma, config.kernel, config.seed)
        self.hood = find_neighbours(embeddings, embeddings[self.success], search, query_ids=list(range(len(samples))),
                                    reference_ids=self.success.tolist())
        routing = base.routing[torch.from_numpy(self.success).to(base.routing.device)]
        return routing, torch.from_numpy(self.hood.index).clamp(min=0), torch.from_numpy(self.hood.weight)

    def start_epoch(self, recipe: RouterTraining, epoch: int) -> None:
        if self.config.refresh_neighbour_routing and epoch > 0:
            self.routing = recipe.current_routing(self.success)

    def summary(self) -> dict:
        return _neighbour_stats(self.hood)


class RoutingEntropy(RouterObjective):
    """Ablation: the routing entropy of each sample's r_i per (token, layer), averaged: towards confident routing."""

    method = _ROMA_METHOD

    def __init__(self, config: RomaConfig):
        super().__init__(config)
        self.lam = config.lam

    def regulariser(self, recipe: RouterTraining, share: Share | None) -> torch.Tensor:
        if share is None:
            return super().regulariser(recipe, share)
        p = share.scores.clamp_min(1e-12)
        return -(p * p.log()).sum(-1).flatten(1).mean(1).sum() / share.batch_size


class WeightChange(RouterObjective):
    """Ablation: keep the routers near the pretrained ones, Σ |ΔW| (l1) or Σ ΔW² (l2) over the tuned routers."""

    method = _ROMA_METHOD

    def __init__(self, config: RomaConfig):
        super().__init__(config)
        self.lam = config.lam

    def regulariser(self, recipe: RouterTraining, share: Share | None) -> torch.Tensor:
        current = router_weights(recipe.model, list(recipe.base_weights))
        deltas = [current[i] - w for i, w in recipe.base_weights.items()]
        penalty = sum(d.abs().sum() if self.config.regulariser == "l1" else (d**2).sum() for d in deltas)
        return penalty / recipe.dist.num_processes  # one penalty per step, whichever processes hold the batch


def roma_objective(config: RomaConfig, embedder=None) -> RouterObjective:
    """The objective ``config.regulariser`` names (``none``: Router Tuning's)."""
    if config.regulariser == "manifold":
        return Manifold(config, embedder)
    ablations = {"entropy": RoutingEntropy, "l1": WeightChange, "l2": WeightChange, "none": RouterObjective}
    return ablations[config.regulariser](config)


def _neighbour_stats(hood: Neighbourhoods) -> dict:
    sizes = hood.sizes()
    valid = hood.index >= 0
    return {"mean_neighbours": float(sizes.mean()), "samples_without_neighbours": int((sizes == 0).sum()),
            "mean_distance": float(np.sqrt(hood.distance2[valid]).mean()) if valid.any() else None}


def train_roma(model, tokenizer, samples: Sequence[Sample], out_dir, config: RomaConfig | None = None, *,
               embedder=None, **options) -> TrainResult:
    """Post-train the routers of ``model`` (in place) on ``samples`` with RoMA (Router Tuning with ``--regulariser
    none``); write a router checkpoint to ``out_dir``.  ``options`` are ``RunOptions``' (``base_model`` required,
    ``revision``, ``overwrite``, ``progress``); ``embedder`` a loaded sentence-transformers model (default: the
    config's)."""
    config = config or RomaConfig()
    recipe = RouterTraining(config, roma_objective(config, embedder), out_dir, RunOptions(**options))
    return recipe.run(model, tokenizer, samples)

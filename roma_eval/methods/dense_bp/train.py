"""Dense BP: Router Tuning (the task loss, Eq. 8, on RoMA's routers, data and budget) where each training forward
gives the routers a dense gradient from every expert while computing exactly the sparse model's output
(``routing.dense``: Default MoE's EMA default outputs, or the exact expert outputs).  The recipe is the router
recipe (``methods/roma/recipe.py``, frozen-layer cache included) with ``DenseForward`` as its objective; the output
is a router checkpoint recording ``method: dense_bp``.

Resuming an interrupted run restores the routers, the optimiser and the default outputs' EMA: it continues as the
uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import torch

from roma_eval.devices import sum_across_processes
from roma_eval.methods.dense_bp.config import DenseBPConfig
from roma_eval.methods.roma.config import RomaConfig
from roma_eval.methods.roma.recipe import RouterObjective, RouterTraining, TrainResult
from roma_eval.routing.dense import DefaultOutputs, dense_router_gradient
from roma_eval.samples import Sample
from roma_eval.training.loop import RunOptions


class DenseForward(RouterObjective):
    """Router Tuning's objective, each training forward inside ``dense_router_gradient``."""

    method = "dense_bp"

    def __init__(self, config: DenseBPConfig):
        super().__init__(config)
        self.defaults = DefaultOutputs(config.ema_beta)

    def setup(self, recipe: RouterTraining) -> None:
        self.model, self.layers, self.device = recipe.model, recipe.layers, recipe.device
        if recipe.dist.num_processes > 1:  # the EMA of the whole batch's outputs, as in one process
            self.lockstep = True
            self.defaults.across = lambda sums, counts: tuple(sum_across_processes([sums, counts]))

    def state(self) -> dict[str, torch.Tensor]:
        """The default outputs' EMA and which experts it has seen, per layer (the resume point keeps them)."""
        return {**{f"vectors.{i}": v for i, v in self.defaults.vectors.items()},
                **{f"seen.{i}": v for i, v in self.defaults.seen.items()}}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        for name, value in tensors.items():
            kind, layer = name.split(".")
            getattr(self.defaults, kind)[int(layer)] = value.to(self.device)

    @contextmanager
    def forward(self, batch):
        with dense_router_gradient(self.model, self.layers, self.config.estimator, self.defaults) as dense:
            # Padding tokens do not enter the default outputs; nor does the stand-in token of an idle forward.
            dense.token_mask = batch.attention_mask if batch is not None else torch.zeros((1, 1), device=self.device)
            yield


def train_dense_bp(model, tokenizer, samples: Sequence[Sample], out_dir, config: DenseBPConfig | None = None,
                   **options) -> TrainResult:
    """Train the routers of ``model`` (in place) with dense router gradients; write a router checkpoint.
    ``options`` are ``RunOptions``' (``base_model`` required, ``revision``, ``overwrite``, ``progress``)."""
    config = config or DenseBPConfig()
    recipe = RouterTraining(RomaConfig.sharing(config), DenseForward(config), out_dir, RunOptions(**options))
    return recipe.run(model, tokenizer, samples)

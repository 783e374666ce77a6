"""Dense BP: Router Tuning (the task loss, Eq. 8, on RoMA's routers, data and budget) where each training forward
gives the routers a dense gradient from every expert while computing exactly the sparse model's output
(``routing.dense``: Default MoE's EMA default outputs, or the exact expert outputs).  The loop is RoMA's
(``methods.roma.train``, frozen-layer cache included); the output is a router checkpoint whose training_config
records ``method: dense_bp``.

Resuming an interrupted run restores the routers and the optimiser exactly; the default outputs' EMA restarts at
the first step after the resume (they are statistics of the frozen experts, re-estimated within a few steps).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

from roma_eval.methods.dense_bp.config import DenseBPConfig
from roma_eval.methods.roma.train import RouterObjective, TrainResult, train_roma
from roma_eval.routing import resolve_layers
from roma_eval.routing.dense import DefaultOutputs, dense_router_gradient
from roma_eval.samples import Sample


def train_dense_bp(model, tokenizer, samples: Sequence[Sample], out_dir, config: DenseBPConfig | None = None, *,
                   base_model: str, revision: str | None = None, overwrite: bool = False,
                   progress: bool = True) -> TrainResult:
    """Train the routers of ``model`` (in place) with dense router gradients; write a router checkpoint."""
    config = config or DenseBPConfig()
    layers = resolve_layers(model, config.layers)
    defaults = DefaultOutputs(config.ema_beta)

    @contextmanager
    def dense_forward(batch):
        with dense_router_gradient(model, layers, config.estimator, defaults) as dense:
            dense.token_mask = batch.attention_mask  # padding tokens do not enter the default outputs
            yield

    objective = RouterObjective("dense_bp", config.to_dict(), forward=dense_forward)
    return train_roma(model, tokenizer, samples, out_dir, config.roma_config(regulariser="none"),
                      base_model=base_model, revision=revision, overwrite=overwrite, progress=progress,
                      objective=objective)

"""Oracle Tuning: the routers learn to reproduce each training sample's oracle routing r_i* (the per-sample routing
descent of methods/oracle, run on the training mixture with ``--split train --save_routing``).

The paper (Table 1, "Oracle Tuning") does not state the loss or its weight.  Ours is RoMA's objective with the
sample's own oracle routing in place of its successful neighbours' routing:

    L = L_task + λ · ||r_i − r_i*||²        (Eq. 9 with N(x_i) = {i*}, W = 1; λ = 0.8 after RoMA's warm-up)

so the Oracle Tuning and RoMA rows differ in the routing target only: r_i and r_i* are the routing scores over all
experts at the same tokens and layers (RoMA's last token, last 5 layers; the oracle run's must be the same), the
task loss, data, optimiser and budget are RoMA's.  A training sample without an oracle routing (the oracle ran with
a smaller --limit) keeps the task loss only; the summary counts them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from roma_eval.errors import RomaEvalError
from roma_eval.methods.oracle.store import MANIFEST, find_run_directory, load_oracle_routing
from roma_eval.methods.oracle_tuning.config import OracleTuningConfig
from roma_eval.methods.roma.config import RomaConfig
from roma_eval.methods.roma.recipe import RouterTraining, TrainResult
from roma_eval.methods.roma.train import TowardsRouting
from roma_eval.routing import resolve_layers, router_fingerprint
from roma_eval.samples import Sample
from roma_eval.training.loop import RunOptions


@dataclass
class OracleTargets:
    """The oracle routing r_i* per training document, (task, doc_id) -> (tokens × layers × experts) flattened."""

    run: Path
    routing: dict[tuple[str, int], torch.Tensor]
    manifest: dict

    def for_samples(self, samples: Sequence[Sample], dims: int):
        """(routing (M, D), index (N, 1), weight (N, 1)) for RoMA's loop; weight 0 where a sample has no target."""
        rows, index, weight = [torch.zeros(dims)], [], []
        for sample in samples:
            target = self.routing.get((sample.task, sample.doc_id))
            if target is None:
                index.append(0)
                weight.append(0.0)
                continue
            if target.numel() != dims:
                raise RomaEvalError(f"the oracle routing of {sample.task} doc {sample.doc_id} has {target.numel()} "
                                    f"values but the tuned routing has {dims}; run the oracle with the same layers "
                                    "and tokens")
            index.append(len(rows))
            weight.append(1.0)
            rows.append(target.float())
        return torch.stack(rows), torch.tensor(index).unsqueeze(1), torch.tensor(weight).unsqueeze(1)


def load_oracle_targets(oracle_dir, samples: Sequence[Sample], model, layers: list[int], tokens: str) -> OracleTargets:
    """Read and check the oracle's routing on the training documents: the same base model (router fingerprint), the
    training split, routing saved, the same layers and tokens; every training task present."""
    run = find_run_directory(oracle_dir)
    manifest = json.loads((run / MANIFEST).read_text(encoding="utf-8"))
    settings = manifest.get("settings", {})
    fix = "rerun `roma-eval oracle --split train --save_routing` on the training tasks"
    if manifest.get("split") != "train":
        raise RomaEvalError(f"{run} holds the oracle on the evaluation documents (split {manifest.get('split')!r}); "
                            f"Oracle Tuning needs the training documents: {fix}")
    if not settings.get("save_routing"):
        raise RomaEvalError(f"{run} was made without --save_routing; {fix}")
    if manifest.get("base_router_fingerprint") != router_fingerprint(model):
        raise RomaEvalError(f"{run} was made with another base model ({manifest.get('model')}: its routers differ); "
                            f"{fix} with this model")
    oracle_layers = resolve_layers(model, settings.get("layers"))
    if oracle_layers != layers or settings.get("tokens") != tokens:
        raise RomaEvalError(f"{run} steered layers {oracle_layers} at tokens {settings.get('tokens')!r}, but Oracle "
                            f"Tuning tunes layers {layers} at tokens {tokens!r}; pass --layers / --tokens to match, or "
                            "rerun the oracle with them")
    routing = {}
    for task in sorted({s.task for s in samples}):
        for doc_id, record in load_oracle_routing(run, task).items():
            routing[(task, doc_id)] = record["oracle"].flatten()
    if not routing:
        raise RomaEvalError(f"{run} holds no oracle routing for the training tasks; {fix}")
    return OracleTargets(run, routing, manifest)


class OracleAlignment(TowardsRouting):
    """Oracle Tuning's routing term: ||r_i − r_i*||² towards each sample's own oracle routing (weight 0 without)."""

    method = "oracle_tuning"

    def __init__(self, config: OracleTuningConfig, targets: OracleTargets):
        super().__init__(config, config.lam)
        self.oracle = targets
        self.counts: dict = {}

    def targets(self, recipe: RouterTraining):
        routing, index, weight = self.oracle.for_samples(recipe.samples, recipe.base.routing.shape[1])
        self.counts = {"samples_with_oracle_routing": int(weight.sum()),
                       "samples_without_oracle_routing": int(len(recipe.samples) - weight.sum())}
        return routing, index, weight

    def summary(self) -> dict:
        return {"oracle_run": str(self.oracle.run), "oracle_settings": self.oracle.manifest.get("settings"),
                **self.counts}


def train_oracle_tuning(model, tokenizer, samples: Sequence[Sample], out_dir, config: OracleTuningConfig,
                        **options) -> TrainResult:
    """Train the routers of ``model`` (in place) towards the oracle routing of ``samples``; write a router
    checkpoint.  ``options`` are ``RunOptions``' (``base_model`` required, ``revision``, ``overwrite``,
    ``progress``)."""
    from roma_eval.checkpoint import ensure_new_output

    options = RunOptions(**options)
    ensure_new_output(out_dir, options.overwrite)
    layers = resolve_layers(model, config.layers)  # the oracle run is checked before the base pass
    targets = load_oracle_targets(config.oracle_routing, samples, model, layers, config.tokens)
    recipe = RouterTraining(RomaConfig.sharing(config), OracleAlignment(config, targets), out_dir, options)
    return recipe.run(model, tokenizer, samples)

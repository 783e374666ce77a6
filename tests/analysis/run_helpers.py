"""Runs for `roma-eval analyze` to read, and the models they evaluated."""

import json
from pathlib import Path

import torch

from roma_eval.checkpoint import RouterRecord, save_router_checkpoint
from roma_eval.routing import router_fingerprint, router_weights

DATE = "2026-01-01T00-00-00.000000"


def fake_run(directory: Path, model: str, model_args: str, counts: dict[str, int], limit=None) -> Path:
    """A results_<date>.json as `lm_eval --output_path DIR --log_samples` writes it, with the fields `roma-eval
    analyze` reads (the model and its model_args, the limit, the documents and few-shot setting of each task)."""
    directory.mkdir(parents=True, exist_ok=True)
    data = {"results": {task: {"alias": task, "acc,none": 0.5} for task in counts},
            "config": {"model": model, "model_args": model_args, "limit": limit},
            "n-samples": {task: {"original": n, "effective": n} for task, n in counts.items()},
            "configs": {task: {"task": task, "num_fewshot": 0} for task in counts}, "chat_template": None}
    path = directory / f"results_{DATE}.json"
    path.write_text(json.dumps(data))
    return path


def tuned_checkpoint(model, directory: Path, layers, base_model: str, seed: int, method: str = "roma") -> Path:
    """A router checkpoint of ``layers``: the model's routers moved by noise drawn with ``seed`` (the model is left
    as it was)."""
    fingerprint = router_fingerprint(model)
    weights = router_weights(model)
    saved = {layer: weights[layer].detach().clone() for layer in layers}
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in layers:
            weights[layer].add_(torch.randn(weights[layer].shape, generator=generator))
    try:
        return save_router_checkpoint(model, directory, layers, RouterRecord(base_model, fingerprint, method=method))
    finally:
        with torch.no_grad():
            for layer in layers:
                weights[layer].copy_(saved[layer])

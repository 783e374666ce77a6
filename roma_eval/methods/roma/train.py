"""RoMA: Routing Manifold Alignment router post-training (arXiv 2511.07419, Eqs. 2-10).

Only the routers of the tuned layers train.  For each training sample i:
  L_task(i)     = CE over the choices' log-likelihood scores with the gold choice        (Eq. 8)
  L_manifold(i) = Σ_{j∈N(x_i)} W_ij ||r_i - r_j||²                                      (Eq. 7)
  L_RoMA        = L_task + λ·L_manifold                                                   (Eq. 9)
where N(x_i) are i's neighbours inside the success set S (Eq. 2) in the embedding space (Eqs. 3-4),
W_ij the normalised Gaussian weights (Eqs. 5-6), and r_i the routing scores of the tuned layers
at the chosen context tokens, concatenated.  r_i is computed *live*, with gradient to the router
weights — the released code read it from a file, so its manifold term had no gradient.  The
neighbours' r_j are the base model's routing (constant targets; ``refresh_neighbour_routing``
recomputes them with the current routers each epoch).

Precision: the optimiser updates fp32 master copies of the tuned routers when the model is in bf16 or
fp16 and writes them back rounded after every step.  Updated in place in bf16, AdamW steps of the
paper's lr 7e-5 are mostly below bf16's resolution at the routers' scale: on the toy model 62% of the
weights never changed and the routers moved about half as far as in fp32.  The forward pass is the
model's own, in its dtype, exactly as at evaluation.

Speed: hidden states entering the first tuned layer cannot change while only routers at or above
it train, so one base pass computes them (with the success set and the base routing) and every
step runs only the tuned layers (``routing.partial.run_from_layer``).
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState

from roma_eval.errors import RomaEvalError
from roma_eval.methods.roma.config import RomaConfig
from roma_eval.neighbours import Neighbourhoods, find_neighbours
from roma_eval.routing import (
    record_routing,
    resolve_layers,
    router_fingerprint,
    router_weights,
    token_positions,
)
from roma_eval.routing.partial import capture_layer_input, run_from_layer
from roma_eval.samples import Sample
from roma_eval.scoring import build_choice_batch, choice_scores, predictions, task_loss
from roma_eval.storage import load_training_state, read_progress, save_training_state


def manifold_terms(r: torch.Tensor, neighbour_r: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Eq. 7 per sample: Σ_j W_ij ||r_i - r_j||².  r (B, D), neighbour_r (B, K, D), weight (B, K) -> (B,)."""
    return (weight * ((r.unsqueeze(1) - neighbour_r) ** 2).sum(-1)).sum(1)


def manifold_loss(r: torch.Tensor, neighbour_r: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """L_manifold of a batch: the mean of Eq. 7 over its samples."""
    return manifold_terms(r, neighbour_r, weight).mean()


def _regulariser(config: RomaConfig, r, neighbour_r, weight, scores, model, base_weights) -> torch.Tensor:
    """Per-sample terms (B,) for manifold / entropy; one scalar for the weight penalties l1 / l2."""
    if config.regulariser == "manifold":
        return manifold_terms(r, neighbour_r, weight)
    if config.regulariser == "entropy":  # routing entropy per (position, layer), averaged: towards confident routing
        p = scores.clamp_min(1e-12)
        return -(p * p.log()).sum(-1).flatten(1).mean(1)
    if config.regulariser in ("l1", "l2"):  # keep the routers near the pretrained ones
        current = router_weights(model, list(base_weights))
        deltas = [current[i] - w for i, w in base_weights.items()]
        return sum(d.abs().sum() if config.regulariser == "l1" else (d**2).sum() for d in deltas)
    return torch.zeros(len(r), device=r.device)


@dataclass
class BasePass:
    """What the frozen base model tells us about the training samples, computed once."""

    correct: np.ndarray  # (N,) bool: the base model's acc per sample -> the success set S (Eq. 2)
    routing: torch.Tensor  # (N, D) base r_i
    hidden: list[list[torch.Tensor]]  # per sample, per choice: (tokens, hidden) entering the first tuned layer


@torch.no_grad()
def base_pass(model, tokenizer, samples: Sequence[Sample], config: RomaConfig, layers, batch_size: int,
              progress: bool = True) -> BasePass:
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    correct, routing, hidden = [], [], []
    for start in tqdm(range(0, len(samples), batch_size), desc="base pass", disable=not progress):
        batch = build_choice_batch(tokenizer, samples[start:start + batch_size], config.max_length).to(device)
        positions = token_positions(config.tokens, batch.last_context)
        with capture_layer_input(model, layers[0]) as captured, record_routing(model, positions, layers) as record:
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        acc_pred, _ = predictions(choice_scores(logits, batch), batch)
        correct.append((acc_pred == batch.gold).cpu().numpy())
        routing.append(batch.per_sample(record.scores).flatten(1).float().cpu())
        lengths = batch.attention_mask.sum(1).tolist()
        rows = [captured["hidden_states"][r, :n].cpu() for r, n in enumerate(lengths)]
        for i in range(batch.n_samples):
            hidden.append([rows[r] for r in torch.nonzero(batch.row_sample == i).squeeze(1).tolist()])
    return BasePass(np.concatenate(correct), torch.cat(routing), hidden)


def _pad_hidden(rows: list[torch.Tensor], seq_len: int) -> torch.Tensor:
    out = rows[0].new_zeros(len(rows), seq_len, rows[0].shape[-1])
    for r, row in enumerate(rows):
        out[r, : row.shape[0]] = row
    return out


def _schedule(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then linear decay to 0 (the LR factor; λ uses the warm-up part only)."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


class RouterWeights:
    """The tuned routers' weights as the model holds them and as the optimiser updates them: the same
    tensors in an fp32 model, fp32 master copies otherwise (module docstring, "Precision")."""

    def __init__(self, model, layers):
        self.layers = layers
        self.model = list(router_weights(model, layers).values())
        for weight in self.model:
            weight.requires_grad_(True)
        self.master = [w if w.dtype == torch.float32 else w.detach().float().requires_grad_(True) for w in self.model]

    def gradients_to_master(self) -> None:
        for master, weight in zip(self.master, self.model):
            if master is not weight:
                master.grad = None if weight.grad is None else weight.grad.float()
                weight.grad = None

    @torch.no_grad()
    def master_to_model(self) -> None:
        for master, weight in zip(self.master, self.model):
            if master is not weight:
                weight.copy_(master)


def _save_resume(directory: Path, weights: RouterWeights, optimizer, progress: dict) -> None:
    """After each finished epoch: master router weights, optimiser state and progress (no pickle)."""
    tensors = {f"router.{i}": w for i, w in zip(weights.layers, weights.master)}
    save_training_state(directory, tensors, optimizer, progress)


def _load_resume(directory: Path, weights: RouterWeights, optimizer, config: dict) -> dict | None:
    progress = read_progress(directory)
    if progress is None:
        return None
    if progress["config"] != config:
        raise RomaEvalError(f"{directory} holds an interrupted run with a different configuration; "
                            "rerun with the same flags to resume, or delete that directory to start over")
    tensors, progress = load_training_state(directory, optimizer)
    with torch.no_grad():
        for i, master in zip(weights.layers, weights.master):
            master.copy_(tensors[f"router.{i}"])
    weights.master_to_model()
    return progress


@dataclass
class RouterObjective:
    """What another router-training method changes in RoMA's loop (Oracle Tuning, Dense BP: docs/baselines.md).

    ``method`` and ``config`` (the method's own settings) are recorded in the checkpoint's training_config (and
    checked on resume) in place of the RomaConfig that drives the loop.  ``targets(samples, base, layers)`` returns
    (routing (M, D), index (N, K), weight (N, K)): what each sample's r_i is pulled towards by the regulariser
    Σ_j W_ij ||r_i - routing[index_ij]||² in place of RoMA's neighbourhoods (no embedding, no neighbour search);
    None: no targets (use it with regulariser "none").  ``forward(batch)``: a context manager around each
    training forward.  ``summary``: extra summary entries."""

    method: str
    config: dict
    targets: Callable | None = None
    forward: Callable | None = None
    summary: dict = field(default_factory=dict)


@dataclass
class TrainResult:
    checkpoint: Path
    log: list[dict]
    summary: dict


def _neighbour_stats(hood: Neighbourhoods) -> dict:
    sizes = hood.sizes()
    valid = hood.index >= 0
    return {"mean_neighbours": float(sizes.mean()), "samples_without_neighbours": int((sizes == 0).sum()),
            "mean_distance": float(np.sqrt(hood.distance2[valid]).mean()) if valid.any() else None}


def train_roma(model, tokenizer, samples: Sequence[Sample], out_dir, config: RomaConfig | None = None, *,
               base_model: str, revision: str | None = None, overwrite: bool = False, embedder=None,
               progress: bool = True, objective: RouterObjective | None = None) -> TrainResult:
    """Post-train the routers of ``model`` (in place) on ``samples``; write a router checkpoint to ``out_dir``.

    ``objective`` turns the same loop into another router-training method (``RouterObjective``)."""
    from tqdm.auto import tqdm

    from roma_eval import __version__
    from roma_eval.checkpoint import ensure_new_output, save_router_checkpoint
    from roma_eval.embedding import embed, load_embedder

    config = config or RomaConfig()
    out_dir = Path(out_dir)
    dist = PartialState()  # one process, or one of `accelerate launch --num_processes N`
    progress = progress and dist.is_main_process
    ensure_new_output(out_dir, overwrite)
    if any(s.output_type != "multiple_choice" for s in samples):
        raise RomaEvalError("RoMA trains on multiple-choice tasks with gold labels; drop the generation tasks "
                            "from --tasks")
    layers = resolve_layers(model, config.layers)
    rng = random.Random(config.seed)
    samples = list(samples)
    if config.train_fraction < 1:
        samples = sorted(rng.sample(samples, max(1, round(config.train_fraction * len(samples)))),
                         key=lambda s: (s.task, s.doc_id))
    fingerprint = router_fingerprint(model)
    base_weights = {i: w.detach().clone() for i, w in router_weights(model, layers).items()}

    base = base_pass(model, tokenizer, samples, config, layers, config.batch_size, progress)
    success = np.flatnonzero(base.correct)
    recorded = config.to_dict() if objective is None else {**objective.config, "method": objective.method}
    if objective is None:
        ids = list(range(len(samples)))
        embeddings = embed([s.text for s in samples], embedder or load_embedder(config.embedder))
        hood = find_neighbours(embeddings, embeddings[success], method=config.neighbours, k=config.k, eps=config.eps,
                               sigma=config.sigma, query_ids=ids, reference_ids=success.tolist(), seed=config.seed)
        neighbour_index = torch.from_numpy(hood.index).clamp(min=0)
        neighbour_weight = torch.from_numpy(hood.weight)
        success_routing = base.routing[success]
    else:
        hood = None
        success_routing, neighbour_index, neighbour_weight = (
            objective.targets(samples, base, layers) if objective.targets is not None
            else (base.routing[:1] * 0, torch.zeros(len(samples), 1, dtype=torch.long), torch.zeros(len(samples), 1)))

    model.requires_grad_(False)
    weights = RouterWeights(model, layers)
    optimizer = torch.optim.AdamW(weights.master, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(samples) / config.batch_size)
    total = config.epochs * steps_per_epoch
    warmup = max(1, round(config.warmup_ratio * total))
    resume_dir = out_dir.with_name(out_dir.name + ".partial")
    state = _load_resume(resume_dir, weights, optimizer, recorded)
    first_epoch, step, log = (state["epoch"] + 1, state["step"], state["log"]) if state else (0, 0, [])

    device = weights.model[0].device
    model.train()
    bar = tqdm(total=total, initial=step, desc="RoMA" if objective is None else objective.method,
               disable=not progress)
    for epoch in range(first_epoch, config.epochs):
        if config.refresh_neighbour_routing and epoch > 0:
            success_routing = _current_routing(model, tokenizer, samples, base, success, config, layers)
        order = list(range(len(samples)))
        random.Random(config.seed + epoch).shuffle(order)
        for start in range(0, len(order), config.batch_size):
            step_start = time.perf_counter()
            idx = order[start:start + config.batch_size]
            lam = 0.0 if config.regulariser == "none" else config.lam * min(1.0, (step + 1) / warmup)
            optimizer.zero_grad(set_to_none=True)
            # Each process takes a shard of the batch; its loss is scaled so that the processes' losses
            # (and gradients, summed below) add up to the one-process loss of the whole batch.
            shard = idx[dist.process_index::dist.num_processes]
            terms = torch.zeros(2, device=device)  # this shard's share of (L_task, L_reg)
            if shard:
                l_task, l_reg = _shard_losses(model, tokenizer, samples, shard, base, config, layers, device,
                                              success_routing, neighbour_index, neighbour_weight, base_weights,
                                              len(idx), dist.num_processes, objective and objective.forward)
                (l_task + lam * l_reg).backward()  # Eq. 9 / Eq. 10: only the tuned routers require grad
                terms = torch.stack([l_task.detach(), l_reg.detach()])
            if dist.num_processes > 1:
                from accelerate.utils import reduce

                terms = reduce(terms, reduction="sum")
                for p in weights.model:
                    p.grad = reduce(p.grad if p.grad is not None else torch.zeros_like(p), reduction="sum")
            l_task_value, l_reg_value = terms.tolist()
            loss_value = l_task_value + lam * l_reg_value
            if not math.isfinite(loss_value):
                raise RomaEvalError(f"the loss became {loss_value} at step {step}; lower --lr (now {config.lr}) "
                                    f"or --lam (now {config.lam}); the last finished epoch is kept for resuming")
            lr = config.lr * _schedule(step, total, warmup)
            for group in optimizer.param_groups:
                group["lr"] = lr
            weights.gradients_to_master()
            optimizer.step()
            weights.master_to_model()
            log.append({"step": step, "epoch": epoch, "loss": loss_value, "task": l_task_value,
                        "regulariser": l_reg_value, "lambda": lam, "lr": lr,
                        "seconds": time.perf_counter() - step_start})
            step += 1
            bar.update(1)
            bar.set_postfix(task=f"{l_task_value:.3f}", reg=f"{l_reg_value:.4f}")
        if dist.is_main_process:
            _save_resume(resume_dir, weights, optimizer,
                         {"epoch": epoch, "step": step, "log": log, "config": recorded})
        dist.wait_for_everyone()
    bar.close()
    model.eval()
    model.requires_grad_(False)

    summary = {"training_samples": len(samples), "success_set_size": int(len(success)),
               "base_train_accuracy": float(base.correct.mean()), "tuned_layers": layers,
               "routing_dims": int(base.routing.shape[1]), "steps": step,
               **(_neighbour_stats(hood) if hood is not None else objective.summary)}
    training_config = {**recorded, "summary": summary, "roma_eval_version": __version__,
                       "torch_version": torch.__version__}
    log_text = "".join(json.dumps(entry) + "\n" for entry in log)
    if dist.is_main_process:  # every process holds the same routers: one writes them
        save_router_checkpoint(model, out_dir, layers, base_fingerprint=fingerprint, base_model=base_model,
                               revision=revision, training_config=training_config, overwrite=overwrite,
                               extra_files={"training_log.jsonl": log_text})
        shutil.rmtree(resume_dir, ignore_errors=True)
    dist.wait_for_everyone()
    return TrainResult(out_dir, log, summary)


def _shard_losses(model, tokenizer, samples, shard, base: BasePass, config: RomaConfig, layers, device,
                  success_routing, neighbour_index, neighbour_weight, base_weights, batch_size: int, n_processes: int,
                  forward: Callable | None = None):
    """(L_task, L_reg) contributions of the samples ``shard`` of a batch of ``batch_size``, routers live."""
    batch = build_choice_batch(tokenizer, [samples[i] for i in shard], config.max_length).to(device)
    hidden = _pad_hidden([row for i in shard for row in base.hidden[i]], batch.input_ids.shape[1]).to(device)
    with record_routing(model, token_positions(config.tokens, batch.last_context), layers) as record, \
            (forward(batch) if forward is not None else nullcontext()):
        logits = run_from_layer(model, layers[0], hidden, batch.attention_mask).logits
    l_task = task_loss(choice_scores(logits, batch), batch.gold, reduction="sum") / batch_size  # Eq. 8
    scores = batch.per_sample(record.scores)
    rows = torch.tensor(shard)
    reg = _regulariser(config, scores.flatten(1).float(), success_routing[neighbour_index[rows]].to(device),
                       neighbour_weight[rows].to(device), scores, model, base_weights)
    # per-sample terms average over the whole batch; a weight penalty counts once across processes
    return l_task, (reg.sum() / batch_size if reg.dim() == 1 else reg / n_processes)


@torch.no_grad()
def _current_routing(model, tokenizer, samples, base: BasePass, success, config, layers) -> torch.Tensor:
    """r_j of the success set under the current routers, from the cached hidden states."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(success), config.batch_size):
        idx = success[start:start + config.batch_size].tolist()
        batch = build_choice_batch(tokenizer, [samples[i] for i in idx], config.max_length).to(device)
        hidden = _pad_hidden([row for i in idx for row in base.hidden[i]], batch.input_ids.shape[1]).to(device)
        with record_routing(model, token_positions(config.tokens, batch.last_context), layers) as record:
            run_from_layer(model, layers[0], hidden, batch.attention_mask)
        out.append(batch.per_sample(record.scores).flatten(1).float().cpu())
    return torch.cat(out)

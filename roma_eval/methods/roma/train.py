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
step runs only the tuned layers (``routing.partial.run_from_layer``; ``no_layer_cache`` runs them all).
Nothing in the step loop waits for the host (``data.py``: samples tokenised once, batches planned per
epoch, the cache flat on the device); the losses come back every ``log_every`` steps.  With several
processes each holds every N-th sample (base pass, cache, its share of each batch) and the routers'
gradients are summed.
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

from roma_eval.devices import input_device, process_state
from roma_eval.errors import RomaEvalError
from roma_eval.methods.roma.config import RomaConfig
from roma_eval.methods.roma.data import LayerCache, TrainingRows, epoch_batches
from roma_eval.methods.schedule import StepSchedule
from roma_eval.neighbours import Neighbourhoods, NeighbourSearch, find_neighbours
from roma_eval.routing import (
    num_experts,
    record_routing,
    resolve_layers,
    router_fingerprint,
    router_weights,
    token_positions,
)
from roma_eval.routing.partial import capture_layer_input, run_from_layer
from roma_eval.samples import Sample
from roma_eval.scoring import choice_scores, predictions, task_loss
from roma_eval.storage import load_training_state, read_progress, require_free_space, save_training_state


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
    routing: torch.Tensor  # (N, D) base r_i, on the device
    rows: TrainingRows  # this process's samples, tokenised once
    cache: LayerCache | None  # hidden states entering the first tuned layer (None: no_layer_cache)
    owned: np.ndarray  # indices of the samples this process holds (all of them in one process)


def _owned(n: int, dist) -> np.ndarray:
    """The samples process ``dist.process_index`` of ``dist.num_processes`` runs: every num_processes-th."""
    return np.arange(dist.process_index, n, dist.num_processes)


def _base_batches(rows: TrainingRows, config: RomaConfig, batch_size: int) -> list[list[int]]:
    """The base pass's batches: sample order (or longest first with ``group_by_length``: less padding)."""
    order = list(range(len(rows)))
    if config.group_by_length:
        order.sort(key=lambda i: -int(rows.sample_len[i]))
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


@torch.no_grad()
def base_pass(model, tokenizer, samples: Sequence[Sample], config: RomaConfig, layers, batch_size: int,
              progress: bool = True, dist=None) -> BasePass:
    """One pass of the frozen base model over the training samples: which it answers correctly, their routing
    r_i and (unless ``no_layer_cache``) the hidden states entering the first tuned layer.  With several
    processes each runs its share of the samples (``_owned``); correctness and routing are then summed
    across processes (each sample's row is zero elsewhere), the hidden states stay where they were computed."""
    from tqdm.auto import tqdm

    dist = dist or process_state()
    device = input_device(model)
    owned = _owned(len(samples), dist)
    rows = TrainingRows(tokenizer, [samples[i] for i in owned], config.max_length, device)
    cache = None
    if not config.no_layer_cache:
        cache = LayerCache.allocate(rows, model.config.hidden_size, model.get_input_embeddings().weight.dtype, device)
    plan = rows.plan(_base_batches(rows, config, batch_size))
    global_index = torch.from_numpy(owned).to(device)
    correct = torch.zeros(len(samples), dtype=torch.bool, device=device)
    routing = None
    for step in tqdm(range(len(plan)), desc="base pass", disable=not progress):
        batch = rows.batch(plan, step, input_ids=True)
        positions = token_positions(config.tokens, batch.last_context)
        capture = capture_layer_input(model, layers[0]) if cache is not None else nullcontext({})
        with capture as captured, record_routing(model, positions, layers) as record:
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        acc_pred, _ = predictions(choice_scores(logits, batch), batch)
        s0, s1 = plan.steps[step][:2]
        index = global_index[plan.samples[s0:s1]]
        correct[index] = batch.right(acc_pred)
        r = batch.per_sample(record.scores).flatten(1).float()
        if routing is None:
            routing = torch.zeros(len(samples), r.shape[1], device=device)
        routing[index] = r
        if cache is not None:
            cache.write(rows, plan, step, captured["hidden_states"])
    if dist.num_processes > 1:
        from accelerate.utils import reduce

        if routing is None:  # this process had no samples: learn the width from the model
            routing = torch.zeros(len(samples), len(layers) * num_experts(model), device=device)
        correct = reduce(correct.long(), reduction="sum").bool()
        routing = reduce(routing, reduction="sum")
    return BasePass(correct.cpu().numpy(), routing, rows, cache, owned)


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
    dist = process_state()  # one process, or one of `accelerate launch --num_processes N`
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
    # At most: the previous epoch's state and the next one's staging (fp32 weights and AdamW's two moments each),
    # the checkpoint and its log.
    require_free_space(out_dir.parent, 32 * sum(w.numel() for w in base_weights.values()) + 2**20,
                       "the router checkpoint and its training state")

    base = base_pass(model, tokenizer, samples, config, layers, config.batch_size, progress, dist)
    success = np.flatnonzero(base.correct)
    recorded = config.to_dict() if objective is None else {**objective.config, "method": objective.method}
    if objective is None:
        ids = list(range(len(samples)))
        with dist.main_process_first():  # the main process embeds (and caches); the others then read the cache
            embeddings = embed([s.text for s in samples], embedder or load_embedder(config.embedder))
        search = NeighbourSearch(config.neighbours, config.k, config.eps, config.sigma, config.kernel, config.seed)
        hood = find_neighbours(embeddings, embeddings[success], search, query_ids=ids, reference_ids=success.tolist())
        success_routing = base.routing[torch.from_numpy(success).to(base.routing.device)]
        index, weight = torch.from_numpy(hood.index).clamp(min=0), torch.from_numpy(hood.weight)
    else:
        hood = None
        success_routing, index, weight = (
            objective.targets(samples, base, layers) if objective.targets is not None
            else (base.routing[:1] * 0, torch.zeros(len(samples), 1, dtype=torch.long), torch.zeros(len(samples), 1)))
    device = input_device(model)
    # Indexed by this process's sample numbering (base.rows), on the device: nothing crosses per step.
    owned = torch.from_numpy(base.owned)
    neighbour_index, neighbour_weight = index[owned].to(device), weight[owned].to(device)
    success_routing = success_routing.to(device)

    model.requires_grad_(False)
    weights = RouterWeights(model, layers)
    optimizer = torch.optim.AdamW(weights.master, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(samples) / config.batch_size)
    total = config.epochs * steps_per_epoch
    schedule = StepSchedule.of(config, total)  # LR and λ are functions of the step: a resumed run continues them
    resume_dir = out_dir.with_name(out_dir.name + ".partial")
    state = _load_resume(resume_dir, weights, optimizer, recorded)
    first_epoch, step, log = (state["epoch"] + 1, state["step"], state["log"]) if state else (0, 0, [])

    model.eval()  # the model as it is evaluated: no dropout, no routing jitter or sampling, no auxiliary losses
    bar = tqdm(total=total, initial=step, desc=config.method if objective is None else objective.method,
               disable=not progress)
    lengths = np.zeros(len(samples), dtype=np.int64)
    lengths[base.owned] = base.rows.sample_len
    if dist.num_processes > 1 and config.group_by_length:
        from accelerate.utils import reduce

        lengths = reduce(torch.from_numpy(lengths).to(device), reduction="sum").cpu().numpy()
    local = np.full(len(samples), -1, dtype=np.int64)
    local[base.owned] = np.arange(len(base.owned))
    for epoch in range(first_epoch, config.epochs):
        if config.refresh_neighbour_routing and epoch > 0:
            success_routing = _current_routing(model, base, success, config, layers, dist)
        batches = epoch_batches(len(samples), config.batch_size, config.seed, epoch,
                                lengths if config.group_by_length else None)
        # This process's share of each batch: the samples it holds (all of them in one process).
        shards = [[int(local[i]) for i in batch if local[i] >= 0] for batch in batches]
        plan = base.rows.plan(shards)  # one copy to the device per epoch
        # Each step's (L_task, L_reg) stay on the device until the log is written: one sync per log_every steps.
        pending = []
        for n, batch in enumerate(batches):
            step_start = time.perf_counter()
            lam = 0.0 if config.regulariser == "none" else config.lam * schedule.lam(step)
            optimizer.zero_grad(set_to_none=True)
            # Each process's loss is scaled so that the processes' losses (and gradients, summed below) add up
            # to the one-process loss of the whole batch.
            l_task, l_reg = _step_losses(model, base, plan, n, config, layers, success_routing, neighbour_index,
                                         neighbour_weight, base_weights, len(batch), dist.num_processes,
                                         objective and objective.forward)
            loss = l_task + lam * l_reg
            if loss.requires_grad:  # (not when this process holds none of the batch and there is no weight penalty)
                loss.backward()  # Eq. 9 / Eq. 10: only the tuned routers require grad
            if dist.num_processes > 1:
                _sum_gradients(weights.model)
            lr = config.lr * schedule.lr(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            weights.gradients_to_master()
            optimizer.step()
            weights.master_to_model()
            entry = {"step": step, "epoch": epoch, "lambda": lam, "lr": lr}
            # how many router values the update made NaN or inf (checked with the losses, before anything is saved)
            broken = sum((~w.isfinite()).sum() for w in weights.master)
            pending.append((torch.stack([l_task.detach(), l_reg.detach(), broken.to(l_task.dtype)]), entry))
            step += 1
            bar.update(1)
            entry["seconds"] = time.perf_counter() - step_start  # host time (a GPU runs behind it until a sync)
            if len(pending) >= config.log_every or n == len(batches) - 1:
                sync_start = time.perf_counter()
                _write_log(pending, log, config, dist, bar)
                log[-1]["seconds"] += time.perf_counter() - sync_start  # the wait for the device lands here
                pending = []
        if dist.is_main_process:
            _save_resume(resume_dir, weights, optimizer,
                         {"epoch": epoch, "step": step, "log": log, "config": recorded})
        dist.wait_for_everyone()
    bar.close()
    model.eval()
    model.requires_grad_(False)

    summary = {"training_samples": len(samples), "success_set_size": int(len(success)),
               "base_train_accuracy": float(base.correct.mean()), "tuned_layers": layers,
               "routing_dims": int(base.routing.shape[1]), "steps": step, "schedule": schedule.describe(),
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


def _sum_gradients(parameters) -> None:
    """All-reduce (sum) the tuned routers' gradients across processes, as one flat buffer."""
    from accelerate.utils import reduce

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = reduce(torch.cat([g.flatten() for g in grads]), reduction="sum")
    for p, part in zip(parameters, flat.split([g.numel() for g in grads])):
        p.grad = part.view_as(p)


def _write_log(pending: list, log: list[dict], config: RomaConfig, dist, bar) -> None:
    """The losses of the steps since the last log, summed over processes, copied to the host at once; a
    non-finite loss or router update stops training (the last finished epoch stays in DIR.partial for resuming)."""
    terms = torch.stack([t for t, _ in pending])
    if dist.num_processes > 1:
        from accelerate.utils import reduce

        terms = reduce(terms, reduction="sum")
    for (l_task_value, l_reg_value, broken), (_, entry) in zip(terms.tolist(), pending):
        loss_value = l_task_value + entry["lambda"] * l_reg_value
        if not math.isfinite(loss_value):
            raise RomaEvalError(f"the loss became {loss_value} at step {entry['step']}; lower --lr (now {config.lr}) "
                                f"or --lam (now {config.lam}); the last finished epoch is kept for resuming")
        if broken:
            raise RomaEvalError(f"the router update of step {entry['step']} made {int(broken)} router values NaN or "
                                f"inf; lower --lr (now {config.lr}); nothing of this epoch was saved, the last "
                                "finished epoch is kept for resuming")
        log.append({"step": entry["step"], "epoch": entry["epoch"], "loss": loss_value, "task": l_task_value,
                    "regulariser": l_reg_value, "lambda": entry["lambda"], "lr": entry["lr"],
                    "seconds": entry["seconds"]})
    bar.set_postfix(task=f"{log[-1]['task']:.3f}", reg=f"{log[-1]['regulariser']:.4f}")


def _step_forward(model, base: BasePass, plan, n: int, config: RomaConfig, layers, forward: Callable | None = None):
    """The step's batch, its logits with the tuned routers live and the routing record: from the cached hidden
    states (only the tuned layers run) or, with ``no_layer_cache``, from the token ids through every layer;
    ``forward(batch)`` (a ``RouterObjective``'s) is a context around the forward."""
    batch = base.rows.batch(plan, n, input_ids=base.cache is None)
    with record_routing(model, token_positions(config.tokens, batch.last_context), layers) as record, \
            (forward(batch) if forward is not None else nullcontext()):
        if base.cache is None:
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        else:
            hidden = base.cache.gather(base.rows, plan, n)
            logits = run_from_layer(model, layers[0], hidden, batch.attention_mask).logits
    return batch, logits, record


def _step_losses(model, base: BasePass, plan, n: int, config: RomaConfig, layers, success_routing,
                 neighbour_index, neighbour_weight, base_weights, batch_size: int, n_processes: int,
                 forward: Callable | None = None):
    """(L_task, L_reg) contributions of this process's share (step ``n`` of ``plan``) of a batch of ``batch_size``."""
    s0, s1 = plan.steps[n][:2]
    device = neighbour_index.device
    if s0 == s1:  # nothing of this batch here: zero, except a weight penalty (its share counts in every process)
        zero = torch.zeros((), device=device)
        if config.regulariser in ("l1", "l2"):
            return zero, _regulariser(config, None, None, None, None, model, base_weights) / n_processes
        return zero, zero
    batch, logits, record = _step_forward(model, base, plan, n, config, layers, forward)
    l_task = task_loss(choice_scores(logits, batch), batch.golds, reduction="sum") / batch_size  # Eq. 8
    scores = batch.per_sample(record.scores)
    rows = plan.samples[s0:s1]
    reg = _regulariser(config, scores.flatten(1).float(), success_routing[neighbour_index[rows]],
                       neighbour_weight[rows], scores, model, base_weights)
    # per-sample terms average over the whole batch; a weight penalty counts once across processes
    return l_task, (reg.sum() / batch_size if reg.dim() == 1 else reg / n_processes)


@torch.no_grad()
def _current_routing(model, base: BasePass, success, config, layers, dist) -> torch.Tensor:
    """r_j of the success set under the current routers (each process its own samples, then summed)."""
    device = base.routing.device
    position = np.full(len(base.correct), -1, dtype=np.int64)
    position[success] = np.arange(len(success))
    mine = [int(i) for i, g in enumerate(base.owned) if position[g] >= 0]
    out = torch.zeros(len(success), base.routing.shape[1], device=device)
    plan = base.rows.plan([mine[s:s + config.batch_size] for s in range(0, len(mine), config.batch_size)])
    target = torch.from_numpy(position[base.owned]).to(device)
    for n in range(len(plan)):
        batch, _, record = _step_forward(model, base, plan, n, config, layers)
        s0, s1 = plan.steps[n][:2]
        out[target[plan.samples[s0:s1]]] = batch.per_sample(record.scores).flatten(1).float()
    if dist.num_processes > 1:
        from accelerate.utils import reduce

        out = reduce(out, reduction="sum")
    return out

"""The router-training recipe of every method that tunes routers (RoMA, Router Tuning, Oracle Tuning, Dense BP).

Only the routers of the tuned layers train.  Each step minimises

    L = L_task + λ·L_reg        (Eq. 9; L_task: CE over the choices' log-likelihood scores, gold choice, Eq. 8)

where the method's *objective* (``RouterObjective``) supplies L_reg and λ and may wrap the training forward:
Router Tuning is the objective with neither (``RouterObjective`` itself: L_reg = 0, λ = 0); RoMA's manifold term
(Eq. 7) and its ablations are ``methods/roma/train.py``; Oracle Tuning pulls each sample's routing towards its oracle
routing; Dense BP gives the routers a dense gradient in the forward.  The recipe has torchtune's shape: ``setup``
(the base pass, the objective's targets, optimiser and resume point), ``train`` (epochs of ``step``s, a resume point
after each), ``save`` (the router checkpoint); its state lives on the object.  The epochs' bookkeeping (schedule,
``OUT.partial``, non-finite checks, log, progress) is ``training.loop.TrainingLoop``, shared with the peft baselines.

Precision: the optimiser updates fp32 master copies of the tuned routers when the model is in bf16 or
fp16 and writes them back rounded after every step.  Updated in place in bf16, AdamW steps of the
released trainer's lr 7e-5 are mostly below bf16's resolution at the routers' scale: on the toy model 62% of the
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
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from roma_eval.devices import input_device, process_state, sum_across_processes
from roma_eval.methods.roma.config import RomaConfig
from roma_eval.methods.roma.data import LayerCache, TrainingRows
from roma_eval.registry import label
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
from roma_eval.training.loop import (
    RunOptions,
    TrainingLoop,
    epoch_batches,
    require_room_for_training,
    training_samples,
)
from roma_eval.training.sharding import is_sharded, lockstep

_OBJECTIVE = "objective."  # the prefix of the objective's tensors in the resume point


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
    idle = lockstep(len(plan), dist) - len(plan) if is_sharded(model) else 0  # before any forward's collectives
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
    for _ in range(idle):  # FSDP: every process gathers each layer as often as the others
        model(input_ids=torch.zeros((1, 1), dtype=torch.long, device=device))
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

    def state(self) -> dict[str, torch.Tensor]:
        """The master weights, as the resume point keeps them."""
        return {f"router.{i}": w for i, w in zip(self.layers, self.master)}

    @torch.no_grad()
    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        for i, master in zip(self.layers, self.master):
            master.copy_(tensors[f"router.{i}"])
        self.master_to_model()

    def non_finite(self) -> torch.Tensor:
        """How many router values the last update made NaN or inf (on the device: checked when the log is written)."""
        return sum((~w.isfinite()).sum() for w in self.master)


@dataclass
class Share:
    """This process's share of a training batch: its samples' routing scores (samples, tokens, layers, experts), with
    gradient to the tuned routers; their indices in this process's sample numbering; the size of the whole batch."""

    scores: torch.Tensor
    rows: torch.Tensor
    batch_size: int


class RouterObjective:
    """Router Tuning's objective, the task loss alone (L_reg = 0, λ = 0), and the base of every other router-training
    method's objective, which overrides what it changes:

    - ``method``: its name in the registry (``roma_eval/registry.py``), written into the checkpoint;
    - ``record()``: its settings, recorded in the checkpoint's training_config and checked on resume;
    - ``setup(recipe)``: after the base pass, e.g. the routing targets (``recipe.samples``, ``recipe.base``);
    - ``start_epoch(recipe, epoch)``: before each epoch's steps;
    - ``forward(batch)``: a context manager around each training forward (``batch`` None: an idle forward);
    - ``lockstep``: whether its forward context talks across processes, so that every process must run each training
      forward (a process that holds none of a batch runs an idle one);
    - ``lam`` and ``regulariser(recipe, share)``: λ and this process's share of L_reg (``share`` None: it holds none
      of the batch);
    - ``state()`` / ``load_state(tensors)``: what it learns while training (Dense BP's default outputs), kept in the
      resume point so that a resumed run is the uninterrupted one;
    - ``summary()``: extra entries of the checkpoint's summary."""

    method = "router_tuning"
    lam = 0.0
    lockstep = False

    def __init__(self, config):
        self.config = config

    def record(self) -> dict:
        return {**self.config.to_dict(), "method": self.method}

    def setup(self, recipe: RouterTraining) -> None:
        pass

    def start_epoch(self, recipe: RouterTraining, epoch: int) -> None:
        pass

    def forward(self, batch):
        return nullcontext()

    def regulariser(self, recipe: RouterTraining, share: Share | None) -> torch.Tensor:
        return torch.zeros((), device=recipe.device)

    def state(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        pass

    def summary(self) -> dict:
        return {}


@dataclass
class TrainResult:
    checkpoint: Path
    log: list[dict]
    summary: dict


class RouterTraining:
    """One router-training run: ``RouterTraining(config, objective, out_dir, options).run(model, tokenizer, samples)``
    post-trains the routers of ``model`` (in place) on ``samples`` and writes a router checkpoint to ``out_dir``.
    ``config`` (RomaConfig) holds the tuned layers and tokens, the data and the budget; ``objective`` what the
    routers learn."""

    def __init__(self, config: RomaConfig, objective: RouterObjective, out_dir, options: RunOptions):
        self.config, self.objective, self.out_dir, self.options = config, objective, Path(out_dir), options
        self.dist = process_state()  # one process, or one of `accelerate launch --num_processes N`

    def run(self, model, tokenizer, samples: Sequence[Sample]) -> TrainResult:
        self.setup(model, tokenizer, samples)
        self.train()
        return self.save()

    # ------------------------------------------------------------------ setup

    def setup(self, model, tokenizer, samples: Sequence[Sample]) -> None:
        """The base pass, the objective's targets, the optimiser over the tuned routers and the resume point."""
        from roma_eval.checkpoint import ensure_new_output

        config, dist = self.config, self.dist
        ensure_new_output(self.out_dir, self.options.overwrite)
        self.samples = training_samples(samples, config, label(self.objective.method))
        self.model, self.layers = model, resolve_layers(model, config.layers)
        self.device, self.sharded = input_device(model), is_sharded(model)
        self.fingerprint = router_fingerprint(model)
        self.base_weights = {i: w.detach().clone() for i, w in router_weights(model, self.layers).items()}
        require_room_for_training(self.out_dir, sum(w.numel() for w in self.base_weights.values()),
                                  "the router checkpoint and its training state")
        progress = self.options.progress and dist.is_main_process
        self.base = base_pass(model, tokenizer, self.samples, config, self.layers, config.batch_size, progress, dist)
        self.objective.setup(self)

        model.requires_grad_(False)
        self.weights = RouterWeights(model, self.layers)
        self.optimizer = torch.optim.AdamW(self.weights.master, lr=config.lr, weight_decay=config.weight_decay)
        self.loop = TrainingLoop(config, len(self.samples), self.out_dir, self.objective.record(), "router",
                                 self.objective.method, progress, dist)
        saved = self.loop.restore(self.optimizer)
        if saved is not None:
            self.weights.load_state(saved)
            self.objective.load_state({k[len(_OBJECTIVE):]: v for k, v in saved.items() if k.startswith(_OBJECTIVE)})
        self._index_samples()

    def _index_samples(self) -> None:
        """Each sample's length (for ``group_by_length``, known to every process) and its index in this process's
        numbering (-1: another process holds it)."""
        base, n = self.base, len(self.samples)
        lengths = np.zeros(n, dtype=np.int64)
        lengths[base.owned] = base.rows.sample_len
        if self.dist.num_processes > 1 and self.config.group_by_length:
            from accelerate.utils import reduce

            lengths = reduce(torch.from_numpy(lengths).to(self.device), reduction="sum").cpu().numpy()
        self.lengths = lengths
        self.local = np.full(n, -1, dtype=np.int64)
        self.local[base.owned] = np.arange(len(base.owned))

    # ------------------------------------------------------------------ train

    def train(self) -> None:
        self.model.eval()  # as it is evaluated: no dropout, no routing jitter or sampling, no auxiliary losses
        for epoch in self.loop.epochs():
            self.objective.start_epoch(self, epoch)
            config = self.config
            batches = epoch_batches(len(self.samples), config.batch_size, config.seed, epoch,
                                    self.lengths if config.group_by_length else None)
            # This process's share of each batch: the samples it holds (all of them in one process).
            self.plan = self.base.rows.plan([[int(self.local[i]) for i in b if self.local[i] >= 0] for b in batches])
            for n, batch in enumerate(batches):
                self.step(n, len(batch), last=n == len(batches) - 1)
            objective_state = {_OBJECTIVE + name: value for name, value in self.objective.state().items()}
            self.loop.end_epoch({**self.weights.state(), **objective_state}, self.optimizer)
        self.model.eval()
        self.model.requires_grad_(False)

    def step(self, n: int, batch_size: int, last: bool = False) -> None:
        """Step ``n`` of this epoch's plan (a batch of ``batch_size`` samples across processes): Eq. 9's loss, its
        gradient on the tuned routers only (Eq. 10), an AdamW step on their master weights."""
        loop, weights = self.loop, self.weights
        loop.begin_step()
        lam = self.objective.lam * loop.lam_factor()
        self.optimizer.zero_grad(set_to_none=True)
        l_task, l_reg = self.losses(n, batch_size)
        loss = l_task + lam * l_reg
        if loss.requires_grad:  # (not when this process holds none of the batch and there is no weight penalty)
            loss.backward()
        if self.dist.num_processes > 1:
            _sum_gradients(weights.model)
        loop.set_lr(self.optimizer)
        weights.gradients_to_master()
        self.optimizer.step()
        weights.master_to_model()
        loop.end_step(l_task, weights.non_finite(), l_reg, lam, flush=last)

    def losses(self, n: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(L_task, L_reg) contributions of this process's share of step ``n``.  Each process's loss is scaled so
        that the processes' losses (and gradients, summed) add up to the one-process loss of the whole batch."""
        s0, s1 = self.plan.steps[n][:2]
        if s0 == s1:  # nothing of this batch here (a weight penalty still counts its share)
            nothing = torch.zeros((), device=self.device)
            if self.sharded or self.objective.lockstep:  # the others' forward talks to this process
                with self.objective.forward(None):
                    nothing = self.idle_forward().float().sum() * 0
            return nothing, self.objective.regulariser(self, None)
        batch, logits, record = self.forward(n)
        l_task = task_loss(choice_scores(logits, batch), batch.golds, reduction="sum") / batch_size  # Eq. 8
        share = Share(batch.per_sample(record.scores), self.plan.samples[s0:s1], batch_size)
        return l_task, self.objective.regulariser(self, share)

    def forward(self, n: int, plan=None, objective: bool = True):
        """Step ``n`` of ``plan`` (this epoch's): its batch, its logits with the tuned routers live and the routing
        record, from the cached hidden states (only the tuned layers run) or, with ``no_layer_cache``, from the token
        ids through every layer; inside the objective's ``forward`` context unless ``objective`` is False."""
        base, plan = self.base, self.plan if plan is None else plan
        batch = base.rows.batch(plan, n, input_ids=base.cache is None)
        positions = token_positions(self.config.tokens, batch.last_context)
        with record_routing(self.model, positions, self.layers) as record, \
                (self.objective.forward(batch) if objective else nullcontext()):
            if base.cache is None:
                logits = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            else:
                hidden = base.cache.gather(base.rows, plan, n)
                logits = run_from_layer(self.model, self.layers[0], hidden, batch.attention_mask).logits
        return batch, logits, record

    def idle_forward(self) -> torch.Tensor:
        """The logits of a stand-in input (one token of zeros) through the units ``forward`` runs: a process that
        holds none of a batch still takes part in gathering each layer of a sharded model (``training.sharding``)
        and in its objective's exchanges (``RouterObjective.lockstep``)."""
        if self.base.cache is None:
            return self.model(input_ids=torch.zeros((1, 1), dtype=torch.long, device=self.device)).logits
        hidden = torch.zeros((1, 1, self.model.config.hidden_size), dtype=self.base.cache.hidden.dtype,
                             device=self.device)
        return run_from_layer(self.model, self.layers[0], hidden, torch.ones((1, 1), dtype=torch.long,
                                                                              device=self.device)).logits

    @torch.no_grad()
    def current_routing(self, samples: np.ndarray) -> torch.Tensor:
        """r_j of ``samples`` (global indices) under the current routers (each process its own samples, then
        summed)."""
        base, size = self.base, self.config.batch_size
        position = np.full(len(base.correct), -1, dtype=np.int64)
        position[samples] = np.arange(len(samples))
        mine = [int(i) for i, g in enumerate(base.owned) if position[g] >= 0]
        out = torch.zeros(len(samples), base.routing.shape[1], device=base.routing.device)
        plan = base.rows.plan([mine[s:s + size] for s in range(0, len(mine), size)])
        idle = lockstep(len(plan), self.dist) - len(plan) if self.sharded else 0  # before any forward's collectives
        target = torch.from_numpy(position[base.owned]).to(base.routing.device)
        for n in range(len(plan)):
            batch, _, record = self.forward(n, plan, objective=False)
            s0, s1 = plan.steps[n][:2]
            out[target[plan.samples[s0:s1]]] = batch.per_sample(record.scores).flatten(1).float()
        for _ in range(idle):
            self.idle_forward()
        if self.dist.num_processes > 1:
            from accelerate.utils import reduce

            out = reduce(out, reduction="sum")
        return out

    # ------------------------------------------------------------------ save

    def save(self) -> TrainResult:
        """The router checkpoint (tuned routers, base model, method, training config and summary) and its log."""
        from roma_eval import __version__
        from roma_eval.checkpoint import RouterRecord, save_router_checkpoint

        base, loop = self.base, self.loop
        summary = {"training_samples": len(self.samples), "success_set_size": int(base.correct.sum()),
                   "base_train_accuracy": float(base.correct.mean()), "tuned_layers": self.layers,
                   "routing_dims": int(base.routing.shape[1]), "steps": loop.step,
                   "schedule": loop.schedule.describe(), **self.objective.summary(),
                   **({"sharded_across": self.dist.num_processes} if self.sharded else {})}
        training_config = {**self.objective.record(), "summary": summary, "roma_eval_version": __version__,
                           "torch_version": torch.__version__}
        record = RouterRecord(self.options.base_model, self.fingerprint, self.options.revision, self.objective.method,
                              training_config)
        if self.dist.is_main_process:  # every process holds the same routers: one writes them
            log_text = "".join(json.dumps(entry) + "\n" for entry in loop.log)
            save_router_checkpoint(self.model, self.out_dir, self.layers, record, overwrite=self.options.overwrite,
                                   extra_files={"training_log.jsonl": log_text})
            loop.resume.discard()
        self.dist.wait_for_everyone()
        return TrainResult(self.out_dir, loop.log, summary)


def _sum_gradients(parameters) -> None:
    """All-reduce (sum) the tuned routers' gradients across processes, as one flat buffer."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    for p, summed in zip(parameters, sum_across_processes(grads)):
        p.grad = summed

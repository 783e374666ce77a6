"""What every training loop of the project shares: the samples it trains on, the order of each epoch, the LR of each
step, the resume point ``DIR.partial``, the non-finite checks, the training log and the progress bar.

The router-training recipe (``methods/roma/recipe.py``: RoMA, Router Tuning, Oracle Tuning, Dense BP) and the peft
baselines (``methods/peft_tuning/train.py``) run their epochs through ``TrainingLoop``; the toy's pretraining
(``toy/pretrain.py``) has its own schedule and step-wise saves and takes ``ResumePoint``, ``set_lr`` and
``progress_bar`` from here.

A step never waits for the host between two log writes: ``TrainingLoop.end_step`` keeps the step's losses and the
count of non-finite values its update made on the device and copies them to the host every ``log_every`` steps (and
at the end of each epoch), where a non-finite loss or update stops the run before anything of its epoch is saved.
"""

from __future__ import annotations

import math
import random
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

from roma_eval.errors import RomaEvalError
from roma_eval.samples import Sample
from roma_eval.storage import load_training_state, read_progress, require_free_space, save_training_state
from roma_eval.training.schedule import StepSchedule

# What a loop without accelerate's coordination is: one process, the main one.
ONE_PROCESS = SimpleNamespace(num_processes=1, is_main_process=True, wait_for_everyone=lambda: None)
MEGABATCH = 50  # group_by_length: batches sorted together (transformers' LengthGroupedSampler uses 50 too)


@dataclass(frozen=True)
class RunOptions:
    """How a training run writes its artefact: the base model it records (name or path, revision), whether an
    existing output may be replaced, whether progress is shown."""

    base_model: str
    revision: str | None = None
    overwrite: bool = False
    progress: bool = True


def training_samples(samples: Sequence[Sample], config, method: str) -> list[Sample]:
    """The samples a run trains on: multiple-choice ones only (the task loss needs choices and a gold label), then
    ``config.train_fraction`` of them drawn with ``config.seed``, in task and document order."""
    if any(s.output_type != "multiple_choice" for s in samples):
        raise RomaEvalError(f"{method} trains on multiple-choice tasks with gold labels (the task loss, Eq. 8); drop "
                            "the generation tasks from --tasks")
    samples = list(samples)
    if config.train_fraction < 1:
        rng = random.Random(config.seed)
        samples = sorted(rng.sample(samples, max(1, round(config.train_fraction * len(samples)))),
                         key=lambda s: (s.task, s.doc_id))
    return samples


def require_room_for_training(out_dir: Path, trained_values: int, what: str) -> None:
    """Refuse a run whose output cannot fit: at most the previous epoch's state and the next one's staging (fp32
    weights and AdamW's two moments each, 4 bytes a value), the artefact and its log."""
    require_free_space(Path(out_dir).parent, 32 * trained_values + 2**20, what)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, lengths=None) -> list[list[int]]:
    """The batches of an epoch: a shuffle of 0..n-1 (``random.Random(seed + epoch)``, the order RoMA always used)
    cut into batches; with ``lengths`` (``group_by_length``), each run of ``MEGABATCH`` batches of that shuffle is
    sorted by length (longest first) before it is cut, and the batches' order is shuffled again, so a batch
    holds samples of similar length (less padding) drawn from a random slice of the data."""
    order = list(range(n))
    random.Random(seed + epoch).shuffle(order)
    if lengths is None:
        return [order[s:s + batch_size] for s in range(0, n, batch_size)]
    batches = []
    mega = batch_size * MEGABATCH
    for s in range(0, n, mega):
        chunk = sorted(order[s:s + mega], key=lambda i: -int(lengths[i]))
        batches += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
    random.Random(f"{seed}:{epoch}:batches").shuffle(batches)
    return batches


def set_lr(optimizer, lr: float) -> None:
    """Every parameter group at ``lr`` (the loops set the LR of each step themselves: it is a function of the step,
    so a resumed run continues it)."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def progress_bar(desc: str, total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", disable=not enabled)


@dataclass
class ResumePoint:
    """``directory`` holds what an interrupted run saved (weights, optimiser state, progress: ``storage``, no pickle);
    the same command run again continues from it.  ``identity`` (the run's recorded configuration) must match: a save
    of another run is refused in one line, or ignored with ``refuse_others=False`` (the toy's pretraining, which then
    starts over)."""

    directory: Path | None
    identity: object
    refuse_others: bool = True

    def load(self, optimizer) -> tuple[dict[str, torch.Tensor], dict] | None:
        """(weights, progress) of the save, with ``optimizer`` restored; None when there is none to continue."""
        progress = None if self.directory is None else read_progress(self.directory)
        if progress is None:
            return None
        if progress.get("config") != self.identity:
            if not self.refuse_others:
                return None
            raise RomaEvalError(f"{self.directory} holds an interrupted run with a different configuration; rerun "
                                "with the same flags to resume, or delete that directory to start over")
        return load_training_state(self.directory, optimizer)

    def save(self, weights: dict[str, torch.Tensor], optimizer, progress: dict) -> None:
        save_training_state(self.directory, weights, optimizer, {**progress, "config": self.identity})

    def discard(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class TrainingLoop:
    """``config.epochs`` epochs of ``ceil(n_samples / config.batch_size)`` steps, with their bookkeeping: the step
    counter, the LR of each step (``config``'s schedule times ``config.lr``), the training log and the progress bar, a
    resume point ``OUT.partial`` saved after each finished epoch, and the non-finite checks.

    ``config`` holds the budget fields (``training/budget.py``) and optionally ``log_every`` (steps between copies of
    the losses to the host; default 1) and ``lam``.  ``what`` names the trained values in errors ("router",
    "adapter"); ``dist`` is accelerate's process state when several processes share the run (each holds part of
    every batch: the logged losses are summed across them and the main process saves)."""

    def __init__(self, config, n_samples: int, out_dir, identity: dict, what: str, desc: str, progress: bool = True,
                 dist=None):
        self.config, self.what, self.desc = config, what, desc
        self.dist = dist or ONE_PROCESS
        self.total = config.epochs * math.ceil(n_samples / config.batch_size)
        self.schedule = StepSchedule.of(config, self.total)
        self.resume = ResumePoint(Path(out_dir).with_name(Path(out_dir).name + ".partial"), identity)
        self.progress = progress and self.dist.is_main_process
        self.every = getattr(config, "log_every", 1)
        self.first_epoch, self.step, self.epoch, self.log = 0, 0, None, []
        self._pending, self._entry, self._started, self._bar = [], {}, 0.0, None

    def restore(self, optimizer) -> dict[str, torch.Tensor] | None:
        """The weights of the resume point (``optimizer`` restored, the loop set to continue after its epoch), or
        None for a fresh run."""
        saved = self.resume.load(optimizer)
        if saved is None:
            return None
        weights, progress = saved
        self.first_epoch, self.step, self.log = progress["epoch"] + 1, progress["step"], progress["log"]
        return weights

    def epochs(self) -> Iterator[int]:
        """The epochs still to run (all of them, or those after the resume point), with the progress bar."""
        self._bar = progress_bar(self.desc, self.total, self.step, self.progress)
        for epoch in range(self.first_epoch, self.config.epochs):
            self.epoch = epoch
            yield epoch
        self._bar.close()

    def begin_step(self) -> None:
        self._started = time.perf_counter()
        self._entry = {"step": self.step, "epoch": self.epoch}

    def lam_factor(self) -> float:
        """The λ warm-up factor of this step (multiply by λ)."""
        return self.schedule.lam(self.step)

    def set_lr(self, optimizer) -> float:
        """Set (and return) this step's learning rate."""
        lr = self.config.lr * self.schedule.lr(self.step)
        set_lr(optimizer, lr)
        self._entry["lr"] = lr
        return lr

    def end_step(self, task: torch.Tensor, broken: torch.Tensor, regulariser: torch.Tensor | None = None,
                 lam: float | None = None, flush: bool = False) -> None:
        """This step's task loss, the count of trained values its update made NaN or inf, and (RoMA's Eq. 9) the
        regulariser and its weight λ: kept on the device until the next log write (``flush``: now)."""
        terms = [task.detach()] + ([] if regulariser is None else [regulariser.detach()]) + [broken.to(task.dtype)]
        self._entry["lambda"] = lam
        self._pending.append((torch.stack(terms), self._entry))
        self.step += 1
        self._bar.update(1)
        self._entry["seconds"] = time.perf_counter() - self._started  # host time (a GPU runs behind it until a sync)
        if len(self._pending) >= self.every or flush:
            sync_start = time.perf_counter()
            self._write_log()
            self.log[-1]["seconds"] += time.perf_counter() - sync_start  # the wait for the device lands here

    def _write_log(self) -> None:
        """The losses of the steps since the last write, summed over processes, copied to the host at once; a
        non-finite loss or update stops training (the last finished epoch stays in OUT.partial for resuming)."""
        terms = torch.stack([t for t, _ in self._pending])
        if self.dist.num_processes > 1:
            from accelerate.utils import reduce

            terms = reduce(terms, reduction="sum")
        for values, entry in zip(terms.tolist(), (e for _, e in self._pending)):
            self.log.append(self._checked_entry(values, entry))
        self._pending = []
        last = self.log[-1]
        self._bar.set_postfix({name: f"{last[name]:.4f}" for name in ("task", "regulariser") if name in last})

    def _checked_entry(self, values: list[float], entry: dict) -> dict:
        task, *regulariser, broken = values
        lam = entry["lambda"]
        loss = task + lam * regulariser[0] if regulariser else task
        if not math.isfinite(loss):
            lam_hint = f" or --lam (now {self.config.lam})" if lam else ""
            raise RomaEvalError(f"the loss became {loss} at step {entry['step']}; lower --lr (now {self.config.lr})"
                                f"{lam_hint}; the last finished epoch is kept for resuming")
        if broken:
            raise RomaEvalError(f"the {self.what} update of step {entry['step']} made {int(broken)} {self.what} values "
                                f"NaN or inf; lower --lr (now {self.config.lr}); nothing of this epoch was saved, the "
                                "last finished epoch is kept for resuming")
        named = {"task": task} if not regulariser else {"task": task, "regulariser": regulariser[0], "lambda": lam}
        return {"step": entry["step"], "epoch": entry["epoch"], "loss": loss, **named, "lr": entry["lr"],
                "seconds": entry["seconds"]}

    def end_epoch(self, weights: dict[str, torch.Tensor], optimizer) -> None:
        """The resume point after a finished epoch: ``weights`` (the trained values), the optimiser and the log."""
        if self.dist.is_main_process:
            self.resume.save(weights, optimizer, {"epoch": self.epoch, "step": self.step, "log": self.log})
        self.dist.wait_for_everyone()

"""Pretraining of the toy MoE on the toy world's text: plain next-token prediction plus the
architecture's own load-balancing loss, deterministic for a seed."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager

from roma_eval.toy.config import ToyConfig
from roma_eval.toy.corpus import documents

IGNORE = -100  # label of padding: no loss there
TOKENIZER_SAMPLE = 20_000  # documents the tokenizer is trained on


def build_tokenizer(config: ToyConfig):
    """A byte-level BPE tokenizer trained in-process on a sample of the pretraining text."""
    import itertools

    from roma_eval.tiny import train_tokenizer

    sample = list(itertools.islice(documents(config.train.seed), TOKENIZER_SAMPLE))
    return train_tokenizer(sample, vocab_size=config.model.vocab_size)


def build_untrained_model(config: ToyConfig, tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    from roma_eval.tiny import tiny_config

    hf_config = tiny_config(config.model.arch, vocab_size=len(tokenizer), **config.model.overrides())
    torch.manual_seed(config.train.seed)
    return AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32)


def packed_batches(config: ToyConfig, tokenizer) -> Iterator[tuple]:
    """(input_ids, attention_mask, labels) batches of whole documents packed into rows, each ended by EOS.

    A row holds as many whole documents as fit and is padded after them, so the first document of
    every row starts at position 0 with no context, as an lm-eval prompt does.
    """
    import torch

    train = config.train
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    stream = (tokenizer(doc, add_special_tokens=False)["input_ids"][: train.seq_len - 1] + [eos]
              for doc in documents(train.seed))
    pending = next(stream)
    while True:
        rows = []
        for _ in range(train.batch_size):
            row = []
            while len(row) + len(pending) <= train.seq_len:
                row += pending
                pending = next(stream)
            rows.append(row)
        ids = torch.full((len(rows), train.seq_len), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        yield ids, mask, ids.masked_fill(mask == 0, IGNORE)


def learning_rate(config: ToyConfig, step: int) -> float:
    """Warm-up, then constant, then a cosine decay to lr/10 over the last ``decay_steps`` (warm-up-stable-decay:
    runs of different lengths share every step before their decay, so longer candidates continue shorter ones)."""
    train = config.train
    if step < train.warmup_steps:
        return train.lr * (step + 1) / train.warmup_steps
    decay_start = max(train.warmup_steps, train.steps - train.decay_steps)
    if step < decay_start:
        return train.lr
    progress = (step - decay_start) / max(1, train.steps - decay_start)
    return train.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


PREFIX_STEPS = 20  # the weights after this many steps go into the record: a short rebuild checks them
# How far a rebuild's prefix may stray from the record (``summary_deviation``).  torch promises bit-identical
# results only on the same machine and settings: kernels differ by instruction set and by CPU.  Measured on the
# default preset's 20-step prefix, AVX512 vs AVX2 vs no vector extensions on one Xeon: at most 3.3e-8; one step
# more or less: 6.5e-3.
PREFIX_RTOL = 1e-5
PREFIX_KEYS = ("prefix_sha256", "prefix_machine", "prefix_summary")


def weights_digest(model) -> str:
    """sha256 of the weights (names, dtypes, shapes and bytes, in name order)."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def weights_summary(model) -> dict[str, list[float]]:
    """Per tensor, its float64 sum, L2 norm and size: what a rebuild on another CPU is compared with."""
    return {name: [float(t.detach().double().sum()), float(t.detach().double().norm()), t.numel()]
            for name, t in sorted(model.state_dict().items())}


def summary_deviation(summary: dict, reference: dict) -> float:
    """The largest difference between two ``weights_summary``s: |Δ norm| / norm and |Δ sum| / (norm · √size),
    the scale of each (|sum| ≤ √size · norm); inf when the tensors differ in name or size."""
    if summary.keys() != reference.keys() or any(summary[n][2] != reference[n][2] for n in reference):
        return float("inf")
    deviation = 0.0
    for name, (total, norm, size) in reference.items():
        scale = max(norm, 1e-12)
        deviation = max(deviation, abs(summary[name][1] - norm) / scale,
                        abs(summary[name][0] - total) / (scale * size**0.5))
    return deviation


def prefix_agrees(log: dict, reference: dict) -> tuple[bool, str]:
    """Whether a run's first ``PREFIX_STEPS`` steps are a recorded run's, and how that was judged: bit for bit
    when both ran on the same machine (torch's promise), else within ``PREFIX_RTOL`` (``summary_deviation``)."""
    if log.get("prefix_machine") and log.get("prefix_machine") == reference.get("prefix_machine"):
        same = log["prefix_sha256"] == reference["prefix_sha256"]
        return same, f"same machine: the weights after {PREFIX_STEPS} steps are {'' if same else 'not '}bit-identical"
    deviation = summary_deviation(log["prefix_summary"], reference["prefix_summary"])
    return deviation <= PREFIX_RTOL, (f"another machine or an unrecorded one: the weights after {PREFIX_STEPS} steps "
                                      f"deviate by {deviation:.1e} (tolerance {PREFIX_RTOL:.0e})")


def machine_fingerprint() -> dict:
    """What decides whether two runs of the same recipe may be compared bit for bit: torch's version, the
    instruction set its CPU kernels use and the processor model."""
    import platform

    import torch

    model = platform.processor()
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu": model}


@contextmanager
def deterministic_cpu(threads: int):
    """Fixed thread count and deterministic kernels for the duration; the caller's settings come back after."""
    import torch

    previous = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(previous[0])
        torch.use_deterministic_algorithms(previous[1])


SAVE_EVERY = 50  # steps between resume points (a save costs ~0.1 s; a step ~0.5 s)


def pretrain(config: ToyConfig, progress: bool = True, resume_dir=None, stop_after: int | None = None,
             on_step=None):
    """A pretrained toy model (eval mode), its tokenizer and a training log.

    With ``resume_dir``, the state is saved there every ``SAVE_EVERY`` steps and an interrupted run
    continues from its last save; the result is bit-identical to an uninterrupted run (the data
    stream is replayed to the saved step, and nothing else is random).  ``stop_after=N`` stops after
    the first N steps of the recipe (its schedule unchanged): the prefix a short rebuild checks.
    ``on_step(done, model, optimizer, progress)`` is called after every step (``done`` steps finished).
    The log holds the weights after ``PREFIX_STEPS`` steps as ``prefix_sha256`` (their digest, comparable on the
    machine ``prefix_machine`` only) and ``prefix_summary`` (``weights_summary``, comparable on any machine).
    """
    import torch

    from roma_eval.training.loop import ResumePoint, progress_bar, set_lr

    train = config.train
    # A save of another config is ignored (the run starts over); the saves are every SAVE_EVERY steps, not epochs.
    resume = ResumePoint(resume_dir, config.key(), refuse_others=False)
    with deterministic_cpu(train.threads):
        tokenizer = build_tokenizer(config)
        model = build_untrained_model(config, tokenizer)
        model.train()
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
        no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": train.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}],
                                      lr=train.lr, betas=(0.9, 0.95))
        batches = packed_batches(config, tokenizer)
        first, losses, seconds, prefix = 0, [], 0.0, {}
        saved = resume.load(optimizer)
        if saved is not None:
            weights, saved = saved
            model.load_state_dict(weights)
            first, losses, seconds = saved["step"], saved["losses"], saved["seconds"]
            prefix = {key: saved[key] for key in PREFIX_KEYS if key in saved}
            for _ in range(first):  # replay the data stream to where the save was made
                next(batches)
        start = time.time() - seconds
        last = train.steps if stop_after is None else min(stop_after, train.steps)
        bar = progress_bar("pretraining the toy MoE", train.steps, first, progress)
        for step in range(first, last):
            ids, mask, labels = next(batches)
            set_lr(optimizer, learning_rate(config, step))
            out = model(input_ids=ids, attention_mask=mask, labels=labels, output_router_logits=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(out.loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
            if step + 1 == PREFIX_STEPS:
                prefix = {"prefix_sha256": weights_digest(model), "prefix_machine": machine_fingerprint(),
                          "prefix_summary": weights_summary(model)}
            state = {"step": step + 1, "losses": losses, "seconds": time.time() - start, **prefix}
            if resume_dir is not None and (step + 1) % SAVE_EVERY == 0 and step + 1 < train.steps:
                resume.save(model.state_dict(), optimizer, state)
            if on_step is not None:
                on_step(step + 1, model, optimizer, {**state, "config": config.key()})
        bar.close()
    log = {"seconds": round(time.time() - start, 1), "final_loss": round(sum(losses[-20:]) / len(losses[-20:]), 4),
           "loss_every_20_steps": [round(x, 4) for x in losses[::20]],
           "tokens_seen": len(losses) * train.batch_size * train.seq_len, "prefix_steps": PREFIX_STEPS,
           **{key: prefix.get(key) for key in PREFIX_KEYS}}
    return model.eval(), tokenizer, log

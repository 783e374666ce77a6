"""Prefix Tuning and Prompt Tuning on the router-training mixture, with RoMA's task loss (Eq. 8: cross-entropy of the
gold choice over the choices' summed log-likelihoods, ``scoring.task_loss``), data and budget.

peft wraps the frozen model (``get_peft_model``); only the adapter trains (AdamW; RoMA's epochs, batch, shuffling and
LR schedule, ``training/schedule.py``: by default the released RoMA trainer's linear warm-up over 2,000 steps, at most
half the run, then constant).  The whole model runs every step: a prefix or a prompt changes every layer's input, so
RoMA's frozen-layer cache does not apply.

Prompt tuning prepends its virtual tokens to the input embeddings, so peft's output has ``num_virtual_tokens`` more
positions than the input; ``choice_logits`` drops them, so the choices are scored at exactly the positions lm-eval
scores (the same shift ``PeftLM`` makes at evaluation).  Prefix tuning feeds its virtual tokens as a key/value
cache: the output has the input's positions.

Output: a peft adapter directory (``adapter_config.json`` + ``adapter_model.safetensors``, loadable by
``PeftModel.from_pretrained`` and by lm-eval's ``peft=``), plus ``training_config.json`` (method, the full config,
summary with trainable parameters, base model, versions) and ``training_log.jsonl`` (per step: loss, lr, seconds).
Interrupted runs resume from ``DIR.partial/`` (adapter weights and optimiser after each finished epoch); the loop's
bookkeeping is ``training.loop.TrainingLoop``, the router recipe's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from roma_eval import __version__
from roma_eval.devices import input_device
from roma_eval.methods.peft_tuning.config import PeftTuningConfig
from roma_eval.registry import label
from roma_eval.samples import Sample
from roma_eval.scoring import build_choice_batch, choice_scores, predictions, task_loss
from roma_eval.storage import staged_directory
from roma_eval.training.loop import (
    RunOptions,
    TrainingLoop,
    epoch_batches,
    require_room_for_training,
    training_samples,
)

TRAINING_CONFIG = "training_config.json"
TRAINING_LOG = "training_log.jsonl"
# peft adapters that prepend virtual tokens to the input (the output then has them too)
_PREPENDING = ("PROMPT_TUNING", "P_TUNING", "MULTITASK_PROMPT_TUNING")


def virtual_tokens(model) -> int:
    """How many positions a peft model's active adapter prepends to its output (0 for prefix tuning, LoRA, or no
    adapter)."""
    config = getattr(model, "active_peft_config", None)
    if config is None or str(getattr(config.peft_type, "value", config.peft_type)) not in _PREPENDING:
        return 0
    return int(config.num_virtual_tokens)


def choice_logits(model, batch) -> torch.Tensor:
    """The model's logits at the positions of ``batch.input_ids`` (a prompt-tuned model's virtual tokens dropped)."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    return logits[:, virtual_tokens(model):]


def peft_config(config: PeftTuningConfig, base_model: str, tokenizer):
    import peft

    if config.method == "prefix_tuning":
        return peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=config.num_virtual_tokens,
                                       prefix_projection=config.prefix_projection,
                                       base_model_name_or_path=base_model)
    init = peft.PromptTuningInit.TEXT if config.prompt_tuning_init == "text" else peft.PromptTuningInit.RANDOM
    extra = {}
    if config.prompt_tuning_init == "text":
        extra = {"prompt_tuning_init_text": config.prompt_tuning_init_text,
                 "tokenizer_name_or_path": getattr(tokenizer, "name_or_path", None)}
    return peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=config.num_virtual_tokens,
                                   prompt_tuning_init=init, base_model_name_or_path=base_model, **extra)


@dataclass
class PeftResult:
    adapter: Path
    log: list[dict]
    summary: dict
    model: object  # the peft model (the base model wrapped, adapter trained)


@torch.no_grad()
def _accuracy(model, tokenizer, samples, config) -> np.ndarray:
    device = input_device(model)
    right = []
    for start in range(0, len(samples), config.batch_size):
        batch = build_choice_batch(tokenizer, samples[start:start + config.batch_size], config.max_length).to(device)
        acc, _ = predictions(choice_scores(choice_logits(model, batch), batch), batch)
        right.append(batch.right(acc).cpu().numpy())
    return np.concatenate(right)


def train_peft_tuning(model, tokenizer, samples: Sequence[Sample], out_dir, config: PeftTuningConfig | None = None,
                      **options) -> PeftResult:
    """Wrap ``model`` with a new prefix / prompt adapter, train the adapter on ``samples``, write it to ``out_dir``.
    ``options`` are ``RunOptions``' (``base_model`` required, ``revision``, ``overwrite``, ``progress``)."""
    import peft

    from roma_eval.checkpoint import ensure_new_output
    from roma_eval.routing import router_fingerprint

    started = time.perf_counter()
    config, options, out_dir = config or PeftTuningConfig(), RunOptions(**options), Path(out_dir)
    ensure_new_output(out_dir, options.overwrite)
    samples = training_samples(samples, config, label(config.method))
    fingerprint = router_fingerprint(model)
    model.requires_grad_(False)
    torch.manual_seed(config.seed)  # the adapter's random initialisation
    wrapped = peft.get_peft_model(model, peft_config(config, options.base_model, tokenizer))
    wrapped.eval()  # no dropout: training forwards equal evaluation forwards
    named = {n: p for n, p in wrapped.named_parameters() if p.requires_grad}
    trained_values = sum(p.numel() for p in named.values())
    require_room_for_training(out_dir, trained_values, "the peft adapter and its training state")
    base_accuracy = float(_accuracy(wrapped, tokenizer, samples, config).mean()) if samples else 0.0

    optimizer = torch.optim.AdamW(list(named.values()), lr=config.lr, weight_decay=config.weight_decay)
    recorded = {**config.to_dict(), "method": config.method}
    loop = TrainingLoop(config, len(samples), out_dir, recorded, "adapter", config.method, options.progress)
    saved = loop.restore(optimizer)
    if saved is not None:
        with torch.no_grad():
            for name, param in named.items():
                param.copy_(saved[name])
    _train_epochs(wrapped, tokenizer, samples, loop, optimizer)

    summary = {"training_samples": len(samples), "steps": loop.step, "schedule": loop.schedule.describe(),
               "trainable_parameters": trained_values,
               "base_train_accuracy_with_initial_adapter": base_accuracy,
               "train_accuracy": float(_accuracy(wrapped, tokenizer, samples, config).mean()) if samples else 0.0,
               "training_seconds": sum(entry["seconds"] for entry in loop.log),
               "wall_seconds": time.perf_counter() - started}
    metadata = {**recorded, "base_model": str(options.base_model), "revision": options.revision,
                "base_router_fingerprint": fingerprint, "summary": summary, "roma_eval_version": __version__,
                "peft_version": peft.__version__, "torch_version": torch.__version__}
    needed = sum(p.numel() * p.element_size() for p in named.values()) + 2**20  # the adapter, its config and log
    with staged_directory(out_dir, needed) as staging:
        wrapped.save_pretrained(staging)
        (staging / TRAINING_CONFIG).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        (staging / TRAINING_LOG).write_text("".join(json.dumps(entry) + "\n" for entry in loop.log))
    loop.resume.discard()
    return PeftResult(out_dir, loop.log, summary, wrapped)


def _train_epochs(wrapped, tokenizer, samples: list[Sample], loop: TrainingLoop, optimizer) -> None:
    """The adapter's steps: RoMA's task loss (Eq. 8) on each batch, every forward through the whole model."""
    config = loop.config
    trainable = [p for p in wrapped.parameters() if p.requires_grad]
    named = {n: p for n, p in wrapped.named_parameters() if p.requires_grad}
    device = trainable[0].device
    for epoch in loop.epochs():
        for batch_ids in epoch_batches(len(samples), config.batch_size, config.seed, epoch):
            loop.begin_step()
            batch = build_choice_batch(tokenizer, [samples[i] for i in batch_ids], config.max_length).to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = task_loss(choice_scores(choice_logits(wrapped, batch), batch), batch.golds)  # Eq. 8
            loss.backward()
            loop.set_lr(optimizer)
            optimizer.step()
            loop.end_step(loss, sum((~p.isfinite()).sum() for p in trainable), flush=True)
        loop.end_epoch(named, optimizer)

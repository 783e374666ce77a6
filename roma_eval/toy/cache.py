"""The on-disk cache of pretrained toy models.

Location: ``$ROMA_EVAL_CACHE/toy/<arch>-<key>/`` where ``<key>`` hashes the full ``ToyConfig``;
``ROMA_EVAL_CACHE`` defaults to ``~/.cache/roma-eval``.  A model directory is an ordinary
``save_pretrained`` directory (lm-eval's ``--model hf`` loads it by path) plus ``toy_config.json``.
It appears in one rename, so an interrupted pretraining leaves no half model behind; its training
state is saved beside it (``.<name>.partial/``) every 50 steps, so the next run resumes from there.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from roma_eval.storage import staged_directory
from roma_eval.toy.config import ToyConfig

CACHE_ENV = "ROMA_EVAL_CACHE"
RECORD = "toy_config.json"  # written last, so its presence means the directory is complete


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "roma-eval").expanduser()


def model_dir(config: ToyConfig) -> Path:
    return cache_root() / "toy" / f"{config.model.arch}-{config.key()}"


def is_built(config: ToyConfig) -> bool:
    return (model_dir(config) / RECORD).is_file()


def ensure_model(config: ToyConfig, rebuild: bool = False, progress: bool = True) -> Path:
    """The directory of the pretrained toy model for ``config``, pretraining it first if it is not cached."""
    target = model_dir(config)
    if is_built(config) and not rebuild:
        return target
    import torch
    import transformers

    from roma_eval.toy.pretrain import pretrain

    # Saves every SAVE_EVERY steps here, so an interrupted pretraining resumes instead of restarting.
    partial = target.parent / f".{target.name}.partial"
    model, tokenizer, log = pretrain(config, progress=progress, resume_dir=partial)
    with staged_directory(target) as staging:  # replaces --rebuild's old model, or another process's same one
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        record = {"config": config.to_dict(), "key": config.key(), "training": log,
                  "versions": {"torch": torch.__version__, "transformers": transformers.__version__}}
        (staging / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    shutil.rmtree(partial, ignore_errors=True)
    return target


def read_record(directory: Path) -> dict:
    return json.loads((Path(directory) / RECORD).read_text())

"""Where pretrained toy models live: shipped in the package, or built into the on-disk cache.

Shipped: ``roma_eval/toy/weights/<arch>-<key>/`` holds the default preset's model (safetensors, its
tokenizer and ``toy_config.json``, the recipe and training log that made it), so `roma-eval demo` does
no pretraining.  Cache: ``$ROMA_EVAL_CACHE/toy/<arch>-<key>/`` for every other config (``--preset fast``,
other seeds) and for ``--rebuild``; ``ROMA_EVAL_CACHE`` defaults to ``~/.cache/roma-eval``.  ``<key>``
hashes the full ``ToyConfig``.  A model directory is an ordinary ``save_pretrained`` directory
(lm-eval's ``--model hf`` loads it by path) plus ``toy_config.json``.  A cached one appears in one
rename, so an interrupted pretraining leaves no half model behind; its training state is saved
beside it (``.<name>.partial/``) every 50 steps, so the next run resumes from there.
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
SHIPPED = Path(__file__).resolve().parent / "weights"


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "roma-eval").expanduser()


def _name(config: ToyConfig) -> str:
    return f"{config.model.arch}-{config.key()}"


def shipped_dir(config: ToyConfig) -> Path | None:
    """The packaged model of ``config``, if the package ships one."""
    directory = SHIPPED / _name(config)
    return directory if (directory / RECORD).is_file() else None


def cached_dir(config: ToyConfig) -> Path:
    return cache_root() / "toy" / _name(config)


def model_dir(config: ToyConfig) -> Path:
    """Where ``config``'s model is read from: the shipped copy if there is one, else the cache."""
    return shipped_dir(config) or cached_dir(config)


def is_built(config: ToyConfig) -> bool:
    return (model_dir(config) / RECORD).is_file()


def ensure_model(config: ToyConfig, rebuild: bool = False, progress: bool = True) -> Path:
    """The directory of the pretrained toy model for ``config``: the shipped one, or the cached one, pretraining it
    first if there is none.  ``rebuild`` pretrains again into the cache (whether or not a copy is shipped)."""
    if is_built(config) and not rebuild:
        return model_dir(config)
    target = cached_dir(config)
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


def same_weights(a: Path, b: Path) -> bool:
    """Whether two model directories hold bit-identical weights (every tensor, name, dtype and shape)."""
    from safetensors.torch import load_file

    first, second = load_file(Path(a) / "model.safetensors"), load_file(Path(b) / "model.safetensors")
    return first.keys() == second.keys() and all(
        first[k].dtype == second[k].dtype and first[k].shape == second[k].shape and bool((first[k] == second[k]).all())
        for k in first)

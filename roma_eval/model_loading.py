"""Load a base MoE and its tokenizer by hub id or local path, the way lm-eval's `hf` model does."""

from __future__ import annotations

from roma_eval.errors import RomaEvalError


def load_model(name_or_path: str, revision: str | None = None, dtype: str = "auto", device: str | None = None,
               trust_remote_code: bool = False, device_map: str | None = None):
    """(model in eval mode, tokenizer).  ``device`` defaults to accelerate's choice (GPU if present, else CPU);
    ``device_map="auto"`` splits a model larger than one GPU across this machine's GPUs instead (as lm-eval's
    ``parallelize=True``); remote code runs only when asked for."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from roma_eval.devices import process_state
    from roma_eval.routing import routers

    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype, None)
    if torch_dtype is None:
        raise RomaEvalError(f"dtype {dtype!r} is not a torch dtype; use auto, float32, bfloat16 or float16")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(name_or_path, revision=revision, dtype=torch_dtype,
                                                     trust_remote_code=trust_remote_code,
                                                     **({"device_map": device_map} if device_map else {}))
    except (OSError, ValueError) as exc:
        raise _load_error(name_or_path, exc, trust_remote_code) from None
    routers(model)  # fail early, in one line, on dense or unsupported models
    if device_map:
        return model.eval(), tokenizer
    return model.to(device or process_state().device).eval(), tokenizer


def check_model_source(name_or_path: str, revision: str | None = None, trust_remote_code: bool = False) -> None:
    """Refuse, in the one line ``load_model`` would give, a model whose config cannot be read (a missing directory,
    a hub id not available offline): checked before a run claims its output or reads its tasks."""
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise _load_error(name_or_path, exc, trust_remote_code) from None


def _load_error(name_or_path: str, exc: Exception, trust_remote_code: bool) -> RomaEvalError:
    if "trust_remote_code" in str(exc) and not trust_remote_code:
        return RomaEvalError(f"{name_or_path} ships its own modelling code; pass --trust_remote_code "
                             "(trust_remote_code=True) if you trust it")
    return RomaEvalError(f"could not load model {name_or_path!r} ({str(exc).splitlines()[0]}); "
                         "give a local model directory or a hub id available offline")


def model_skeleton(name_or_path: str, revision: str | None = None, trust_remote_code: bool = False):
    """The model's modules on the meta device, without its weights: what is read about a model (its routers'
    names and shapes, whether a method can run on it) in seconds whatever its size; a config that cannot be read
    fails in ``load_model``'s one line."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise _load_error(name_or_path, exc, trust_remote_code) from None
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)

"""How a report's numbers were produced, from what the runs recorded: the model's name, the commands, versions,
seeds and hardware.

lm-eval's results JSON records its config (model, model_args, batch size, device, limit, seeds), lm_eval_version,
transformers_version, the git hash of the working directory, the date and the machine (pretty_env_info).  A run
made by ``roma-eval reproduce`` or ``roma-eval demo`` lies in a stage directory of an experiment whose manifest
(``experiment.json`` / ``demo.json``) holds the stage's plain commands (training included) and roma-eval's
version; those are used where present.
"""

from __future__ import annotations

import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from roma_eval import registry
from roma_eval.results import Run

# roma_eval.pipeline's manifest names (Experiment.manifest_name), read here without importing the pipeline.
MANIFESTS = ("experiment.json", "demo.json")
TOY_RECORD = "toy_config.json"  # roma_eval.toy.cache.RECORD: a toy model's recipe
# roma-eval verbs that write lm-eval's results files themselves (config.model names them).
OWN_VERBS = tuple(m.name for m in registry.METHODS if m.verb and m.lm_eval_model is None)
BACKEND_NAMES = {"hf": "transformers", "vllm": "vLLM", "sglang": "SGLang"}  # Run.backend as a reader knows it
_HUB_CACHE = re.compile(r"models--([^/]+?)--([^/]+)/snapshots/")
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


@dataclass(frozen=True)
class Provenance:
    row: str  # the row's display name
    commands: tuple[str, ...]
    details: str


def model_title(checkpoint: str) -> str:
    """A model as a reader knows it: a toy model by its preset ("toy olmoe, fast preset, seed 0"), a hub
    checkpoint by its hub id (also from the hub's cache directory), else the last component of its path."""
    if match := _HUB_CACHE.search(checkpoint):
        return f"{match[1]}/{match[2]}"
    path = Path(checkpoint).expanduser()
    if (path / TOY_RECORD).is_file():
        return _toy_title(path)
    if not path.exists() and _HUB_ID.fullmatch(checkpoint):
        return checkpoint
    return checkpoint.rstrip("/").split("/")[-1] or checkpoint


def _toy_title(directory: Path) -> str:
    import json

    from roma_eval.toy.config import PRESETS

    try:
        config = json.loads((directory / TOY_RECORD).read_text(encoding="utf-8"))["config"]
        seed, arch = config["train"]["seed"], config["model"]["arch"]
    except (OSError, ValueError, KeyError, TypeError):
        return directory.name
    for name, preset in PRESETS.items():
        if preset.with_seed(seed).to_dict() == config:
            return f"toy {arch}, {name} preset, seed {seed}"
    return f"toy {arch} ({directory.name})"


def provenance(row: str, runs: list[Run]) -> Provenance:
    """The row's commands (its experiment stage's, else lm_eval's reconstructed from the results file) and, per
    results file, when and with what it was made."""
    commands: list[str] = []
    for run in runs:
        found = _stage(run)
        stage_commands = found[0]["stages"][found[1]].get("commands") if found else None
        commands.extend(stage_commands or [_command(run)])
    return Provenance(row, tuple(dict.fromkeys(commands)), "; ".join(_details(run) for run in runs))


def _stage(run: Run) -> tuple[dict, str] | None:
    """(the experiment's manifest, the run's stage) when the run is a stage's output (<output>/<stage>/...)."""
    import json

    results = run.results_file.resolve()
    for directory in list(results.parents)[1:3]:
        for name in MANIFESTS:
            try:
                manifest = json.loads((directory / name).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            stage = results.relative_to(directory).parts[0]
            if isinstance(manifest, dict) and stage in (manifest.get("stages") or {}):
                return manifest, stage
    return None


def _command(run: Run) -> str:
    """The command that wrote the results file, from its config: lm_eval's, or the roma-eval verb's."""
    config, model = run.config, str(run.config.get("model"))
    args = ",".join(f"{k}={v}" for k, v in run.model_args.items()
                    if v is not None and not (model in OWN_VERBS and k == "pretrained"))
    subtasks = run.data.get("group_subtasks") or {}
    nested = {t for children in subtasks.values() for t in children}
    tasks = ",".join(t for t in dict.fromkeys([*subtasks, *run.data["results"]]) if t not in nested)
    if model in OWN_VERBS:
        parts = ["roma-eval", model, "--pretrained", run.checkpoint, "--tasks", tasks]
    else:
        parts = ["lm_eval", "--model", model, "--model_args", args, "--tasks", tasks]
    shots = {v for v in (run.data.get("n-shot") or {}).values() if isinstance(v, int)}
    parts += ["--num_fewshot", str(shots.pop())] if len(shots) == 1 and 0 not in shots else []
    parts += ["--limit", f"{config['limit']:g}"] if isinstance(config.get("limit"), (int, float)) else []
    if model not in OWN_VERBS:
        parts += ["--batch_size", str(config.get("batch_size"))] if config.get("batch_size") is not None else []
        parts += ["--device", str(config["device"])] if config.get("device") else []
        parts += ["--apply_chat_template"] if run.data.get("chat_template") else []
        parts += ["--fewshot_as_multiturn"] if run.data.get("fewshot_as_multiturn") else []
        parts += ["--log_samples"]
    command = shlex.join(parts)
    return command + (f"  # settings {args}" if model in OWN_VERBS and args else "")


def _details(run: Run) -> str:
    data, config = run.data, run.config
    date = data.get("date")
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(date)) if isinstance(date, (int, float)) else "undated"
    stage = _stage(run)
    roma_eval = ((stage[0].get("versions") or {}).get("roma-eval") if stage else None) or \
        (data.get("oracle") or {}).get("roma_eval_version")
    versions = [f"lm-eval {data.get('lm_eval_version') or '?'}",
                f"transformers {data.get('transformers_version') or '?'}", f"roma-eval {roma_eval or 'not recorded'}"]
    seeds = [config.get(k) for k in ("random_seed", "numpy_seed", "torch_seed", "fewshot_seed")]
    parts = [f"{run.results_file.name} ({when})", ", ".join(versions)]
    parts += [f"git {data['git_hash']}"] if data.get("git_hash") else []
    if any(s is not None for s in seeds):
        parts.append("seeds " + "/".join(str(s) for s in seeds) + " (Python/numpy/torch/few-shot)")
    if stage and isinstance((stage[0].get("identity") or {}).get("seed"), int):
        parts.append(f"experiment seed {stage[0]['identity']['seed']}")
    parts.append(_hardware(data.get("pretty_env_info") or "", config.get("device")))
    parts.append(f"backend {BACKEND_NAMES.get(run.backend, run.backend)}")
    return ", ".join(parts)


def _hardware(info: str, device) -> str:
    """The accelerator (else the CPU) from lm-eval's pretty_env_info, and the device lm-eval used."""
    def field(name: str) -> str | None:
        match = re.search(rf"^{re.escape(name)}:\s*(.+)$", info, re.M)
        value = match[1].strip() if match else None
        return None if value in (None, "Could not collect", "N/A") else value

    gpu = field("GPU models and configuration")
    cpu = field("Model name")
    cpus = field("CPU(s)")
    machine = gpu or (f"{cpu}, {cpus} CPUs" if cpu and cpus else cpu) or "hardware not recorded"
    return f"{machine}, device {device}" if device else machine

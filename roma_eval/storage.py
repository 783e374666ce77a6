"""Writing results safely: atomic files and directories, and resumable training state without pickle.

Every output of roma-eval is either complete or absent: a file is written to a temporary name in
its directory and renamed over the target; a directory is assembled in a staging directory and
renamed into place.  Training state (RoMA's routers, the toy model's pretraining) is saved as
safetensors plus JSON -- never pickle, so resuming cannot execute code from a file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

STATE_TENSORS, STATE_JSON = "state.safetensors", "state.json"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write to a temporary file in the same directory, then rename over ``path`` (readers never see half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(payload)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it private; outputs are ordinary files
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, data) -> Path:
    return write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


@contextmanager
def staged_directory(directory: Path):
    """Yield an empty staging directory beside ``directory``; when the block succeeds it replaces
    ``directory`` (an existing one is removed only then).  On failure nothing changes."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        yield staging
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _optimizer_parts(optimizer) -> tuple[dict, dict]:
    """An optimiser's state_dict as (tensors, JSON-able rest)."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for param_id, values in state["state"].items():
        for key, value in values.items():
            if hasattr(value, "detach"):
                tensors[f"optimizer.{param_id}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{param_id}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict, saved: dict) -> dict:
    state: dict = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, param_id, key = name.split(".", 2)
            state.setdefault(int(param_id), {})[key] = value
    for name, value in saved["scalars"].items():
        param_id, key = name.split(".", 1)
        state.setdefault(int(param_id), {})[key] = value
    return {"state": state, "param_groups": saved["param_groups"]}


def save_training_state(directory: Path, tensors: dict, optimizer, progress: dict) -> None:
    """``tensors`` (weights), the optimiser's state and ``progress`` (JSON-able) into ``directory``, atomically."""
    from safetensors.torch import save

    optimizer_tensors, optimizer_rest = _optimizer_parts(optimizer)
    # Each weight copied on its own: tied weights share storage, which safetensors refuses.
    weights = {f"weights.{name}": value.detach().cpu().clone().contiguous() for name, value in tensors.items()}
    with staged_directory(directory) as staging:
        (staging / STATE_TENSORS).write_bytes(save({**weights, **optimizer_tensors}))
        (staging / STATE_JSON).write_text(json.dumps({"progress": progress, "optimizer": optimizer_rest}))


def load_training_state(directory: Path, optimizer) -> tuple[dict, dict] | None:
    """(weights, progress) saved by ``save_training_state``, with ``optimizer`` restored; None if there is none."""
    from safetensors.torch import load_file

    directory = Path(directory)
    if not (directory / STATE_JSON).is_file():
        return None
    saved = json.loads((directory / STATE_JSON).read_text())
    tensors = load_file(directory / STATE_TENSORS)
    optimizer.load_state_dict(_optimizer_state(tensors, saved["optimizer"]))
    weights = {name[len("weights."):]: value for name, value in tensors.items() if name.startswith("weights.")}
    return weights, saved["progress"]


def read_progress(directory: Path) -> dict | None:
    """Only the progress of a saved training state (to check it belongs to this run before loading it)."""
    path = Path(directory) / STATE_JSON
    return json.loads(path.read_text())["progress"] if path.is_file() else None

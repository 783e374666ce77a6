"""Writing results safely: atomic files and directories, resumable training state without pickle, and failures that
leave a state the same command recovers from.

Every output of roma-eval is either complete or absent: a file is written to a temporary name in
its directory and renamed over the target; a directory is assembled in a staging directory and
renamed into place; several files that belong together (a report) are all written to temporary names before any is
renamed.  Training state (RoMA's routers, the toy model's pretraining) is saved as safetensors plus JSON -- never
pickle, so resuming cannot execute code from a file.

A write that runs out of space (ENOSPC, EDQUOT, or safetensors' own error around them) ends in one line naming the
path and the space it needed (``full_disk_is_one_line``); what it staged is removed and the previous output is
untouched, so the same command succeeds once space is freed.  Long runs whose output size is known check the free
space first (``require_free_space``).  Tensors read back are checked for NaN and inf (``require_finite``).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from roma_eval.errors import RomaEvalError

STATE_TENSORS, STATE_JSON = "state.safetensors", "state.json"
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_all(out, payload: bytes) -> None:
    """Every byte roma-eval writes itself goes through here (tests make it fail at a chosen byte)."""
    out.write(payload)


def _payload(data: str | bytes) -> bytes:
    return data.encode("utf-8") if isinstance(data, str) else data


def _write_temporary(path: Path, payload: bytes) -> str:
    """``payload`` in a new temporary file beside ``path`` (synced, ordinary permissions); its name."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            _write_all(out, payload)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it private; outputs are ordinary files
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return temporary


def read_json_object(path: Path) -> dict | None:
    """A JSON object read from ``path``; None when the file is missing, unreadable, not JSON or not an object."""
    try:
        found = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write to a temporary file in the same directory, then rename over ``path`` (readers never see half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = _payload(data)
    with full_disk_is_one_line(path, len(payload)):
        temporary = _write_temporary(path, payload)
    try:
        os.replace(temporary, path)
    except BaseException:  # an interrupted rename leaves no temporary file behind
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, data) -> Path:
    return write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def write_file(path: Path, data: str | bytes) -> Path:
    """A plain write, for files inside a staging directory (the directory's rename makes them atomic)."""
    with open(path, "wb") as out:
        _write_all(out, _payload(data))
    return Path(path)


def write_files(files: dict[Path, str | bytes]) -> list[Path]:
    """Files that belong together, replaced together: all are written to temporary files beside their targets
    (after a check that they fit), and only then renamed into place.  On any failure the temporary files and the
    directories this call made go, and the previous files are untouched."""
    payloads = {Path(path): _payload(data) for path, data in files.items()}
    if not payloads:
        return []
    root = Path(os.path.commonpath([str(p.parent) for p in payloads]))
    needed = sum(len(p) for p in payloads.values())
    require_free_space(root, needed, f"writing {len(payloads)} files under {root}")
    made, temporaries = [], {}
    try:
        with full_disk_is_one_line(root, needed):
            for path, payload in payloads.items():
                made += make_directories(path.parent)
                temporaries[path] = _write_temporary(path, payload)
        for path, temporary in temporaries.items():  # renames need no space: all of them or an OS failure
            os.replace(temporary, path)
    except BaseException:
        for temporary in temporaries.values():
            Path(temporary).unlink(missing_ok=True)
        remove_empty_directories(made)
        raise
    return list(payloads)


def make_directories(directory: Path) -> list[Path]:
    """``mkdir -p directory``; the directories it made, outermost first."""
    missing = []
    probe = Path(directory)
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    made = []
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            if not path.is_dir():
                raise
            continue
        made.append(path)
    return made


def remove_empty_directories(directories: list[Path]) -> None:
    """Remove ``directories`` (outermost first, as ``make_directories`` returns them) that are empty, innermost
    first; a directory that holds something stays, and so do the ones around it."""
    for directory in reversed(directories):
        try:
            directory.rmdir()
        except OSError:
            return


@contextmanager
def staged_directory(directory: Path, needed: int | None = None):
    """Yield an empty staging directory beside ``directory``; when the block succeeds it replaces
    ``directory`` (an existing one is removed only then).  On failure nothing changes: the staging directory goes,
    and running out of space is one line (``needed``: the bytes the block writes, when known)."""
    directory = Path(directory)
    made = make_directories(directory.parent)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        with full_disk_is_one_line(directory, needed, staging=staging):
            yield staging
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        remove_empty_directories(made)
        raise


def save_lm_eval_outputs(tracker, results: dict, samples: dict) -> None:
    """Write lm-eval's results_<date>.json and samples_<task>_<date>.jsonl through its ``EvaluationTracker``, which
    writes plainly and only logs a warning when a write fails: the space they need is checked first, a failed write
    is an error, and the files it wrote are then removed (a rerun finds no cut-off results)."""
    root = Path(tracker.output_path)
    needed = len(json.dumps(results, indent=2, default=str)) + sum(len(json.dumps(s, default=str)) + 1
                                                                  for task in samples.values() for s in task)
    require_free_space(root, needed + needed // 10 + 4096, "lm-eval's results and samples files")
    before = set(root.rglob("*")) if root.is_dir() else set()
    warnings = _Collect()
    tracker_log = logging.getLogger(type(tracker).__module__)
    level = tracker_log.level
    tracker_log.setLevel(min(tracker_log.getEffectiveLevel(), logging.WARNING))
    tracker_log.addHandler(warnings)
    try:
        with full_disk_is_one_line(root):
            tracker.save_results_aggregated(results=results, samples=samples)
            for task in results["configs"]:
                tracker.save_results_samples(task_name=task, samples=samples[task])
        if failed := [m for m in warnings.messages if m.startswith("Could not save")]:
            if free_bytes(root) < 2**16:
                raise RomaEvalError(full_disk_message(root, needed))
            raise RomaEvalError(f"lm-eval could not write its results under {root} ({failed[0]}); check that it is "
                                "writable and run the same command again")
    except BaseException:
        for path in (set(root.rglob("*")) if root.is_dir() else set()) - before:
            if path.is_file():
                path.unlink()
        raise
    finally:
        tracker_log.removeHandler(warnings)
        tracker_log.setLevel(level)


class _Collect(logging.Handler):
    """The messages of the warnings a logger emits."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record) -> None:
        self.messages.append(record.getMessage())


# ------------------------------------------------------------------ running out of space

def is_full_disk(exc: BaseException) -> bool:
    """An error that says the device (or the user's quota) is full, from Python's I/O or from safetensors."""
    if isinstance(exc, OSError):
        return exc.errno in NO_SPACE
    text = str(exc)  # safetensors writes in Rust and wraps the OS error in its own SafetensorError
    return type(exc).__name__ == "SafetensorError" and any(
        f"os error {code}" in text for code in NO_SPACE)


def free_bytes(path) -> int:
    """Free bytes on the device that holds ``path`` (or would: its nearest existing ancestor)."""
    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def human_size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"  # unreachable


def _tree_size(directory: Path) -> int:
    return sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file())


def full_disk_message(path, needed: int | None = None, at_least: bool = False) -> str:
    need = f"it needed {'more than ' if at_least else ''}{human_size(needed)}, " if needed else ""
    return (f"no space left on the device of {path} ({need}{human_size(free_bytes(path))} free): what was being "
            "written was removed and earlier outputs are as they were; free some space and run the same command "
            "again")


@contextmanager
def full_disk_is_one_line(path, needed: int | None = None, staging: Path | None = None):
    """Running out of space inside the block becomes one line naming ``path`` and the space needed (``needed``
    bytes, or more than what ``staging`` holds when the size was not known); other errors pass unchanged."""
    try:
        yield
    except Exception as exc:
        if not is_full_disk(exc):
            raise
        if needed is None and staging is not None:
            raise RomaEvalError(full_disk_message(path, _tree_size(staging), at_least=True)) from None
        raise RomaEvalError(full_disk_message(path, needed)) from None


def require_free_space(path, needed: int, what: str) -> None:
    """Refuse, before a long run, a device without room for its ``needed`` bytes of output."""
    free = free_bytes(path)
    if needed > free:
        raise RomaEvalError(f"{what} needs about {human_size(needed)} at {path} but {human_size(free)} are free "
                            "there; free some space (or write elsewhere) and run the same command again")


def require_finite(tensors, source, fix: str) -> None:
    """Refuse tensors (name -> tensor) read from ``source`` that hold NaN or inf, naming the first such tensor."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
            bad = int((~tensor.isfinite()).sum())
            raise RomaEvalError(f"{source}: {name} holds non-finite values (NaN or inf: {bad} of "
                                f"{tensor.numel()}); {fix}")


# ------------------------------------------------------------------ training state

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
    """``tensors`` (weights), the optimiser's state and ``progress`` (JSON-able) into ``directory``, atomically.
    Weights that are no longer finite are refused: the state of the last finished epoch stays."""
    from safetensors.torch import save

    require_finite(tensors, f"the training update before step {progress.get('step')}",
                   f"lower --lr; {directory} keeps the last finished epoch for resuming")
    optimizer_tensors, optimizer_rest = _optimizer_parts(optimizer)
    # Each weight copied on its own: tied weights share storage, which safetensors refuses.
    weights = {f"weights.{name}": value.detach().cpu().clone().contiguous() for name, value in tensors.items()}
    payload = save({**weights, **optimizer_tensors})
    text = json.dumps({"progress": progress, "optimizer": optimizer_rest})
    with staged_directory(directory, needed=len(payload) + len(text)) as staging:
        write_file(staging / STATE_TENSORS, payload)
        write_file(staging / STATE_JSON, text)


def load_training_state(directory: Path, optimizer) -> tuple[dict, dict] | None:
    """(weights, progress) saved by ``save_training_state``, with ``optimizer`` restored; None if there is none."""
    from safetensors.torch import load_file

    directory = Path(directory)
    if not (directory / STATE_JSON).is_file():
        return None
    saved = json.loads((directory / STATE_JSON).read_text())
    tensors = load_file(directory / STATE_TENSORS)
    require_finite(tensors, directory / STATE_TENSORS, f"delete {directory} to start the training over")
    optimizer.load_state_dict(_optimizer_state(tensors, saved["optimizer"]))
    weights = {name[len("weights."):]: value for name, value in tensors.items() if name.startswith("weights.")}
    return weights, saved["progress"]


def read_progress(directory: Path) -> dict | None:
    """Only the progress of a saved training state (to check it belongs to this run before loading it)."""
    path = Path(directory) / STATE_JSON
    return json.loads(path.read_text())["progress"] if path.is_file() else None

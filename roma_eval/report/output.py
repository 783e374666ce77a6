"""Atomic, non-clobbering writes: a report is either fully written or not touched."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from roma_eval.errors import RomaEvalError


def refuse_existing(paths: list[Path], overwrite: bool) -> None:
    """Fail before writing anything if a target exists and ``overwrite`` is off."""
    if overwrite:
        return
    existing = [p for p in paths if p.exists()]
    if existing:
        raise RomaEvalError(f"{existing[0]} already exists ({len(existing)} of the report's files do); "
                            f"pass --overwrite to replace them or choose another --out")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write to a temporary file in the same directory, then rename over ``path`` (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(payload)
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it private; a report is an ordinary file
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path

"""Non-clobbering writes: a report is either fully written (``storage.write_atomic``) or not touched."""

from __future__ import annotations

from pathlib import Path

from roma_eval.errors import RomaEvalError
from roma_eval.storage import write_atomic  # noqa: F401  (the report writers' one way to write a file)


def refuse_existing(paths: list[Path], overwrite: bool) -> None:
    """Fail before writing anything if a target exists and ``overwrite`` is off."""
    if overwrite:
        return
    existing = [p for p in paths if p.exists()]
    if existing:
        raise RomaEvalError(f"{existing[0]} already exists ({len(existing)} of the report's files do); "
                            f"pass --overwrite to replace them or choose another --out")

"""Non-clobbering writes: a report is either fully written (``storage.write_files``) or not touched."""

from __future__ import annotations

from pathlib import Path

from roma_eval.errors import RomaEvalError
from roma_eval.storage import write_atomic, write_files  # noqa: F401  (the report writers' ways to write files)


def refuse_existing(paths: list[Path], overwrite: bool, flag: str = "--output_path") -> None:
    """Fail before writing anything if a target exists and ``overwrite`` is off (``flag``: the option that chose
    the targets, named in the message)."""
    if overwrite:
        return
    existing = [p for p in paths if p.exists()]
    if existing:
        raise RomaEvalError(f"{existing[0]} already exists ({len(existing)} of the files to write do); "
                            f"pass --overwrite to replace them or choose another {flag}")

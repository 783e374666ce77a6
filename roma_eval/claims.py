"""Claims on outputs: one run writes an output at a time, and a refused run leaves nothing behind.

Every writing verb claims what it writes before it loads anything: a claim file ``<output>.claim`` beside the
output holding the run's pid, host, start time and command, created atomically (a hard link of a complete file,
which fails if the claim exists).  A second run into the same output is refused in one line; a claim whose pid is
dead on this host (a killed run) is stale and taken over; a claim from another host cannot be checked, so the
message names the file to delete.  The claim goes when the run ends (``release_claims``, called by the command
line, and at exit).  A run that fails removes what it created and that holds nothing: the directories made for
its output, and an output directory that it created holding only empty directories and bookkeeping files
(``Claim.disposable``, e.g. a manifest written at the start).  Under ``accelerate launch`` only the main process
(RANK 0) claims.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from roma_eval.errors import RomaEvalError
from roma_eval.storage import (
    full_disk_is_one_line,
    make_directories,
    read_json_object,
    remove_empty_directories,
)

CLAIM_SUFFIX = ".claim"
logger = logging.getLogger(__name__)
_held: list[Claim] = []


@dataclass
class Claim:
    file: Path  # <target>.claim
    target: Path  # the output file or directory
    owner: dict  # pid, host, started, command
    made: list[Path]  # directories made for the target, outermost first
    target_is_new: bool
    disposable: set[str] = field(default_factory=set)  # files (relative to the target) that alone are no output

    def release(self, failed: bool = False) -> None:
        """Give the output up; after a failure, remove what this run created that holds nothing."""
        if self in _held:
            _held.remove(self)
        if read_json_object(self.file) == self.owner:
            self.file.unlink(missing_ok=True)
        if failed:
            self._remove_debris()

    def _remove_debris(self) -> None:
        if self.target_is_new and self.target.is_dir() and _holds_nothing(self.target, self.disposable):
            shutil.rmtree(self.target)
        remove_empty_directories(self.made)


def claim_output(target, flag: str = "--output_path", directory: bool = True) -> Claim | None:
    """Claim ``target`` (a directory, or a file with ``directory=False``) for this run, making its parent
    directories; refused in one line, naming ``flag``, when a parent is a file, when ``target`` is of the other
    kind, or when another live run holds it."""
    if os.environ.get("RANK", "0") != "0":  # one of several processes: the main one claims for all
        return None
    target = Path(target)
    if not target.name:
        target = target.resolve()
    _check_kind(target, flag, directory)
    made = _make_parents(target, flag)
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
             "command": " ".join(["roma-eval", *sys.argv[1:]]) if sys.argv else "roma-eval"}
    claim = Claim(target.with_name(target.name + CLAIM_SUFFIX), target, owner, made, not target.exists())
    for earlier in [c for c in _held if c.file == claim.file]:  # this process claimed it before (the Python API)
        earlier.release()
    try:
        _take(claim.file, owner, target, flag)
    except BaseException:
        remove_empty_directories(made)
        raise
    if not _held:
        atexit.register(release_claims)
    _held.append(claim)
    return claim


def release_claims(failed: bool = False) -> None:
    """Release every claim this process holds (``failed``: and remove what the run created that holds nothing)."""
    for claim in list(reversed(_held)):
        claim.release(failed)


def _check_kind(target: Path, flag: str, directory: bool) -> None:
    if target.exists() and target.is_dir() != directory:
        kind, wanted = ("a file", "a directory") if directory else ("a directory", "a file")
        raise RomaEvalError(f"{flag} {target} is {kind}, not {wanted}; pass {wanted} path")


def _make_parents(target: Path, flag: str) -> list[Path]:
    probe = target.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise RomaEvalError(f"{flag} {target}: {probe} is a file, not a directory; pass a path inside a directory")
    try:
        return make_directories(target.parent)
    except OSError as exc:
        raise RomaEvalError(f"{flag} {target}: cannot create {exc.filename or target.parent} ({exc.strerror}); "
                            "pass a writable path") from None


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:  # a malformed pid is no process (and 0 or -1 would signal groups)
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _stale(holder: dict | None) -> bool:
    """A claim nobody holds any more: unreadable, or its pid is dead (or ours: a reused pid) on this host."""
    if holder is None:
        return True
    return holder.get("host") == socket.gethostname() and (holder.get("pid") == os.getpid()
                                                             or not _alive(holder.get("pid")))


def _create(file: Path, text: str) -> None:
    """``file`` holding ``text``, created only if it does not exist (FileExistsError otherwise), never half-written."""
    from roma_eval.storage import _write_temporary

    with full_disk_is_one_line(file, len(text)):
        temporary = _write_temporary(file, text.encode("utf-8"))
    try:
        os.link(temporary, file)
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: exclusive creation (a reader may see it half-written)
        with open(file, "x", encoding="utf-8") as out:
            out.write(text)
    finally:
        os.unlink(temporary)


def _take(file: Path, owner: dict, target: Path, flag: str) -> None:
    for _ in range(3):
        try:
            _create(file, json.dumps(owner))
            return
        except FileExistsError:
            holder = read_json_object(file)
            if not _stale(holder):
                raise RomaEvalError(_held_message(file, holder, target, flag)) from None
            if _set_aside(file, holder):
                logger.info("%s: taking over the claim of a run that is no longer running (%s)", target,
                            "unreadable" if holder is None else f"pid {holder.get('pid')}")
    raise RomaEvalError(f"{flag} {target}: another run is claiming it at this moment ({file}); wait for it or "
                        f"choose another {flag}")


def _set_aside(file: Path, holder: dict | None) -> bool:
    """Remove the stale claim ``holder`` unless another run replaced it meanwhile (then put that one back)."""
    aside = file.with_name(f"{file.name}.{os.getpid()}.stale")
    try:
        os.rename(file, aside)
    except FileNotFoundError:
        return False
    taken_over = read_json_object(aside) == holder
    if not taken_over:
        try:
            os.link(aside, file)
        except FileExistsError:
            pass
    aside.unlink()
    return taken_over


def _held_message(file: Path, holder: dict, target: Path, flag: str) -> str:
    who = (f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}: "
           f"{holder.get('command')}")
    if holder.get("host") == socket.gethostname():
        return f"{flag} {target} is being written by another run ({who}); wait for it to end or choose another {flag}"
    return (f"{flag} {target} is being written by a run on another machine ({who}); wait for it to end or choose "
            f"another {flag} (if that run is no longer running, delete {file})")


def _holds_nothing(directory: Path, disposable: set[str]) -> bool:
    for path in directory.rglob("*"):
        if not path.is_dir() and str(path.relative_to(directory)) not in disposable:
            return False
    return True

"""An oracle run's directory: what ``lm_eval --output_path OUT --log_samples`` writes, plus a manifest and the
per-document outcomes that make the run resumable.

Layout, in ``OUT/<model_name_sanitized>/`` (lm-eval's own; oracle/README.md documents the fields):
  results_<date>.json            lm-eval's results (EvaluationTracker), with an ``oracle`` block
  samples_<task>_<date>.jsonl    lm-eval's per-sample lines, each with an ``oracle`` object
  oracle_run.json                the run's identity (base-model router fingerprint, tasks, settings), whether
                                 it is complete, and its results file
  oracle_progress/<task>.jsonl   one line per finished document (what the oracle answers, its base answers,
                                 steps, losses, optional routing), appended as batches finish: a rerun with
                                 the same settings skips those documents; process r > 0 of an
                                 `accelerate launch` run appends to <task>.rank<r>.jsonl (all are read)
Whole files are written atomically (``storage.write_json``); nothing is replaced without ``overwrite``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from roma_eval.errors import RomaEvalError
from roma_eval.storage import require_finite, write_json

MANIFEST = "oracle_run.json"
PROGRESS = "oracle_progress"
FORMAT_VERSION = 2
_LM_EVAL_FILES = ("results_*.json", "samples_*.jsonl")


def _differences(old: dict, new: dict) -> list[str]:
    return [f"{key} {old.get(key)!r} (now {new.get(key)!r})" for key in sorted(set(old) | set(new))
            if old.get(key) != new.get(key)]


def _safe_name(task: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in task)


# What makes two runs the same model: the router fingerprint and the architecture (the model's name or
# path may differ: a moved directory is the same model).
_MODEL_KEYS = ("base_router_fingerprint", "model_type")
_RUN_KEYS = ("tasks", "split", "limit", "settings")


class OracleStore:
    """``identity``: ``model``, ``model_type``, ``base_router_fingerprint``, ``tasks``, ``split``, ``limit``,
    ``settings`` (a dict of the oracle settings that change results).  Checks, before anything is written,
    that ``directory`` holds nothing but this run (or is new); ``overwrite`` clears it first."""

    def __init__(self, directory, identity: dict, overwrite: bool = False, rank: int = 0):
        self.directory = Path(directory)
        self.identity = identity
        self.rank = rank  # which progress file this process appends to
        self._cache: dict[str, dict[int, dict]] = {}
        if overwrite:
            self._verify_is_directory()
            self._clear()
        else:
            self._verify(_MODEL_KEYS)
        if not (self.directory / MANIFEST).is_file():
            self.directory.mkdir(parents=True, exist_ok=True)
            self.manifest = {"format_version": FORMAT_VERSION, **identity, "complete": False, "results_file": None}
            self._save_manifest()

    @classmethod
    def precheck(cls, directory, identity: dict, overwrite: bool = False) -> None:
        """The checks of ``OracleStore(directory, identity)`` that need no model (a file in the way, foreign
        results, other settings), writing nothing: run them before loading a model that takes minutes."""
        store = cls.__new__(cls)
        store.directory, store.identity = Path(directory), identity
        store._verify_is_directory()
        if not overwrite:
            store._verify(model_keys=())

    def _verify_is_directory(self) -> None:
        if self.directory.exists() and not self.directory.is_dir():
            raise RomaEvalError(f"{self.directory} is a file, not a directory; pass another --output_path")

    def _verify(self, model_keys) -> None:
        """Refuse a directory holding anything but this run (its manifest must agree on ``model_keys`` and the
        run's settings); load the manifest of a run to resume."""
        self._verify_is_directory()
        manifest = self.directory / MANIFEST
        if manifest.is_file():
            self._check(json.loads(manifest.read_text(encoding="utf-8")), model_keys)
            return
        foreign = self._lm_eval_files() + ([self.directory / PROGRESS] if (self.directory / PROGRESS).exists() else [])
        if foreign:
            raise RomaEvalError(f"{self.directory} holds results not written by `roma-eval oracle` "
                                f"({foreign[0].name}); choose another --output_path or pass --overwrite")

    def _lm_eval_files(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(p for pattern in _LM_EVAL_FILES for p in self.directory.glob(pattern))

    def _clear(self) -> None:
        for path in self._lm_eval_files():
            path.unlink()
        if (self.directory / PROGRESS).is_dir():
            shutil.rmtree(self.directory / PROGRESS)
        if (self.directory / MANIFEST).exists():
            (self.directory / MANIFEST).unlink()

    def _check(self, old: dict, model_keys) -> None:
        if old.get("format_version") != FORMAT_VERSION:
            raise RomaEvalError(f"{self.directory} holds oracle results of an older roma-eval (format "
                                f"{old.get('format_version')}); choose another --output_path or pass --overwrite")
        if any(old.get(key) != self.identity[key] for key in model_keys):
            raise RomaEvalError(f"{self.directory} holds oracle results of another model ({old.get('model')}: its "
                                "router fingerprint differs); choose another --output_path or pass --overwrite")
        changed = [d for key in _RUN_KEYS for d in _differences({key: old.get(key)}, {key: self.identity[key]})]
        if changed:
            raise RomaEvalError(f"{self.directory} holds oracle results made with other settings "
                                f"({'; '.join(changed)}); rerun with those settings to resume, or choose another "
                                "--output_path, or pass --overwrite")
        self.manifest = old

    def _save_manifest(self) -> None:
        write_json(self.directory / MANIFEST, self.manifest)

    @property
    def complete(self) -> bool:
        results = self.results_file
        return bool(self.manifest.get("complete")) and results is not None and results.is_file()

    @property
    def results_file(self) -> Path | None:
        name = self.manifest.get("results_file")
        return self.directory / name if name else None

    def progress_path(self, task: str) -> Path:
        suffix = f".rank{self.rank}" if self.rank else ""
        return self.directory / PROGRESS / f"{_safe_name(task)}{suffix}.jsonl"

    def documents(self, task: str) -> dict[int, dict]:
        """doc_id -> the task's finished documents (every process's).  A run killed mid-append leaves at most a
        cut-off last line: it is skipped (that document is computed again)."""
        if task not in self._cache:
            found = {}
            for item in _progress_lines(self.directory, task):
                found[item["doc_id"]] = item
            self._cache[task] = found
        return self._cache[task]

    def refresh(self) -> None:
        """Forget what was read: other processes have appended since."""
        self._cache.clear()

    def append(self, task: str, records: list[dict]) -> None:
        """Store one finished batch of documents (durably, before the next batch starts)."""
        path = self.progress_path(task)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps(record, ensure_ascii=False, default=str) + "\n" for record in records)
        with open(path, "a+", encoding="utf-8") as f:
            if f.tell():  # a cut-off last line of a killed run must not swallow the first new record
                f.seek(f.tell() - 1)
                if f.read(1) != "\n":
                    f.write("\n")
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        self.documents(task).update({record["doc_id"]: record for record in records})

    def clear_outputs(self) -> None:
        """Remove lm-eval files left by an earlier attempt that stopped while writing them."""
        for path in self._lm_eval_files():
            path.unlink()

    def finish(self, results_file: Path) -> None:
        self.manifest.update(complete=True, results_file=results_file.name)
        self._save_manifest()


def find_run_directory(directory) -> Path:
    """The oracle run directory at ``directory``: itself, or its one ``<model_name_sanitized>`` subdirectory."""
    directory = Path(directory)
    if (directory / MANIFEST).is_file():
        return directory
    runs = sorted(p.parent for p in directory.glob(f"*/{MANIFEST}")) if directory.is_dir() else []
    if len(runs) == 1:
        return runs[0]
    if not runs:
        raise RomaEvalError(f"{directory} is not an oracle output directory (no {MANIFEST}); "
                            "pass the --output_path given to `roma-eval oracle`")
    raise RomaEvalError(f"{directory} holds oracle runs of several models ({', '.join(p.name for p in runs)}); "
                        "pass one of those directories")


def load_oracle_routing(directory, task: str) -> dict[int, dict]:
    """doc_id -> {"base", "oracle"[, "variables"]} as (tokens, layers, experts) tensors at the --tokens positions,
    from a run made with --save-routing (every document that descended); "variables" with --positions tokens."""
    import torch

    run = find_run_directory(directory)
    manifest = json.loads((run / MANIFEST).read_text(encoding="utf-8"))
    if not manifest.get("settings", {}).get("save_routing"):
        raise RomaEvalError(f"{run} was made without routing; rerun `roma-eval oracle` with --save-routing")
    if not _progress_files(run, task):
        raise RomaEvalError(f"{run} has no documents of task {task}; check the task name")
    out = {}
    for item in _progress_lines(run, task):
        if item.get("routing"):
            out[item["doc_id"]] = {key: torch.tensor(value) for key, value in item["routing"].items()}
    require_finite({f"doc {doc_id}'s {key} routing": value for doc_id, record in out.items()
                    for key, value in record.items()}, ", ".join(map(str, _progress_files(run, task))),
                   f"rerun `roma-eval oracle` on {task} into a new --output_path")
    return out


def _progress_files(directory: Path, task: str) -> list[Path]:
    """A task's progress files: the main process's, then those of other processes (``.rank<r>``)."""
    name = _safe_name(task)
    main = directory / PROGRESS / f"{name}.jsonl"
    return ([main] if main.is_file() else []) + sorted((directory / PROGRESS).glob(f"{name}.rank*.jsonl"))


def _progress_lines(directory: Path, task: str):
    for path in _progress_files(directory, task):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                yield json.loads(line)
            except json.JSONDecodeError:  # a cut-off last line of an interrupted run
                continue

"""An oracle output directory: what plain ``lm_eval --output_path --log_samples`` writes, plus a manifest.

Layout (oracle/README.md documents the fields):
  oracle_run.json                     the run's identity (base-model router fingerprint, tasks, settings),
                                      its date id and whether it is complete
  samples_<task>_<date>.jsonl         one line per document (per document and filter for generation),
                                      appended as batches finish: an interrupted run resumes from them
  routing_<task>_<date>.jsonl         with --save-routing: base and oracle routing scores per document
  results_<date>.json                 lm-eval's results format, written once every task is done
Whole files are written atomically (temp file + os.replace); nothing is replaced without ``overwrite``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from datetime import datetime
from pathlib import Path

from roma_eval.errors import RomaEvalError

MANIFEST = "oracle_run.json"
FORMAT_VERSION = 1
_OURS = ("results_*.json", "samples_*.jsonl", "routing_*.jsonl")


def write_atomic(path: Path, text: str) -> None:
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


def _differences(old: dict, new: dict) -> list[str]:
    return [f"{key} {old.get(key)!r} (now {new.get(key)!r})" for key in sorted(set(old) | set(new))
            if old.get(key) != new.get(key)]


# What makes two runs the same model: the router fingerprint and the architecture (the model's name or
# path may differ: a moved directory is the same model).
_MODEL_KEYS = ("base_router_fingerprint", "model_type")


class OracleStore:
    """``identity``: ``model``, ``model_type``, ``base_router_fingerprint``, ``tasks``, ``split``, ``limit``,
    ``settings`` (a dict of the oracle settings that change results)."""

    def __init__(self, directory, identity: dict, overwrite: bool = False):
        self.directory = Path(directory)
        self.identity = identity
        manifest = self.directory / MANIFEST
        existing = [p for pattern in _OURS for p in self.directory.glob(pattern)] if self.directory.is_dir() else []
        if overwrite:
            for path in existing + ([manifest] if manifest.exists() else []):
                path.unlink()
        elif manifest.exists():
            self._check(json.loads(manifest.read_text(encoding="utf-8")))
        elif existing:
            raise RomaEvalError(f"{self.directory} holds results not written by `roma-eval oracle` "
                                f"({existing[0].name}); choose another --out or pass --overwrite")
        if not manifest.exists():
            self.directory.mkdir(parents=True, exist_ok=True)
            self.manifest = {"format_version": FORMAT_VERSION, **identity, "complete": False,
                             "date_id": datetime.now().isoformat().replace(":", "-")}
            self._save_manifest()

    def _check(self, old: dict) -> None:
        if any(old.get(key) != self.identity[key] for key in _MODEL_KEYS):
            raise RomaEvalError(f"{self.directory} holds oracle results of another model ({old.get('model')}: its "
                                f"routers or architecture differ from {self.identity['model']}'s); choose another "
                                "--out or pass --overwrite")
        run_keys = [k for k in self.identity if k not in (*_MODEL_KEYS, "model", "settings")]
        differences = _differences({k: old.get(k) for k in run_keys}, {k: self.identity[k] for k in run_keys})
        differences += _differences(old.get("settings") or {}, self.identity["settings"])
        if differences:
            raise RomaEvalError(f"{self.directory} holds oracle results with other settings: {'; '.join(differences)}; "
                                "rerun with the same flags to resume, or choose another --out, or pass --overwrite")
        self.manifest = old

    def _save_manifest(self) -> None:
        write_atomic(self.directory / MANIFEST, json.dumps(self.manifest, indent=2, sort_keys=True) + "\n")

    @property
    def complete(self) -> bool:
        return bool(self.manifest["complete"])

    @property
    def date_id(self) -> str:
        return self.manifest["date_id"]

    def samples_path(self, task: str) -> Path:
        return self.directory / f"samples_{task}_{self.date_id}.jsonl"

    def routing_path(self, task: str) -> Path:
        return self.directory / f"routing_{task}_{self.date_id}.jsonl"

    @property
    def results_path(self) -> Path:
        return self.directory / f"results_{self.date_id}.json"

    def lines(self, task: str, lines_per_doc: int) -> list[dict]:
        """The task's finished per-sample lines.  A run killed mid-append can leave a cut-off last line or a
        document without all its filter lines: those are dropped (and the file rewritten without them)."""
        path = self.samples_path(task)
        if not path.exists():
            return []
        parsed = []
        raw = path.read_text(encoding="utf-8").splitlines()
        for line in raw:
            try:
                parsed.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        counts = defaultdict(int)
        for line in parsed:
            counts[line["doc_id"]] += 1
        kept = [line for line in parsed if counts[line["doc_id"]] == lines_per_doc]
        if len(kept) != len(raw):
            write_atomic(path, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in kept))
        return kept

    def append(self, task: str, lines: list[dict], routing: list[dict] | None = None) -> None:
        """Append one finished batch (whole documents) to the task's JSONL files.  Routing goes first: a run
        killed in between redoes those documents, and routing readers keep a document's last line."""
        pairs = ([(self.routing_path(task), routing)] if routing else []) + [(self.samples_path(task), lines)]
        for path, items in pairs:
            with open(path, "a", encoding="utf-8") as f:
                f.write("".join(json.dumps(item, ensure_ascii=False, default=str) + "\n" for item in items))
                f.flush()
                os.fsync(f.fileno())

    def finish(self, results: dict) -> Path:
        write_atomic(self.results_path, json.dumps(results, indent=2, ensure_ascii=False, default=str) + "\n")
        self.manifest["complete"] = True
        self._save_manifest()
        return self.results_path


def load_oracle_routing(directory, task: str) -> dict[int, dict]:
    """doc_id -> {"base", "oracle", "variables"} as (tokens, layers, experts) tensors, from a run made with
    --save-routing (a document's last line wins; see ``OracleStore.append``)."""
    import torch

    directory = Path(directory)
    manifest = directory / MANIFEST
    if not manifest.is_file():
        raise RomaEvalError(f"{directory} is not an oracle output directory (no {MANIFEST}); "
                            "pass the --out of `roma-eval oracle`")
    path = directory / f"routing_{task}_{json.loads(manifest.read_text(encoding='utf-8'))['date_id']}.jsonl"
    if not path.is_file():
        raise RomaEvalError(f"{directory} has no routing for task {task}; rerun `roma-eval oracle` with --save-routing")
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:  # a cut-off last line of an interrupted run
            continue
        out[item["doc_id"]] = {key: torch.tensor(item[key]) for key in ("base", "oracle", "variables")}
    return out

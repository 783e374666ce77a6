"""Read what plain ``lm_eval --output_path OUT --log_samples`` writes into one tidy table.

lm-eval 0.4.x writes, per run, ``OUT/<model_name_sanitized>/results_<date>.json`` (aggregated
metrics, the run's config) and one ``samples_<task>_<date>.jsonl`` per evaluated task (one line per
document, or per document and filter for generation tasks).  The oracle writes the same files with
``config.model == "oracle"``, so every run — ours or anyone's — is read the same way here.

Only the standard library: the report path must not import torch (nor lm_eval, which may).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

from roma_eval.errors import RomaEvalError
from roma_eval.results.columns import column_of
from roma_eval.results.provenance import (
    ARTEFACT_ARGS,
    TrainingCost,
    backend_of,
    export_record,
    find_artefact,
    method_of,
    parse_model_args,
    training_cost,
)
from roma_eval.results.routing import ANALYSIS_FILE, RoutingAnalysis, find_routing_analysis

# lm-eval's date_id: datetime.now().isoformat() with ":" replaced by "-".
_DATE = r"\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}(?:\.\d+)?"
_RESULTS_NAME = re.compile(rf"^(?P<stem>.+)_(?P<date>{_DATE})\.json$")
_SAMPLES_NAME = re.compile(rf"^samples_(?P<task>.+)_(?P<date>{_DATE})\.jsonl$")


@dataclass(frozen=True)
class Benchmark:
    """One column of a run: an lm-eval task or group, and the leaf tasks whose samples make it up."""

    name: str  # the paper column ("mmlu"), or the lm-eval task name when it maps to none
    suite: str  # "paper" (lm-eval's own tasks), "toy" (toy_<column>) or "other"
    task: str  # the lm-eval task or group name in the results file
    leaves: tuple[str, ...]


@dataclass(frozen=True)
class Score:
    """One row of the tidy table.  ``value`` and ``stderr`` are as lm-eval reports them (fractions for acc)."""

    model: str
    method: str
    benchmark: str
    metric: str  # lm-eval's key, "metric,filter"
    value: float
    n: int | None
    stderr: float | None
    suite: str
    task: str
    source: str  # the results file


@dataclass(frozen=True)
class SampleScore:
    value: float
    doc_hash: str | None  # lm-eval's hash of the document: another dataset when it differs
    prompt_hash: str | None = None  # of the prompt as the model saw it (few-shot examples, chat template included)
    requests: int | None = None  # lm-eval's requests for the document: one per choice for a multiple-choice task
    target: str | None = None  # the gold answer as lm-eval logged it


class Variant(NamedTuple):
    """What a run evaluated besides the model and the method (``Run.variant``)."""

    model_type: str  # lm-eval's --model
    model_args: tuple[tuple[str, str], ...]  # sorted, without pretrained=, artefact paths resolved
    limit: str
    chat_template: str | None


@dataclass
class Run:
    """One lm-eval results file and what it says about the run."""

    results_file: Path
    data: dict = field(repr=False)
    label: str | None = None
    source: str | None = None  # the PATH it was found under, as given ([LABEL=]PATH): names its row when needed
    _samples: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # (leaf, metric) -> samples

    @property
    def config(self) -> dict:
        return self.data["config"]

    @cached_property
    def model_args(self) -> dict:
        return parse_model_args(self.config.get("model_args"))

    @cached_property
    def model(self) -> str:
        """The evaluated model's name: the last component of its path or hub id (runs of one
        checkpoint from different directories then share a table).  lm-eval names a run with ``peft=`` after the
        adapter; its base model names it here, so the adapter's row joins the base model's table."""
        name = ((self.model_args.get("peft") and self.model_args.get("pretrained")) or self.exported_from
                or self.data.get("model_name") or self.model_args.get("pretrained") or self.config.get("model", "?"))
        return str(name).rstrip("/").split("/")[-1] or str(name)

    @cached_property
    def exported_from(self) -> str | None:
        """The base model of a ``pretrained=`` directory that `roma-eval export` wrote (its roma_export.json), so
        that a run of the export shares the base model's table wherever the export lies; None otherwise."""
        record = export_record(self.model_args, self.search_dirs) if self.model_args.get("pretrained") else None
        return str(record["base_model"]) if record and record.get("base_model") else None

    @property
    def backend(self) -> str:
        """The engine that computed the run's scores: "hf" (transformers), "vllm" or "sglang" (``backend_of``)."""
        return backend_of(str(self.config.get("model", "")))

    @cached_property
    def checkpoint(self) -> str:
        """The evaluated model's hub id or path as the run gave it (``pretrained=``; an export's base model), whose
        name says its variant."""
        return str(self.exported_from or self.model_args.get("pretrained") or self.data.get("model_name") or self.model)

    @cached_property
    def method(self) -> str:
        return self.label or method_of(str(self.config.get("model", "")), self.model_args, self.search_dirs)

    @property
    def search_dirs(self) -> list[Path]:
        """Where an artefact path in model_args (router_checkpoint=, peft=, reference=) is looked for first
        (``find_artefact``): the results file's directory and its parents, the tree lm_eval wrote."""
        return list(self.results_file.resolve().parents)[:4]

    @cached_property
    def variant(self) -> Variant:
        """What was evaluated besides the model and the method: lm-eval's model type and model_args (artefact
        paths resolved, so that one checkpoint reached by two paths is one variant), the limit and the chat
        template.  Runs of one method that differ in it are different rows of a report."""
        args = {key: str(value) for key, value in self.model_args.items() if key != "pretrained"}
        for key in ARTEFACT_ARGS.keys() & args.keys():
            if (found := find_artefact(args[key], self.search_dirs, ARTEFACT_ARGS[key])) is not None:
                args[key] = str(found.resolve())
        return Variant(str(self.config.get("model")), tuple(sorted(args.items())), str(self.config.get("limit")),
                       self.chat_template)

    @cached_property
    def training(self) -> TrainingCost | None:
        """What training the evaluated artefact cost, from the artefact's own records (None: unknown)."""
        return training_cost(str(self.config.get("model", "")), self.model_args, self.search_dirs,
                             self.label or None)

    @property
    def routing_analysis_file(self) -> Path:
        """Where `roma-eval analyze` writes the run's routing analysis: beside its results file."""
        return self.results_file.parent / ANALYSIS_FILE

    @cached_property
    def routing_analysis(self) -> RoutingAnalysis | None:
        """The run's routing analysis; None without one, or (a warning says why) when it cannot be read."""
        return find_routing_analysis(self.results_file)

    @property
    def date(self) -> float:
        date = self.data.get("date")
        return float(date) if isinstance(date, (int, float)) else self.results_file.stat().st_mtime

    @property
    def date_id(self) -> str | None:
        match = _RESULTS_NAME.match(self.results_file.name)
        return match["date"] if match else None

    @cached_property
    def benchmarks(self) -> list[Benchmark]:
        return list(_benchmarks(self.data))

    def metrics(self, benchmark: Benchmark) -> dict[str, float]:
        """The benchmark's numeric metrics, keyed "metric,filter"."""
        entry = self.data["results"].get(benchmark.task, {})
        return {key: float(value) for key, value in entry.items()
                if "," in key and "_stderr," not in key and _is_number(value)}

    def stderr(self, benchmark: Benchmark, metric: str) -> float | None:
        name, _, filt = metric.partition(",")
        value = self.data["results"].get(benchmark.task, {}).get(f"{name}_stderr,{filt}")
        return float(value) if _is_number(value) else None

    def n(self, benchmark: Benchmark, metric: str) -> int | None:
        entry = self.data["results"].get(benchmark.task, {})
        counted = entry.get("sample_count", {}).get(metric)
        if isinstance(counted, int):
            return counted
        n_samples = self.data.get("n-samples", {})
        counts = [n_samples.get(leaf, {}).get("effective") for leaf in benchmark.leaves]
        if counts and all(isinstance(c, int) for c in counts):
            return sum(counts)
        return entry.get("sample_len") if isinstance(entry.get("sample_len"), int) else None

    def settings(self, benchmark: Benchmark) -> dict[str, str | None]:
        """How lm-eval evaluated the benchmark, as its results file records it: few-shot examples ("n-shot"), the
        documents ``--limit`` kept ("limit"), the task version ("version") and the chat template ("chat template",
        ``chat_template``).  None where it is not recorded.

        Leaf tasks only: they hold the documents and prompts (the oracle records no group versions).  A group
        whose leaves differ shows their distinct values, e.g. "0/5".
        """
        return {"n-shot": self._per_leaf("n-shot", benchmark), "limit": self._limit(benchmark),
                "version": self._per_leaf("versions", benchmark), "chat template": self.chat_template}

    @property
    def chat_template(self) -> str | None:
        """"none" (plain prompts), "applied" (lm-eval's --apply_chat_template; ", few-shot as multi-turn" with
        --fewshot_as_multiturn), or None when the results file does not say (lm-eval before 0.4.3)."""
        if "chat_template" not in self.data:
            return None
        if not self.data["chat_template"]:
            return "none"
        return "applied" + (", few-shot as multi-turn" if self.data.get("fewshot_as_multiturn") else "")

    def _per_leaf(self, key: str, benchmark: Benchmark) -> str | None:
        recorded = self.data.get(key)
        values = [recorded.get(leaf) if isinstance(recorded, dict) else None for leaf in benchmark.leaves]
        return None if None in values else "/".join(dict.fromkeys(str(v) for v in values))

    def _limit(self, benchmark: Benchmark) -> str | None:
        """The limit in effect: "none" when every document was evaluated, else config.limit and the documents kept.

        Judged by lm-eval's n-samples (effective of original) where recorded, so a limit above a task's size,
        which changes nothing, does not count as a different setting.
        """
        limit = self.config.get("limit")
        shown = "none" if limit is None else f"{limit:g}" if _is_number(limit) else str(limit)
        counts = [self.data.get("n-samples", {}).get(leaf) for leaf in benchmark.leaves]
        if not all(isinstance(c, dict) and isinstance(c.get("effective"), int) and isinstance(c.get("original"), int)
                   for c in counts):
            return shown
        effective, original = sum(c["effective"] for c in counts), sum(c["original"] for c in counts)
        return "none" if effective == original else f"{shown} ({effective} of {original} documents)"

    @property
    def evaluation_seconds(self) -> float | None:
        """lm-eval's recorded wall-clock time of the whole run (model loading included)."""
        try:
            seconds = float(self.data.get("total_evaluation_time_seconds"))
        except (TypeError, ValueError):
            return None
        return seconds if seconds > 0 else None

    @property
    def documents(self) -> int:
        """How many documents the run evaluated, over all its tasks."""
        return sum(v["effective"] for v in self.data.get("n-samples", {}).values()
                   if isinstance(v, dict) and isinstance(v.get("effective"), int))

    def samples_file(self, task: str) -> Path:
        """The samples JSONL lm-eval wrote for ``task`` in this run (same date id as the results file)."""
        directory = self.results_file.parent
        if self.date_id:
            path = directory / f"samples_{task}_{self.date_id}.jsonl"
            if path.is_file():
                return path
        # Outputs written by other tools may carry another date; accept it only when unambiguous.
        matches = [p for p in directory.glob(f"samples_{task}_*.jsonl")
                   if (m := _SAMPLES_NAME.match(p.name)) and m["task"] == task]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise RomaEvalError(
                f"no samples_{task}_*.jsonl next to {self.results_file}; re-run lm_eval with --log_samples "
                f"(per-sample results are needed here)")
        raise RomaEvalError(
            f"several samples_{task}_*.jsonl in {directory} and none has the date of {self.results_file.name}; "
            f"keep one run per directory")

    def samples(self, benchmark: Benchmark, metric: str) -> dict[tuple[str, int], SampleScore]:
        """Per-document values of ``metric`` over the benchmark's leaf tasks, keyed (task, doc_id); each file is
        read once per metric (a report pairs every method with base)."""
        out: dict[tuple[str, int], SampleScore] = {}
        for leaf in benchmark.leaves:
            if (leaf, metric) not in self._samples:
                self._samples[(leaf, metric)] = dict(_read_samples(self.samples_file(leaf), metric))
            out.update(((leaf, doc_id), score) for doc_id, score in self._samples[(leaf, metric)].items())
        return out

    def output_type(self, leaf: str) -> str | None:
        """lm-eval's output_type of a leaf task ("multiple_choice", "generate_until", ...), as its config records it."""
        config = self.data.get("configs", {}).get(leaf)
        return config.get("output_type") if isinstance(config, dict) else None


def results_files(path: Path) -> list[Path]:
    """The lm-eval results JSON files at ``path`` (a file, or a directory searched recursively); may be empty."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*.json") if _RESULTS_NAME.match(p.name)) if path.is_dir() else []


def find_results_files(path: Path) -> list[Path]:
    """Like :func:`results_files`, but finding none is the user's error."""
    if not path.exists():
        raise RomaEvalError(f"{path} does not exist; pass a directory lm_eval --output_path wrote, or a results_*.json")
    if not (files := results_files(path)):
        raise RomaEvalError(f"no lm-eval results_<date>.json under {path}; pass the --output_path you gave lm_eval")
    return files


def load_run(results_file: Path, label: str | None = None, source: str | None = None) -> Run:
    """Read one results file, checking that it is what lm-eval writes."""
    try:
        data = json.loads(results_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RomaEvalError(f"{results_file} is not valid JSON ({exc.msg} at line {exc.lineno}); "
                            f"the run was probably interrupted: re-run lm_eval or remove the file") from None
    except OSError as exc:
        raise RomaEvalError(f"cannot read {results_file} ({exc.strerror})") from None
    for key in ("results", "config"):
        if not isinstance(data, dict) or not isinstance(data.get(key), dict):
            raise RomaEvalError(f"{results_file} is not an lm-eval results file (no '{key}' object); "
                                f"pass the results_<date>.json that lm_eval --output_path wrote")
    malformed = [key for key in ("group_subtasks", "n-samples") if not isinstance(data.get(key, {}), dict)]
    malformed += [f"results.{task}" for task, entry in data["results"].items() if not isinstance(entry, dict)]
    if malformed:
        raise RomaEvalError(f"{results_file} has a malformed {malformed[0]}; it was not written by lm-eval "
                            f"or was edited: re-run lm_eval")
    if not data["config"].get("model"):
        raise RomaEvalError(f"{results_file} has no config.model; cannot tell which method it evaluates: "
                            f"name it with LABEL=PATH")
    return Run(results_file=results_file, data=data, label=label, source=source)


def load_runs(specs: list[str]) -> list[Run]:
    """Runs from "[LABEL=]PATH" arguments; a label names the method of every run under PATH."""
    runs = []
    for spec in specs:
        label, path = split_label(spec)
        runs.extend(load_run(file, label, str(path)) for file in find_results_files(path))
    return runs


def split_label(spec: str) -> tuple[str | None, Path]:
    """"roma=out/roma" -> ("roma", Path("out/roma")); a path that itself contains "=" wins if it exists."""
    if "=" in spec and not Path(spec).exists():
        label, path = spec.split("=", 1)
        if label:
            return label, Path(path)
    return None, Path(spec)


def tidy(runs: list[Run]) -> list[Score]:
    """Every metric of every benchmark of every run, one row each."""
    return [Score(model=run.model, method=run.method, benchmark=bench.name, metric=metric, value=value,
                  n=run.n(bench, metric), stderr=run.stderr(bench, metric), suite=bench.suite,
                  task=bench.task, source=str(run.results_file))
            for run in runs for bench in run.benchmarks for metric, value in run.metrics(bench).items()]


def latest_cells(runs: list[Run]) -> dict[tuple[str, str, str, str], tuple[Run, Benchmark]]:
    """(model, method, suite, benchmark) -> the latest run that evaluated it: a re-run replaces older results."""
    cells: dict[tuple[str, str, str, str], tuple[Run, Benchmark]] = {}
    for run in sorted(runs, key=lambda r: r.date):
        for bench in run.benchmarks:
            cells[(run.model, run.method, bench.suite, bench.name)] = (run, bench)
    return cells


def _benchmarks(data: dict) -> Iterator[Benchmark]:
    """The paper's columns wherever they are, plus the outermost other tasks or groups with metrics.

    A group without metrics of its own (e.g. ``toy_suite``) is only a bundle: its members are used.
    """
    results, subtasks = data["results"], data.get("group_subtasks") or {}

    def leaves(name: str) -> tuple[str, ...]:
        children = subtasks.get(name)
        return tuple(leaf for child in children for leaf in leaves(child)) if children else (name,)

    def has_metrics(name: str) -> bool:
        return any("," in k and "_stderr," not in k for k in results.get(name, {}))

    for name in results:
        if mapped := column_of(name):
            yield Benchmark(name=mapped[1], suite=mapped[0], task=name, leaves=leaves(name))
    nested = {child for children in subtasks.values() for child in children}

    def others(name: str) -> Iterator[Benchmark]:
        if column_of(name):
            return
        if has_metrics(name):
            yield Benchmark(name=name, suite="other", task=name, leaves=leaves(name))
            return
        for child in subtasks.get(name, []):
            yield from others(child)

    for name in results:
        if name not in nested:
            yield from others(name)


def _read_samples(path: Path, metric: str) -> Iterator[tuple[int, SampleScore]]:
    """(doc_id, value) for one filter of one metric; lines without a "filter" (the oracle's) count as "none"."""
    name, _, filt = metric.partition(",")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise RomaEvalError(f"cannot read {path} ({exc.strerror})") from None
    found = False
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            sample = json.loads(line)
        except json.JSONDecodeError:
            raise RomaEvalError(f"line {number} of {path} is not valid JSON (a truncated file?); "
                                f"re-run lm_eval with --log_samples") from None
        if not isinstance(sample, dict) or not isinstance(sample.get("doc_id"), int):
            raise RomaEvalError(f"line {number} of {path} has no integer doc_id; it is not an lm-eval samples file")
        if sample.get("filter", "none") != filt:
            continue
        value = sample.get(name)
        if isinstance(value, bool):  # tools other than lm-eval may log correctness as true/false
            value = float(value)
        if not _is_number(value):
            raise RomaEvalError(f"line {number} of {path} has no numeric '{name}' (filter {filt}); "
                                f"choose another metric with --metric")
        found = True
        requests = sample.get("arguments")
        target = sample.get("target")
        yield sample["doc_id"], SampleScore(float(value), sample.get("doc_hash"), sample.get("prompt_hash"),
                                            len(requests) if isinstance(requests, (dict, list)) else None,
                                            None if target is None else str(target))
    if not found:
        raise RomaEvalError(f"{path} has no samples for metric {metric}; choose another metric with --metric")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

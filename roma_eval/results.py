"""Read what plain ``lm_eval --output_path OUT --log_samples`` writes into one tidy table.

lm-eval 0.4.x writes, per run, ``OUT/<model_name_sanitized>/results_<date>.json`` (aggregated
metrics, the run's config) and one ``samples_<task>_<date>.jsonl`` per evaluated task (one line per
document, or per document and filter for generation tasks).  The oracle writes the same files with
``config.model == "oracle"``, so every run — ours or anyone's — is read the same way here.

Only the standard library: the report path must not import torch (nor lm_eval, which may).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

from roma_eval.errors import RomaEvalError
from roma_eval.storage import read_json_object

# The paper's Table 1 columns, in the paper's order (arXiv 2511.07419, Table 1).
PAPER_COLUMNS = ("mmlu", "hellaswag", "arc_challenge", "arc_easy", "piqa", "winogrande", "boolq", "gsm8k")
TOY_PREFIX = "toy_"  # the toy suite names its tasks toy_<column>

# lm-eval metric keys ("metric,filter") that fill each column, in order of preference: a cell takes
# the first one its run reports.  The paper does not say which it used; lm-eval's common practice is
# acc_norm where length normalisation matters (HellaSwag, ARC, PIQA).  GSM8K is evaluated zero-shot
# in the paper, where a base model rarely writes lm-eval's "#### N" answer format, so the
# flexible-extract filter is the default.  `--metric COLUMN=METRIC[,FILTER]` overrides any of these.
DEFAULT_METRICS: dict[str, tuple[str, ...]] = {
    "mmlu": ("acc,none",),
    "hellaswag": ("acc_norm,none", "acc,none"),
    "arc_challenge": ("acc_norm,none", "acc,none"),
    "arc_easy": ("acc_norm,none", "acc,none"),
    "piqa": ("acc_norm,none", "acc,none"),
    "winogrande": ("acc,none",),
    "boolq": ("acc,none",),
    # first-number: the toy GSM8K's filter (tasks/toy/toy_gsm8k.yaml).
    "gsm8k": ("exact_match,flexible-extract", "exact_match,strict-match", "exact_match,first-number",
              "exact_match,none"),
}

# lm-eval model names that evaluate the unmodified model (with ``peft=``: the adapter's method).
BASE_MODELS = frozenset({"hf", "hf-auto", "huggingface", "vllm", "sglang"})
PEFT_MODEL = "hf-peft"  # roma-eval's hf for peft adapters (methods/peft_tuning/lm_eval.py)
# Files that say what trained an artefact: a router checkpoint's config (its training_config records the method;
# RoMA's records its regulariser) and a peft adapter's training record / config.
ROUTER_CONFIG, TRAINING_LOG = "router_config.json", "training_log.jsonl"  # the log: peft adapters too
ADAPTER_TRAINING, ADAPTER_CONFIG = "training_config.json", "adapter_config.json"
# Methods that train no parameters: their cost-table row has 0 trainable parameters.
UNTRAINED = frozenset({"base", "icl", "c3po", "oracle"})
# model_args naming a directory an evaluation read (a router checkpoint, a peft adapter, C3PO's reference set), and
# the file every such directory holds (how a copy of it is recognised inside a results tree).
ARTEFACT_ARGS = {"router_checkpoint": ROUTER_CONFIG, "peft": ADAPTER_CONFIG, "reference": "reference.json"}

logger = logging.getLogger(__name__)

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
        name = ((self.model_args.get("peft") and self.model_args.get("pretrained")) or self.data.get("model_name")
                or self.model_args.get("pretrained") or self.config.get("model", "?"))
        return str(name).rstrip("/").split("/")[-1] or str(name)

    @cached_property
    def checkpoint(self) -> str:
        """The evaluated model's hub id or path as the run gave it (``pretrained=``), whose name says its variant."""
        return str(self.model_args.get("pretrained") or self.data.get("model_name") or self.model)

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


def parse_model_args(model_args) -> dict:
    """lm-eval records model_args as a dict (0.4.13) or, in older versions, as the "k=v,k=v" command-line string."""
    if isinstance(model_args, dict):
        return model_args
    if not model_args:
        return {}
    pairs = (item.split("=", 1) for item in str(model_args).split(",") if item.strip())
    return {key.strip(): (value[0].strip() if value else "") for key, *value in pairs}


def method_of(model: str, model_args: dict, search_dirs: Sequence[Path] = ()) -> str:
    """The method a run evaluates, from lm-eval's ``--model`` and ``--model_args``.

    A "roma" run evaluates a router checkpoint, whose ``router_config.json`` says which method trained it
    (``router_method``: RoMA, Router Tuning, Oracle Tuning, Dense BP); without one it evaluates the pretrained
    routers, i.e. the base model.  ``hf`` (or ``hf-peft``) with ``peft=`` evaluates an adapter, whose own files say
    which method trained it (``adapter_method``: Prefix / Prompt Tuning).  Model types we do not know keep their own
    name ("icl", "c3po", "oracle").  Artefact paths are looked up by ``find_artefact``: inside the results tree
    (``search_dirs``) first, then as recorded.
    """
    model = model.lower()
    if model in BASE_MODELS or model == PEFT_MODEL:
        adapter = model_args.get("peft")
        return adapter_method(str(adapter), search_dirs) if adapter else "base"
    if model == "roma":
        checkpoint = model_args.get("router_checkpoint")
        return checkpoint_method(str(checkpoint), search_dirs) if checkpoint else "base"
    return model


def router_method(training_config: dict) -> str:
    """The method recorded in a router checkpoint's training_config: its "method" (Oracle Tuning, Dense BP), or for
    RoMA's own checkpoints "router_tuning" when nothing but the task loss trained them (regulariser none, or λ = 0:
    the paper's Router Tuning row), else "roma"."""
    if training_config.get("method"):
        return str(training_config["method"])
    if training_config.get("regulariser") == "none" or training_config.get("lam") == 0:
        return "router_tuning"
    return "roma"


def find_artefact(path: str, search_dirs: Sequence[Path] = (), marker: str | None = None) -> Path | None:
    """The directory an artefact path recorded in model_args (router_checkpoint=, peft=, reference=) names here.

    First inside the results tree: the longest tail of the recorded path that is a directory holding ``marker``
    (the file every such artefact has, ``ARTEFACT_ARGS``) below one of ``search_dirs`` (the results file's directory
    and its parents, nearest first), so that a copied or moved tree finds its own artefacts whether the path was
    recorded absolute or relative to the run's working directory.  Then the path as recorded (absolute, or relative
    to the working directory); None when neither exists.
    """
    recorded = Path(path).expanduser()
    parts = recorded.parts[1:] if recorded.is_absolute() else recorded.parts
    for start in range(len(parts)):
        tail = Path(*parts[start:])
        for directory in search_dirs:
            found = directory / tail
            if (found / marker).is_file() if marker else found.is_dir():
                return found
    return recorded if recorded.is_dir() else None


def same_model_args(recorded, wanted: str, results_file: Path) -> bool:
    """Whether a results file's recorded model_args are ``wanted`` (a "k=v,..." string), an artefact path counting as
    equal when the recorded one resolves from the results file (``find_artefact``) to the directory ``wanted`` names:
    a copied or moved results tree holds the same evaluation."""
    found, asked = parse_model_args(recorded), parse_model_args(wanted)
    if found.keys() != asked.keys():
        return False
    parents = list(results_file.resolve().parents)[:4]
    for key, value in asked.items():
        if key in ARTEFACT_ARGS and str(found[key]) != value:
            located = find_artefact(str(found[key]), parents, ARTEFACT_ARGS[key])
            if located is None or located.resolve() != Path(value).resolve():
                return False
        elif str(found[key]) != value:
            return False
    return True


def checkpoint_method(checkpoint: str, search_dirs: Sequence[Path] = ()) -> str:
    """The method that trained a router checkpoint; "roma" when its router_config.json cannot be read here."""
    directory = find_artefact(checkpoint, search_dirs, ROUTER_CONFIG)
    config = read_json_object(directory / ROUTER_CONFIG) if directory else None
    if config is None:
        logger.warning("router checkpoint %s: no readable %s here, so its method is taken to be RoMA; label the run "
                       "(LABEL=PATH) if it is another", checkpoint, ROUTER_CONFIG)
        return "roma"
    return router_method(config.get("training_config") or {})


def adapter_method(adapter: str, search_dirs: Sequence[Path] = ()) -> str:
    """The method that trained a peft adapter: roma-eval's training record, else peft's type ("prefix_tuning",
    "prompt_tuning", "lora", ...); "peft" when neither can be read here."""
    directory = find_artefact(adapter, search_dirs, ADAPTER_CONFIG)
    record = read_json_object(directory / ADAPTER_TRAINING) if directory else None
    if record and record.get("method"):
        return str(record["method"])
    config = read_json_object(directory / ADAPTER_CONFIG) if directory else None
    if config and config.get("peft_type"):
        return str(config["peft_type"]).lower()
    logger.warning("peft adapter %s: no readable %s here; label the run (LABEL=PATH)", adapter, ADAPTER_CONFIG)
    return "peft"


@dataclass(frozen=True)
class TrainingCost:
    """What training an evaluated artefact cost: its trainable parameters and the summed wall-clock seconds of its
    optimisation steps (training_log.jsonl; None when not recorded)."""

    trainable_parameters: int | None
    training_seconds: float | None = None


def _logged_seconds(path: Path) -> float | None:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        return sum(float(json.loads(line).get("seconds", 0.0)) for line in lines if line.strip())
    except (OSError, ValueError, AttributeError):
        return None


def training_cost(model: str, model_args: dict, search_dirs: Sequence[Path] = (),
                  label: str | None = None) -> TrainingCost | None:
    """The evaluated artefact's training cost: a router checkpoint's tuned router weights (layers × experts ×
    hidden), a peft adapter's recorded trainable parameters; 0 for methods that train nothing."""
    model = model.lower()
    checkpoint = model_args.get("router_checkpoint") if model == "roma" else None
    adapter = model_args.get("peft") if model in BASE_MODELS or model == PEFT_MODEL else None
    if checkpoint:
        directory = find_artefact(str(checkpoint), search_dirs, ROUTER_CONFIG)
        config = read_json_object(directory / ROUTER_CONFIG) if directory else None
        if config is None:
            return None
        try:
            parameters = len(config["layers"]) * int(config["num_experts"]) * int(config["hidden_size"])
        except (KeyError, TypeError, ValueError):
            parameters = None
        return TrainingCost(parameters, _logged_seconds(directory / TRAINING_LOG))
    if adapter:
        directory = find_artefact(str(adapter), search_dirs, ADAPTER_CONFIG)
        record = read_json_object(directory / ADAPTER_TRAINING) if directory else None
        if record is None:
            return None
        summary = record.get("summary") or {}
        return TrainingCost(summary.get("trainable_parameters"), _logged_seconds(directory / TRAINING_LOG))
    method = label or method_of(model, model_args)
    return TrainingCost(0) if method in UNTRAINED else None


def column_of(task: str) -> tuple[str, str] | None:
    """(suite, column) for an lm-eval task name that is one of the paper's benchmarks, else None."""
    if task in PAPER_COLUMNS:
        return "paper", task
    if task.startswith(TOY_PREFIX) and task[len(TOY_PREFIX):] in PAPER_COLUMNS:
        return "toy", task[len(TOY_PREFIX):]
    return None


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


def metric_preferences(overrides: dict[str, str] | None = None,
                       runs: list[Run] | None = None) -> dict[str, tuple[str, ...]]:
    """DEFAULT_METRICS with user overrides ("arc_easy" -> "acc" or "gsm8k" -> "exact_match,strict-match").

    With ``runs``, each override is checked against them first: a typo would otherwise be ignored (an
    unknown column) or blank the column (a metric no run has).
    """
    prefs = dict(DEFAULT_METRICS)
    reported = _reported_metrics(runs) if runs is not None and overrides else None
    for column, metric in (overrides or {}).items():
        key = metric if "," in metric else f"{metric},none"
        if reported is not None:
            _check_override(column, metric, key, reported)
        prefs[column] = (key,)
    return prefs


def _reported_metrics(runs: list[Run]) -> dict[str, set[str]]:
    """Column and lm-eval task name -> the metric keys ("metric,filter") its runs report."""
    reported: dict[str, set[str]] = {}
    for run in runs:
        for bench in run.benchmarks:
            for name in (bench.name, bench.task):
                reported.setdefault(name, set()).update(run.metrics(bench))
    return reported


def _check_override(column: str, metric: str, key: str, reported: dict[str, set[str]]) -> None:
    """Refuse ``--metric column=metric`` unless the column is the paper's or a benchmark of the runs, and some
    run reports ``key`` for it.  Some, not all: the oracle reports fewer metrics than lm-eval's filters give.
    A paper column no run has is left alone: there is nothing it could change or be checked against."""
    if column not in reported and column not in PAPER_COLUMNS:
        valid = list(PAPER_COLUMNS) + sorted(reported.keys() - set(PAPER_COLUMNS))
        raise RomaEvalError(f"--metric {column}={metric}: no column or task named {column!r}; choose among "
                            f"{', '.join(valid)}")
    if column in reported and key not in reported[column]:
        raise RomaEvalError(f"--metric {column}={metric}: no run reports {key!r} for {column}; choose among "
                            f"{', '.join(map(repr, sorted(reported[column])))}")


def wanted_metrics(prefs: dict[str, tuple[str, ...]], column: str, task: str | None = None) -> tuple[str, ...] | None:
    """The metrics preferred for a benchmark: those given for its lm-eval task (``--metric toy_arc_easy=acc``
    changes the toy table only), else those of its column; None for a benchmark without preferences."""
    return prefs.get(task) if task in prefs else prefs.get(column)


def choose_metric(available, column: str, prefs: dict[str, tuple[str, ...]], task: str | None = None) -> str | None:
    """The preferred metric among ``available`` for a column (or its task); for other benchmarks, the first reported."""
    available = list(available)
    if (wanted := wanted_metrics(prefs, column, task)) is not None:
        return next((m for m in wanted if m in available), None)
    return available[0] if available else None


def parse_metric_overrides(items: list[str] | None) -> dict[str, str]:
    """`--metric COLUMN=METRIC[,FILTER]` flags -> {column: metric}."""
    out = {}
    for item in items or []:
        column, sep, metric = item.partition("=")
        if not sep or not column or not metric:
            raise RomaEvalError(f"--metric {item!r} is not COLUMN=METRIC[,FILTER], e.g. arc_easy=acc "
                                f"or gsm8k=exact_match,strict-match")
        out[column] = metric
    return out


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

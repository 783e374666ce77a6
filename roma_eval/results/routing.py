"""A run's routing analysis: ``routing_analysis.json`` (version 1), which `roma-eval analyze` writes beside
lm-eval's results file, read for the report's routing section and `roma-eval check`'s routing gates.

Reading checks the format's name, its version and every field the readers use, so that the report never fails on a
file half-written by hand or by another version: :func:`read_routing_analysis` turns any defect into one
RomaEvalError naming the file and the field; :func:`find_routing_analysis` (the report's reader) turns it into a
warning and no analysis.  Only the standard library.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from roma_eval.errors import RomaEvalError

ANALYSIS_FILE = "routing_analysis.json"  # beside the run's results_<date>.json
FORMAT, VERSION = "roma-eval routing analysis", 1
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Spread:
    """A per-sample quantity over the analysed samples."""

    mean: float
    p10: float
    median: float
    p90: float


@dataclass(frozen=True)
class Movement:
    """Per sample ||r_run − r_base||₂ of one layer's routing weights at the last context token."""

    median: float
    p90: float


@dataclass(frozen=True)
class LayerRouting:
    """One analysed MoE layer: expert load (shares of the top-k selections), dead and overloaded experts, entropies."""

    load_last: tuple[float, ...]  # at each sample's last context token
    load_context: tuple[float, ...]  # over all context tokens
    dead_experts: tuple[int, ...]  # never selected at any context token of any sample
    overloaded_experts: tuple[int, ...]  # load_context above the analysis' overload_factor / num_experts
    load_entropy: float  # of load_context, / log(num_experts)
    routing_entropy: Spread  # per sample, last context token, / log(num_experts)
    topk_margin: Spread  # k-th minus (k+1)-th selection score, last context token
    movement: Movement | None  # None for the base model itself


@dataclass(frozen=True)
class Alignment:
    """The manifold hypothesis as numbers: how far samples' neighbours in embedding space are neighbours in routing
    space (kNN overlap), and how much more alike the routing of embedding neighbours is than that of random pairs."""

    n: int
    knn_overlap: float
    knn_overlap_interval: tuple[float, float]  # 95% bootstrap over samples
    neighbour_similarity: float
    random_similarity: float
    similarity_gap: float  # neighbour_similarity − random_similarity
    similarity_gap_interval: tuple[float, float]


@dataclass(frozen=True)
class RoutingAnalysis:
    path: Path
    model: str
    method: str | None
    scoring: str
    tasks: tuple[str, ...]
    limit: float | None
    n_samples: int
    layers: tuple[int, ...]
    num_experts: int
    top_k: int
    settings: dict  # k, embedder, bootstrap, seed, overload_factor
    per_layer: dict[int, LayerRouting]
    overall: Alignment | None  # None: too few samples
    per_task: dict[str, Alignment]
    task_similarity: dict[str, float | None]  # mean cosine of routing pairs "within" a task and "across" tasks
    routing_dump: str | None  # the .npz beside it (the report's RoutingDump)

    @property
    def dump_path(self) -> Path | None:
        return self.path.parent / self.routing_dump if self.routing_dump else None


class _Malformed(Exception):
    """A field that is missing or of the wrong kind: its dotted name and what it should be."""


def read_routing_analysis(path: Path) -> RoutingAnalysis:
    """Read and check one routing_analysis.json; any defect is one RomaEvalError naming the file."""
    fix = f"re-run `roma-eval analyze {path.parent}` to rewrite it"
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise RomaEvalError(f"cannot read {path} ({exc.strerror})") from None
    except ValueError as exc:
        raise RomaEvalError(f"{path} is not valid JSON ({exc}); {fix}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise RomaEvalError(f"{path} is not a routing analysis (no \"format\": \"{FORMAT}\"); {fix}")
    if data.get("version") != VERSION:
        raise RomaEvalError(f"{path} is routing analysis version {data.get('version')!r}, this roma-eval reads "
                            f"version {VERSION}; {fix}")
    try:
        return _analysis(Path(path), data)
    except _Malformed as exc:
        raise RomaEvalError(f"{path}: {exc}; {fix}") from None


def find_routing_analysis(results_file: Path) -> RoutingAnalysis | None:
    """The analysis beside a results file; None when there is none, or (with a one-line warning) when it cannot be
    read."""
    path = Path(results_file).parent / ANALYSIS_FILE
    if not path.is_file():
        return None
    try:
        return read_routing_analysis(path)
    except RomaEvalError as exc:
        logger.warning("%s; its run gets no routing figures", exc)
        return None


def _analysis(path: Path, data: dict) -> RoutingAnalysis:
    num_experts = _integer(data, "num_experts", minimum=1)
    layers = tuple(_integer_list(data, "layers"))
    per_layer_data = _object(data, "per_layer")
    if sorted(per_layer_data) != sorted(str(layer) for layer in layers):
        raise _Malformed(f"per_layer has layers {', '.join(per_layer_data) or 'none'}, \"layers\" says "
                         f"{', '.join(map(str, layers)) or 'none'}")
    per_layer = {layer: _layer(per_layer_data[str(layer)], f"per_layer.{layer}", num_experts) for layer in layers}
    alignment = _object(data, "alignment")
    per_task = {task: _alignment(value, f"alignment.per_task.{task}")
                for task, value in _object(alignment, "per_task", "alignment").items() if value is not None}
    overall = None if alignment.get("overall") is None else _alignment(alignment["overall"], "alignment.overall")
    settings = _object(data, "settings")
    _integer(settings, "k", "settings", minimum=1)
    dump = data.get("routing_dump")
    if dump is not None and (not isinstance(dump, str) or Path(dump).name != dump):
        raise _Malformed("routing_dump is not a file name beside it")
    limit, method = data.get("limit"), data.get("method")
    if limit is not None and not _is_number(limit):
        raise _Malformed("limit is not a number or null")
    return RoutingAnalysis(
        path=path, model=_string(data, "model"), method=method if isinstance(method, str) else None,
        scoring=_string(data, "scoring"), tasks=tuple(_string_list(data, "tasks")), limit=limit,
        n_samples=_integer(data, "n_samples"), layers=layers, num_experts=num_experts,
        top_k=_integer(data, "top_k", minimum=1), settings=settings, per_layer=per_layer,
        overall=overall, per_task=per_task, task_similarity=_task_similarity(data), routing_dump=dump)


def _task_similarity(data: dict) -> dict[str, float | None]:
    found = data.get("task_similarity") or {}
    if not isinstance(found, dict) or not all(found.get(key) is None or _is_number(found[key])
                                              for key in ("within", "across")):
        raise _Malformed("task_similarity is not an object of numbers (or null) \"within\" and \"across\"")
    return {key: None if found.get(key) is None else float(found[key]) for key in ("within", "across")}


def _layer(data, where: str, num_experts: int) -> LayerRouting:
    if not isinstance(data, dict):
        raise _Malformed(f"{where} is not an object")
    movement = data.get("movement")
    if movement is not None:
        movement = Movement(*(_number(_object(data, "movement", where), key, f"{where}.movement")
                              for key in ("median", "p90")))
    return LayerRouting(
        load_last=_load(data, "load_last", where, num_experts),
        load_context=_load(data, "load_context", where, num_experts),
        dead_experts=_experts(data, "dead_experts", where, num_experts),
        overloaded_experts=_experts(data, "overloaded_experts", where, num_experts),
        load_entropy=_number(data, "load_entropy", where), routing_entropy=_spread(data, "routing_entropy", where),
        topk_margin=_spread(data, "topk_margin", where), movement=movement)


def _alignment(data, where: str) -> Alignment:
    if not isinstance(data, dict):
        raise _Malformed(f"{where} is not an object")
    numbers = {key: _number(data, key, where) for key in ("knn_overlap", "neighbour_similarity", "random_similarity",
                                                          "similarity_gap")}
    intervals = {key: _interval(data, key, where) for key in ("knn_overlap_interval", "similarity_gap_interval")}
    return Alignment(n=_integer(data, "n", where), **numbers, **intervals)


def _spread(data: dict, key: str, where: str) -> Spread:
    found = _object(data, key, where)
    return Spread(*(_number(found, name, f"{where}.{key}") for name in ("mean", "p10", "median", "p90")))


def _load(data: dict, key: str, where: str, num_experts: int) -> tuple[float, ...]:
    values = data.get(key)
    if not isinstance(values, list) or len(values) != num_experts or not all(map(_is_number, values)):
        raise _Malformed(f"{where}.{key} is not a list of num_experts ({num_experts}) numbers")
    return tuple(float(v) for v in values)


def _experts(data: dict, key: str, where: str, num_experts: int) -> tuple[int, ...]:
    values = data.get(key)
    if not isinstance(values, list) or not all(_is_int(v) and 0 <= v < num_experts for v in values):
        raise _Malformed(f"{where}.{key} is not a list of expert indices below num_experts ({num_experts})")
    return tuple(values)


def _interval(data: dict, key: str, where: str) -> tuple[float, float]:
    value = data.get(key)
    if not (isinstance(value, list) and len(value) == 2 and all(map(_is_number, value)) and value[0] <= value[1]):
        raise _Malformed(f"{where}.{key} is not an interval [low, high]")
    return float(value[0]), float(value[1])


def _object(data: dict, key: str, where: str = "") -> dict:
    if not isinstance(value := data.get(key), dict):
        raise _Malformed(f"{_name(where, key)} is not an object")
    return value


def _number(data: dict, key: str, where: str = "") -> float:
    if not _is_number(value := data.get(key)):
        raise _Malformed(f"{_name(where, key)} is not a finite number")
    return float(value)


def _integer(data: dict, key: str, where: str = "", minimum: int = 0) -> int:
    if not _is_int(value := data.get(key)) or value < minimum:
        raise _Malformed(f"{_name(where, key)} is not an integer of at least {minimum}")
    return value


def _integer_list(data: dict, key: str) -> list[int]:
    if not isinstance(values := data.get(key), list) or not values or not all(map(_is_int, values)):
        raise _Malformed(f"{key} is not a list of layer indices")
    return values


def _string(data: dict, key: str) -> str:
    if not isinstance(value := data.get(key), str):
        raise _Malformed(f"{key} is not a string")
    return value


def _string_list(data: dict, key: str) -> list[str]:
    if not isinstance(values := data.get(key), list) or not all(isinstance(v, str) for v in values):
        raise _Malformed(f"{key} is not a list of task names")
    return values


def _name(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

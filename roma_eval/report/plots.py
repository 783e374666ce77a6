"""Figures: grouped bars per benchmark and method, and the routing-manifold figure.

The manifold figure is the analogue of RoMA's Figure 3 (arXiv 2511.07419): the same samples placed
by their task embedding and by their routing weights, coloured by task; aligned manifolds put
same-task samples together in both panels.  It is drawn from routing dumps, ``routing_*.npz`` files
next to a run's results JSON with arrays ``embedding`` (N×D), ``routing`` (N×R) and ``task`` (N
strings).  Projection is PCA (numpy SVD): UMAP is not a dependency.

matplotlib's object API is used (no pyplot), so no global state and no GUI backend is involved.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from roma_eval.errors import RomaEvalError
from roma_eval.report.tables import AVERAGE, COLUMN_NAMES, Grid, method_name

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ROUTING_DUMP_GLOB = "routing_*.npz"


@dataclass(frozen=True)
class FigureSpec:
    """A figure to draw at write time (so nothing is drawn before the overwrite checks pass)."""

    name: str  # file stem under plots/
    title: str
    draw: Callable[[], Figure]


@dataclass(frozen=True)
class RoutingDump:
    embedding: np.ndarray
    routing: np.ndarray
    task: np.ndarray


def bar_chart(grid: Grid, name: str) -> FigureSpec:
    return FigureSpec(name=name, title=f"{grid.title}: scores per benchmark", draw=lambda: _draw_bars(grid))


def manifold_figure(model: str, dumps: dict[str, RoutingDump], name: str) -> FigureSpec:
    return FigureSpec(name=name, title=f"{model}: task-embedding vs routing manifold (PCA)",
                      draw=lambda: _draw_manifold(model, dumps))


def write_routing_dump(path: Path, dump: RoutingDump) -> Path:
    """Write ``dump`` where ``read_routing_dump`` and the report find it (``routing_*.npz`` beside a results JSON)."""
    import io

    from roma_eval.storage import write_atomic

    buffer = io.BytesIO()
    np.savez_compressed(buffer, embedding=dump.embedding, routing=dump.routing, task=dump.task.astype(str))
    return write_atomic(path, buffer.getvalue())


def read_routing_dump(path: Path) -> RoutingDump:
    """Read and check one dump; never unpickles (allow_pickle=False)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if missing := [key for key in ("embedding", "routing", "task") if key not in data.files]:
                raise RomaEvalError(f"{path} has no array {', '.join(missing)}; a routing dump needs embedding, "
                                    f"routing and task")
            arrays = {key: data[key] for key in ("embedding", "routing", "task")}
    except (OSError, ValueError) as exc:
        raise RomaEvalError(f"{path} is not a readable .npz routing dump ({exc}); regenerate it or remove it") from None
    n = len(arrays["task"])
    if any(arrays[key].ndim != 2 or len(arrays[key]) != n for key in ("embedding", "routing")):
        raise RomaEvalError(f"{path}: embedding and routing must be 2-D with one row per task label ({n})")
    return RoutingDump(arrays["embedding"].astype(float), arrays["routing"].astype(float), arrays["task"].astype(str))


def pca_2d(x: np.ndarray) -> np.ndarray:
    """The first two principal-component scores of the rows of ``x`` (signs fixed, so output is deterministic)."""
    centred = x - x.mean(axis=0)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    components = vt[:2]
    signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
    scores = centred @ (components * signs[:, None]).T
    return np.pad(scores, ((0, 0), (0, 2 - scores.shape[1])))  # a 1-D cloud still gets two axes


def _new_figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise RomaEvalError("figures need matplotlib: pip install 'roma-eval[plots]', or pass --no-plots") from None
    return Figure(figsize=(width, height), layout="constrained")


def _draw_bars(grid: Grid):
    methods = grid.methods
    labels = [COLUMN_NAMES.get(c, c) for c in grid.columns]
    values = [[grid.value(m, c) for c in grid.columns] for m in methods]
    if any(grid.average(m) is not None for m in methods):
        labels.append(AVERAGE)
        for row, m in zip(values, methods, strict=True):
            row.append(grid.average(m))
    fig = _new_figure(max(6.0, 1.1 * len(labels)), 3.6)
    ax = fig.subplots()
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(labels))
    for i, (m, row) in enumerate(zip(methods, values, strict=True)):
        heights = [np.nan if v is None else v for v in row]  # a missing cell is a gap, not a zero bar
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, heights, width, label=method_name(m))
    ax.set_xticks(x, labels)
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, 100)
    ax.set_title(grid.title)
    fig.legend(loc="outside right upper", fontsize="small")  # outside: never hides a bar
    return fig


def _draw_manifold(model: str, dumps: dict[str, RoutingDump]):
    tasks = sorted({t for d in dumps.values() for t in d.task})
    colours = {t: f"C{i % 10}" for i, t in enumerate(tasks)}
    fig = _new_figure(8.0, 3.4 * len(dumps))
    axes = fig.subplots(len(dumps), 2, squeeze=False)
    for (method, dump), row in zip(dumps.items(), axes, strict=True):
        for ax, data, what in ((row[0], dump.embedding, "task embedding"), (row[1], dump.routing, "routing weights")):
            points = pca_2d(data)
            for t in tasks:
                mask = dump.task == t
                ax.scatter(points[mask, 0], points[mask, 1], s=10, color=colours[t], label=t)
            ax.set_title(f"{method_name(method)}: {what}")
            ax.set_xlabel("PC 1")
            ax.set_ylabel("PC 2")
    axes[0][1].legend(fontsize="small", markerscale=1.5)
    fig.suptitle(f"{model}: task-embedding vs routing manifold")
    return fig

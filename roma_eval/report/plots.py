"""Figures: grouped bars per benchmark and method, the routing-manifold figure and the expert-load heatmaps.

The bars carry each method's paired interval against base (the Δ table's, placed on the method's score; base has
none of its own) and a dashed line at each benchmark's chance level.

The manifold figure is the analogue of RoMA's Figure 3 (arXiv 2511.07419): the same samples placed
by their task embedding and by their routing weights, coloured by task; aligned manifolds put
same-task samples together in both panels.  It is drawn from routing dumps, ``routing_*.npz`` files
next to a run's results JSON with arrays ``embedding`` (N×D), ``routing`` (N×R) and ``task`` (N
strings), which `roma-eval analyze` writes (``roma_eval.analysis.dump``).  Projection is PCA by an
eigendecomposition of the D×D covariance (D = embedding or routing width, small), not an SVD of the N×D data: the
same axes, ~10x faster on a report's few thousand samples (bench/NOTES.md); UMAP is not a dependency.  The routing
panels of every method share one basis, fitted once on all of them, so that base and a tuned router can be compared
by eye.

matplotlib's object API is used (no pyplot), so no global state and no GUI backend is involved.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

# re-exported: the report and its tests read and write dumps through here
from roma_eval.analysis.dump import RoutingDump, read_routing_dump, write_routing_dump  # noqa: F401
from roma_eval.errors import RomaEvalError
from roma_eval.registry import label
from roma_eval.report.tables import AVERAGE, AVERAGE_KEY, COLUMN_NAMES, LEVEL, Grid

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from roma_eval.results import RoutingAnalysis

ROUTING_DUMP_GLOB = "routing_*.npz"


@dataclass(frozen=True)
class FigureSpec:
    """A figure to draw at write time (so nothing is drawn before the overwrite checks pass)."""

    name: str  # file stem under plots/
    title: str
    draw: Callable[[], Figure]


def bar_chart(grid: Grid, name: str) -> FigureSpec:
    caption = f"{grid.title}: scores per benchmark"
    if grid.comparisons:
        caption += f"; error bars: the {LEVEL} paired interval of method − base, placed on the method's score"
    if grid.chance:
        caption += "; dashed: chance"
    return FigureSpec(name=name, title=caption, draw=lambda: _draw_bars(grid))


def manifold_figure(model: str, dumps: dict[str, RoutingDump], name: str) -> FigureSpec:
    return FigureSpec(name=name, title=f"{model}: task-embedding vs routing manifold (PCA)",
                      draw=lambda: _draw_manifold(model, dumps))


@dataclass(frozen=True)
class PCABasis:
    mean: np.ndarray
    components: np.ndarray  # (2, D), each unit-norm, signs fixed (largest-magnitude entry positive)

    def project(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) @ self.components.T


def pca_basis(x: np.ndarray) -> PCABasis:
    """The first two principal axes of the rows of ``x`` (a 1-D cloud gets a zero second axis)."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=0)
    covariance = np.atleast_2d(np.cov(x - mean, rowvar=False))
    _, vectors = np.linalg.eigh(covariance)  # ascending eigenvalues
    components = vectors[:, ::-1][:, :2].T
    signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
    components = components * signs[:, None]
    return PCABasis(mean, np.pad(components, ((0, 2 - len(components)), (0, 0))))


def pca_2d(x: np.ndarray) -> np.ndarray:
    """The first two principal-component scores of the rows of ``x`` (signs fixed, so output is deterministic)."""
    return pca_basis(x).project(x)


def _new_figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise RomaEvalError("figures need matplotlib: pip install 'roma-eval[plots]', or pass --no-plots") from None
    return Figure(figsize=(width, height), layout="constrained")


def _draw_bars(grid: Grid):
    methods = grid.methods
    keys = list(grid.columns)
    if any(grid.average(m) is not None for m in methods):
        keys.append(AVERAGE_KEY)
    labels = [AVERAGE if k == AVERAGE_KEY else COLUMN_NAMES.get(k, k) for k in keys]
    fig = _new_figure(max(6.0, 1.1 * len(labels)), 3.8)
    ax = fig.subplots()
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(labels))
    for i, m in enumerate(methods):
        heights = [_score(grid, m, k) for k in keys]
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, [np.nan if v is None else v for v in heights], width,
               yerr=_error_bars(grid, m, keys, heights), capsize=2, error_kw={"elinewidth": 0.8},
               label=grid.row_name(m))  # a missing cell is a gap, not a zero bar
    chance = [grid.chance.get(k) for k in grid.columns]
    if AVERAGE_KEY in keys:
        chance.append(sum(chance) / len(chance) if None not in chance else None)
    label = "chance"  # one legend entry for all the benchmarks' lines
    for j, level in enumerate(chance):
        if level is not None:
            ax.hlines(level, x[j] - 0.45, x[j] + 0.45, colors="black", linestyles="dashed", linewidth=1, label=label)
            label = None
    ax.set_xticks(x, labels)
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, 105)
    ax.set_title(grid.title)
    fig.legend(loc="outside right upper", fontsize="small")  # outside: never hides a bar
    return fig


def _score(grid: Grid, row: str, key: str) -> float | None:
    return grid.average(row) if key == AVERAGE_KEY else grid.value(row, key)


def _error_bars(grid: Grid, row: str, keys: list[str], heights: list[float | None]) -> np.ndarray | None:
    """(2, columns) distances below and above each bar to its paired interval against base: the interval of
    method − base is [lo, hi], so on the score scale the bar spans base + lo .. base + hi; NaN (nothing drawn) where
    there is no interval, None for a row without any (base)."""
    base = grid.row_of("base")
    out = np.full((2, len(keys)), np.nan)  # NaN: no bar drawn
    for j, (key, height) in enumerate(zip(keys, heights, strict=True)):
        comparison = grid.comparisons.get(row, {}).get(key)
        reference = _score(grid, base, key) if base else None
        if comparison is None or height is None or reference is None:
            continue
        low, high = reference + comparison.interval[0], reference + comparison.interval[1]
        out[:, j] = max(0.0, height - low), max(0.0, high - height)
    return None if np.isnan(out).all() else out


def _draw_manifold(model: str, dumps: dict[str, RoutingDump]):
    """The task embedding once (the same samples for every method), then each method's routing, all routing panels
    in one PCA basis fitted on every method's routing together; the legend sits outside the panels."""
    tasks = sorted({t for d in dumps.values() for t in d.task})
    colours = {t: f"C{i % 10}" for i, t in enumerate(tasks)}
    routing_basis = pca_basis(np.concatenate([d.routing for d in dumps.values()]))
    first = next(iter(dumps.values()))
    panels = [("task embedding", pca_2d(first.embedding), first.task)]
    panels += [(f"{label(method)}: routing weights", routing_basis.project(d.routing), d.task)
               for method, d in dumps.items()]
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    fig = _new_figure(3.2 * columns + 1.6, 3.0 * rows)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, (title, points, labels) in zip(axes, panels):
        for t in tasks:
            mask = labels == t
            ax.scatter(points[mask, 0], points[mask, 1], s=8, color=colours[t], label=t)
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize="small", markerscale=1.5)
    fig.suptitle(f"{model}: task-embedding vs routing manifold (routing: one PCA basis for every method)")
    return fig


def load_heatmaps(model: str, analyses: dict[str, RoutingAnalysis], name: str) -> FigureSpec:
    """The routing section's expert-load figure: one panel per row (its name -> its routing analysis)."""
    return FigureSpec(name=name, title=f"{model}: expert load per analysed layer (each expert's share of the top-k "
                                       f"selections over all context tokens, relative to an even share; ×: dead)",
                      draw=lambda: _draw_load_heatmaps(model, analyses))


def load_matrix(analysis: RoutingAnalysis) -> np.ndarray:
    """layers × experts: load_context relative to an even share (1: the expert gets 1 / num_experts of the load)."""
    return np.array([analysis.per_layer[layer].load_context for layer in analysis.layers]) * analysis.num_experts


def _draw_load_heatmaps(model: str, analyses: dict[str, RoutingAnalysis]):
    """One heatmap per row, stacked, on one colour scale (0 to the largest load of any row); dead experts crossed."""
    matrices = {row: load_matrix(analysis) for row, analysis in analyses.items()}
    top = max(float(m.max()) for m in matrices.values()) or 1.0
    heights = [m.shape[0] + 2 for m in matrices.values()]  # a panel's title and ticks need room too
    widest = max(m.shape[1] for m in matrices.values())
    fig = _new_figure(min(14.0, 3.5 + 0.12 * widest), 0.3 * sum(heights) + 0.8)
    axes = fig.subplots(len(matrices), 1, squeeze=False, height_ratios=heights).ravel()
    for ax, (row, matrix) in zip(axes, matrices.items()):
        analysis = analyses[row]
        image = ax.imshow(matrix, aspect="auto", cmap="viridis", vmin=0.0, vmax=top, interpolation="nearest")
        dead = [(expert, i) for i, layer in enumerate(analysis.layers)
                for expert in analysis.per_layer[layer].dead_experts]
        if dead:
            ax.scatter(*zip(*dead, strict=True), marker="x", color="red", s=16, linewidths=1)
        ax.set_yticks(range(len(analysis.layers)), [f"L{layer}" for layer in analysis.layers])
        ax.set_title(f"{row}: {len(dead)} dead", fontsize="medium", loc="left")
    axes[-1].set_xlabel("expert")
    fig.colorbar(image, ax=list(axes), label="load relative to an even share")
    fig.suptitle(f"{model}: expert load over all context tokens")
    return fig

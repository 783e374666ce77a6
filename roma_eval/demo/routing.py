"""The demo's routing stage: the pipeline's (`roma-eval analyze` of base, Router Tuning and RoMA: one load of the toy
model), then per method the manifold alignment with its 95% intervals (the paper's Figure 3 question: do samples
that mean similar things get similar routing?) and how far each method moved the routing from base, beside how far
C3PO moved its pathways.  C3PO has no single routing to analyse: it re-mixes the routing of every test prompt."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from roma_eval import registry
from roma_eval.analysis.runs import ANALYSIS_FILE
from roma_eval.demo.context import DemoContext
from roma_eval.pipeline import stages


def _analyses(ctx: DemoContext) -> dict[str, Path]:
    """method -> the directory of its analysed run, for the rows that ran and have one routing."""
    found = {}
    for method in registry.NAMES:
        if method in ctx.columns and method in registry.ROUTED:
            results = stages.evaluation_of(ctx, method)
            if results is not None and (results.parent / ANALYSIS_FILE).is_file():
                found[method] = results.parent
    return found


def alignment_line(method: str, analysis: dict) -> str:
    overall = analysis["alignment"]["overall"]
    (low, high), (gap_low, gap_high) = overall["knn_overlap_interval"], overall["similarity_gap_interval"]
    return (f"routing alignment ({method}, layers {analysis['layers']}, {overall['n']} samples, k={overall['k']} "
            f"MiniLM neighbours): kNN overlap {overall['knn_overlap']:.3f} [{low:.3f}, {high:.3f}] (chance "
            f"{overall['knn_overlap_chance']:.3f}); cos(r_i, r_j) neighbours {overall['neighbour_similarity']:.3f} vs "
            f"random pairs {overall['random_similarity']:.3f}, gap {overall['similarity_gap']:+.3f} "
            f"[{gap_low:+.3f}, {gap_high:+.3f}]")


def movement_line(ctx: DemoContext, runs: dict[str, Path]) -> str | None:
    """‖r − r_base‖ per evaluation prompt (every analysed layer concatenated), from the routing dumps (same samples,
    same order), for each tuned row; C3PO's ‖ω − ω0‖ beside it when its stage recorded one."""
    from roma_eval.analysis.dump import DUMP_NAME, read_routing_dump
    from roma_eval.demo.c3po import MOVEMENT

    if "base" not in runs or len(runs) < 2:
        return None
    base = read_routing_dump(runs["base"] / DUMP_NAME).routing
    moved = [f"{registry.label(m)} median "
             f"{np.median(np.linalg.norm(read_routing_dump(d / DUMP_NAME).routing - base, axis=1)):.3f}"
             for m, d in runs.items() if m != "base"]
    line = (f"routing movement from base, ‖r − r_base‖ over {len(base)} evaluation prompts (analysed layers "
            f"concatenated, L2): {', '.join(moved)}")
    c3po = ctx.stage_dir("c3po") / MOVEMENT
    if c3po.is_file():
        line += f"; C3PO's pathways ‖ω − ω0‖ median {json.loads(c3po.read_text())['moved']['median']:.4f}"
    return line


def routing_stage(ctx: DemoContext) -> list[str]:
    commands = stages.routing_stage(ctx, [m for m in registry.NAMES if m in ctx.columns])
    runs = _analyses(ctx)
    for method, directory in runs.items():
        ctx.notes.append(alignment_line(method, json.loads((directory / ANALYSIS_FILE).read_text())))
    if line := movement_line(ctx, runs):
        ctx.notes.append(line)
    return commands

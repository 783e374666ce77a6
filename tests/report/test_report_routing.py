"""The report's routing section and `roma-eval check`'s routing gates, read from routing_analysis.json files made
here to the format `roma-eval analyze` writes (version 1), beside copies of the committed lm-eval runs."""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from markupsafe import escape

from roma_eval.analysis.dump import RoutingDump, write_routing_dump
from roma_eval.report.build import build_report
from roma_eval.report.render import write_report
from roma_eval.results import ANALYSIS_FILE, load_runs, read_routing_analysis

LAYERS, EXPERTS, TOP_K, K = (2, 3), 8, 2, 10
TASKS = ("toy_arc_easy", "toy_boolq", "toy_gsm8k", "toy_mmlu_colour", "toy_mmlu_math")
DUMP = "routing_analysis_dump.npz"  # not routing_*.npz: the report must find it through the analysis


def analysis(method: str, seed: int, dead: dict[int, list[int]] | None = None) -> dict:
    """A routing analysis as `roma-eval analyze` writes it, with random but consistent numbers: the load of a dead
    expert is 0, overloaded experts and the load entropy follow from the load, intervals contain their value."""
    rng = np.random.default_rng(seed)

    def spread():
        p10, median, p90 = np.sort(rng.uniform(0.05, 0.95, 3))
        return {"mean": float(rng.uniform(p10, p90)), "p10": float(p10), "median": float(median), "p90": float(p90)}

    def alignment(n):
        knn, gap = rng.uniform(0.1, 0.8), rng.uniform(-0.1, 0.3)
        random_similarity = rng.uniform(0.2, 0.5)
        return {"n": n, "knn_overlap": float(knn), "knn_overlap_interval": [float(knn - 0.04), float(knn + 0.05)],
                "neighbour_similarity": float(random_similarity + gap), "random_similarity": float(random_similarity),
                "similarity_gap": float(gap), "similarity_gap_interval": [float(gap - 0.03), float(gap + 0.02)]}

    per_layer = {}
    for layer in LAYERS:
        loads = []
        for _ in range(2):  # last token, context
            load = rng.random(EXPERTS) ** 3
            load[(dead or {}).get(layer, [])] = 0.0
            loads.append(load / load.sum())
        context = loads[1]
        per_layer[str(layer)] = {
            "load_last": loads[0].tolist(), "load_context": context.tolist(),
            "dead_experts": sorted((dead or {}).get(layer, [])),
            "overloaded_experts": np.flatnonzero(context > 2.0 / EXPERTS).tolist(),
            "load_entropy": float(-(context[context > 0] * np.log(context[context > 0])).sum() / math.log(EXPERTS)),
            "routing_entropy": spread(), "topk_margin": spread(),
            "movement": None if method == "base" else {"median": float(rng.uniform(0, 1)),
                                                       "p90": float(rng.uniform(1, 2))}}
    return {
        "format": "roma-eval routing analysis", "version": 1, "model": "tiny-olmoe",
        "router_checkpoint": None if method == "base" else "ckpt", "method": method, "model_type": "olmoe",
        "scoring": "softmax", "tasks": list(TASKS), "limit": None, "n_samples": 88, "layers": list(LAYERS),
        "num_experts": EXPERTS, "top_k": TOP_K,
        "settings": {"k": K, "embedder": "sentence-transformers/all-MiniLM-L6-v2", "bootstrap": 1000, "seed": 0,
                     "overload_factor": 2.0},
        "per_layer": per_layer,
        "alignment": {"overall": alignment(88),
                      "per_task": {task: alignment(20) for task in ("toy_boolq", "toy_mmlu_math", "toy_arc_easy")}},
        "task_similarity": {"within": float(rng.uniform(0.5, 0.9)), "across": float(rng.uniform(0.1, 0.5))},
        "routing_dump": DUMP,
    }


def place(run_dir: Path, data: dict, dump_seed: int | None = None) -> Path:
    """Write ``data`` as the run's routing_analysis.json (and, with ``dump_seed``, the routing dump it names)."""
    directory = next(p.parent for p in run_dir.rglob("results_*.json"))
    (directory / ANALYSIS_FILE).write_text(json.dumps(data, indent=1))
    if dump_seed is not None:
        rng = np.random.default_rng(dump_seed)
        task = np.repeat(["toy_boolq", "toy_arc_easy"], 12)
        write_routing_dump(directory / DUMP, RoutingDump(rng.normal(size=(24, 4)), rng.random((24, 16)), task))
    return directory


NUMBER = re.compile(r"[-+]?\d+\.\d+|\d+")


@pytest.fixture
def analysed(copy_run):
    """Copies of base, RoMA and C3PO with an analysis each (RoMA's with a routing dump); -> (run dirs, analyses)."""
    dirs, data = {}, {}
    for method, seed in (("roma", 2), ("c3po", 1), ("base", 0)):  # not the registry's order
        dirs[method], data[method] = copy_run(method), analysis(method, seed, dead={3: [seed]} if seed else None)
        place(dirs[method], data[method], dump_seed=seed if method == "roma" else None)
    return dirs, data


def md_table(text: str, title: str) -> dict[str, list[list[float]]]:
    """The Markdown table headed **title...**: row label -> the numbers of each cell."""
    lines = text[text.index(f"**{title}"):].splitlines()[2:]
    rows = {}
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        label, *cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[label] = [[float(x) for x in NUMBER.findall(cell)] for cell in cells]
    return rows


def html_rows(html: str, caption: str) -> dict[str, list[list[float]]]:
    table = html[html.index(f"<caption>{escape(caption)}"):]
    table = table[:table.index("</table>")]
    rows = {}
    for label, cells in re.findall(r'<tr><th scope="row">(.*?)</th>(.*?)</tr>', table):
        rows[label] = [[float(x) for x in NUMBER.findall(cell)] for cell in re.findall(r"<td>(.*?)</td>", cells)]
    return rows


def expected_alignment(data: dict, measure: str) -> list[list[float]]:
    """n, then overall and ARC-E, BoolQ (the per-task entries that are benchmark columns), each value [low, high]."""
    entries = [data["alignment"]["overall"]] + [data["alignment"]["per_task"][t] for t in ("toy_arc_easy", "toy_boolq")]
    return [[data["alignment"]["overall"]["n"]]] + [[e[measure], *e[f"{measure}_interval"]] for e in entries]


def expected_layers(data: dict, table: str) -> list[list[float]]:
    layers = [data["per_layer"][str(layer)] for layer in LAYERS]
    if table == "movement":
        return [[layer["movement"]["median"], 90, layer["movement"]["p90"]] for layer in layers]
    if table == "entropy":
        return [[layer["routing_entropy"][key] for key in ("mean", "p10", "p90")] for layer in layers]
    return [[layer["load_entropy"], len(layer["dead_experts"]), len(layer["overloaded_experts"])] for layer in layers]


TABLES = {"Manifold alignment: kNN overlap": lambda d: expected_alignment(d, "knn_overlap"),
          "Routing similarity of embedding neighbours": lambda d: expected_alignment(d, "similarity_gap"),
          "Routing similarity within and across tasks": lambda d: [[d["task_similarity"][key]]
                                                                   for key in ("within", "across")],
          "Routing movement from base": lambda d: expected_layers(d, "movement"),
          "Routing entropy per layer": lambda d: expected_layers(d, "entropy"),
          "Expert load per layer": lambda d: expected_layers(d, "load")}


def test_the_routing_section_shows_the_files_numbers_in_the_registrys_order(analysed, tmp_path):
    dirs, data = analysed
    report = build_report(load_runs([str(dirs[m]) for m in ("roma", "c3po", "base")]), plots=False)
    assert [s.title for s in report.sections] == ["tiny-olmoe — toy suite", "tiny-olmoe — routing"]
    write_report(report, tmp_path / "out", formats=("md", "html"))
    markdown, html = ((tmp_path / "out" / f"report.{kind}").read_text() for kind in ("md", "html"))
    labels = {"base": "Base", "c3po": "C3PO", "roma": "RoMA"}
    for title, expected in TABLES.items():
        caption = next(t.title for t in report.sections[1].tables if t.title.startswith(title))
        for shown in (md_table(markdown, title), html_rows(html, caption)):
            if title.startswith("Manifold"):  # k of the n − 1 others at random: 10 / 87 overall, 10 / 19 per task
                assert np.allclose(sum(shown.pop("chance"), []), [10 / 87, 10 / 19, 10 / 19], atol=5e-4)
            methods = ["c3po", "roma"] if title.startswith("Routing movement") else ["base", "c3po", "roma"]
            assert list(shown) == [labels[m] for m in methods], title  # base has not moved from itself
            for method in methods:
                assert np.allclose(sum(shown[labels[method]], []), sum(expected(data[method]), []), atol=5e-4), \
                    (title, method)
    assert "Per-task figures of toy_mmlu_math (no benchmark column)" in markdown
    assert "88 samples of toy_arc_easy, toy_boolq, toy_gsm8k, toy_mmlu_colour, toy_mmlu_math" in markdown


def test_the_heatmap_shows_each_rows_load_and_marks_dead_experts(analysed, tmp_path):
    from PIL import Image

    dirs, data = analysed
    report = build_report(load_runs([str(d) for d in dirs.values()]))
    routing = report.sections[-1]
    # The manifold figure draws the dump the analysis names (not a routing_*.npz): drawn by other tests, not here.
    assert [f.name for f in routing.figures] == ["tiny-olmoe_load", "tiny-olmoe_manifold"]
    routing.figures.pop()
    written = write_report(replace(report, sections=[routing]), tmp_path / "out", formats=("md",))
    png = tmp_path / "out" / "plots" / "tiny-olmoe_load.png"
    assert png in written and "](plots/tiny-olmoe_load.png)" in (tmp_path / "out" / "report.md").read_text()
    with Image.open(png) as image:
        image.load()
        assert image.size[0] > 300 and image.size[1] > 300
    figure = routing.figures[0].draw()
    panels = [ax for ax in figure.axes if ax.images]
    assert [ax.get_title(loc="left") for ax in panels] == ["Base: 0 dead", "C3PO: 1 dead", "RoMA: 1 dead"]
    for ax, method in zip(panels, ("base", "c3po", "roma")):
        loads = [data[method]["per_layer"][str(layer)]["load_context"] for layer in LAYERS]
        assert np.allclose(ax.images[0].get_array(), np.array(loads) * EXPERTS)
        crosses = [c.get_offsets().tolist() for c in ax.collections]
        dead = data[method]["per_layer"]["3"]["dead_experts"]
        assert crosses == ([[[dead[0], 1]]] if dead else [])  # expert, row of layer 3


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(version=2), "is routing analysis version 2, this roma-eval reads version 1"),
    (lambda d: d["per_layer"]["3"].update(load_context=[0.5, 0.5]), "per_layer.3.load_context is not a list of "
                                                                     "num_experts (8) numbers"),
    (lambda d: d["alignment"]["overall"].update(knn_overlap_interval=[0.5]), "alignment.overall.knn_overlap_interval"),
    (lambda d: d["per_layer"].pop("2"), "per_layer has layers 3, \"layers\" says 2, 3"),
    (None, "is not valid JSON"),
])
def test_an_unreadable_analysis_is_a_warning_and_no_routing_for_its_run(analysed, caplog, edit, message):
    dirs, data = analysed
    path = next(dirs["base"].rglob(ANALYSIS_FILE))
    if edit:
        edit(data["base"])
        path.write_text(json.dumps(data["base"]))
    else:
        path.write_text('{"format": "roma-eval routing analysis", "version": 1,')
    with caplog.at_level(logging.WARNING, logger="roma_eval.results.routing"):
        report = build_report(load_runs([str(d) for d in dirs.values()]), plots=False)
    warnings = [r.getMessage() for r in caplog.records if r.name == "roma_eval.results.routing"]
    assert len(warnings) == 1 and message in warnings[0] and str(path) in warnings[0] and "\n" not in warnings[0]
    routing = report.sections[-1]
    assert [name for name, _ in routing.tables[0].rows] == ["chance", "C3PO", "RoMA"]
    assert any(note.startswith("No routing analysis for Base: write one with `roma-eval analyze") for note in
               routing.notes)


def test_a_model_with_routing_dumps_only_keeps_the_manifold_section(copy_run):
    base = copy_run("base")
    directory = place(base, analysis("base", 0), dump_seed=0)
    (directory / ANALYSIS_FILE).unlink()
    (directory / DUMP).rename(directory / "routing_toy_suite.npz")  # as the toy demo writes it
    report = build_report(load_runs([str(base)]))
    assert [s.title for s in report.sections][-1] == "tiny-olmoe — routing manifold"
    assert [f.name for f in report.sections[-1].figures] == ["tiny-olmoe_manifold"] and not report.sections[-1].tables


def test_read_routing_analysis_returns_the_files_fields(analysed):
    dirs, data = analysed
    read = read_routing_analysis(next(dirs["roma"].rglob(ANALYSIS_FILE)))
    assert read.layers == LAYERS and read.num_experts == EXPERTS and read.settings["k"] == K
    assert read.per_layer[3].dead_experts == (2,) and read.per_layer[2].load_context == tuple(
        data["roma"]["per_layer"]["2"]["load_context"])
    assert read.overall.knn_overlap_interval == tuple(data["roma"]["alignment"]["overall"]["knn_overlap_interval"])
    assert read.dump_path.name == DUMP


# `roma-eval check --routing_gates`: base as the baseline, RoMA (better on every benchmark) as the candidate.
def gate_check(verb, baseline: Path, candidate: Path, *flags: str) -> int:
    return verb("check", ["--baseline", str(baseline), "--candidate", str(candidate), "--bootstrap-iterations", "200",
                          *flags])


@pytest.fixture
def gate_runs(copy_run):
    """(baseline dir, candidate dir, write(side, data)): base and RoMA, analyses to be written by the test."""
    runs = {"baseline": copy_run("base"), "candidate": copy_run("roma")}
    return runs["baseline"], runs["candidate"], lambda side, data: place(runs[side], data)


def test_routing_gates_pass_and_are_recorded(gate_runs, verb, capsys, tmp_path):
    baseline, candidate, write = gate_runs
    base, roma = analysis("base", 0, dead={2: [4]}), analysis("roma", 1, dead={})  # expert 4 revived
    low = base["alignment"]["overall"]["knn_overlap_interval"][0]
    roma["alignment"]["overall"]["knn_overlap"] = low  # at the lower end: not below it
    write("baseline", base), write("candidate", roma)
    summary = tmp_path / "check.md"
    assert gate_check(verb, baseline, candidate, "--routing_gates", "--summary", str(summary)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-3].startswith("better                    routing dead_experts: 1 dead experts in 2 layers -> 0 dead")
    assert out[-2].startswith("within the baseline's interval routing alignment: kNN overlap ")
    assert f"-> kNN overlap {low:.3f} [" in out[-2]
    assert out[-1].startswith("NO REGRESSION:") and out[-1].endswith(
        "; routing dead_experts better, alignment within the baseline's interval")
    text = summary.read_text()
    assert "| dead_experts | 1 dead experts in 2 layers | 0 dead experts in 2 layers | better: 1 revived |" in text
    assert "| alignment |" in text


def test_routing_gates_catch_a_new_dead_expert_and_an_alignment_drop(gate_runs, verb, capsys):
    baseline, candidate, write = gate_runs
    base, roma = analysis("base", 0, dead={3: [1]}), analysis("roma", 1, dead={3: [1, 6], 2: [0]})
    write("baseline", base), write("candidate", roma)
    assert gate_check(verb, baseline, candidate, "--routing_gates", "dead_experts") == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-2] == ("REGRESSION                routing dead_experts: 1 dead experts in 2 layers -> 3 dead experts "
                       "in 2 layers; new dead experts L2: 0; L3: 6")
    assert out[-1].startswith("REGRESSION: routing dead_experts (new dead experts L2: 0; L3: 6); better on 2")

    roma["per_layer"] = base["per_layer"]  # no dead expert of its own now
    low = base["alignment"]["overall"]["knn_overlap_interval"][0]
    roma["alignment"]["overall"]["knn_overlap"] = low - 0.002
    write("candidate", roma)
    assert gate_check(verb, baseline, candidate, "--routing_gates", "all") == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-3].startswith("no new dead experts       routing dead_experts")
    assert out[-2].startswith("REGRESSION                routing alignment:") and out[-2].endswith(
        f"below the baseline's lower end {low:.3f}")
    # Off by default: the same runs pass.
    assert gate_check(verb, baseline, candidate) == 0
    assert "routing" not in capsys.readouterr().out


@pytest.mark.parametrize("flags, written, message", [
    (["--routing_gates"], ("baseline",), "--routing_gates: the candidate run {candidate}/tiny-olmoe has no "
                                         "routing_analysis.json; write it with `roma-eval analyze "
                                         "{candidate}/tiny-olmoe`"),
    (["--routing_gates", "dead"], ("baseline", "candidate"), "--routing_gates 'dead': choose among dead_experts, "
                                                             "alignment (comma-separated), or all"),
    (["--routing_gates=alignment"], ("baseline", "candidate", "k"), "the routing analyses differ in k (10 in the "
                                                                    "baseline, 3 in the candidate); re-run "
                                                                    "`roma-eval analyze` on both runs with the same "
                                                                    "settings"),
])
def test_a_routing_gate_it_cannot_judge_is_one_line_exit_2(gate_runs, verb, capsys, flags, written, message):
    baseline, candidate, write = gate_runs
    for side in ("baseline", "candidate"):
        if side in written:
            data = analysis("base", 0)
            if "k" in written and side == "candidate":
                data["settings"]["k"] = 3
            write(side, data)
    assert gate_check(verb, baseline, candidate, *flags) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == f"roma-eval check: error: {message.format(candidate=candidate)}"
    assert captured.out == ""


def test_rows_without_a_single_routing_say_why_and_are_not_sent_to_analyze(copy_run):
    """C3PO and the oracle change the routing of each sample: `roma-eval analyze` refuses their runs, so the report
    says why they have no analysis instead of telling the reader to write one."""
    base = copy_run("base")
    place(base, analysis("base", 0))
    report = build_report(load_runs([str(base), str(copy_run("c3po")), str(copy_run("oracle")),
                                     str(copy_run("roma"))]), plots=False)
    notes = report.sections[-1].notes
    assert "C3PO: no single routing to analyse (it re-mixes the routing of every test sample)." in notes
    assert "Oracle: no single routing to analyse (it changes the routing of every sample by gradient descent with " \
           "the gold label)." in notes
    (write,) = [note for note in notes if note.startswith("No routing analysis")]
    assert write.startswith("No routing analysis for RoMA: write one with `roma-eval analyze")


def test_the_movement_note_names_an_analysed_layer(analysed):
    dirs, _ = analysed
    report = build_report(load_runs([str(d) for d in dirs.values()]), plots=False)
    (movement,) = [t for t in report.sections[-1].tables if t.title.startswith("Routing movement")]
    assert movement.notes[0].endswith(f"L{LAYERS[0]}: decoder layer {LAYERS[0]}.")

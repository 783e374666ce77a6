"""`roma-eval demo --preset fast` end to end, checked against plain `lm_eval` on the same model."""

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from roma_eval.demo import DemoContext, run_demo, summary
from roma_eval.demo.table import format_table
from roma_eval.resources import tasks_dir
from roma_eval.toy.suite import EVAL_TASKS

pytestmark = pytest.mark.slow  # runs lm-eval's CLI or a whole toy pipeline

LM_EVAL = str(Path(sys.executable).parent / "lm_eval")
REPO = Path(__file__).resolve().parents[2]


def per_sample(directory: Path, task: str) -> dict[int, dict]:
    files = list(directory.rglob(f"samples_{task}_*.jsonl"))
    assert len(files) == 1, files
    rows = [json.loads(line) for line in files[0].read_text().splitlines()]
    return {row["doc_id"]: {m: row[m] for m in row["metrics"]} for row in rows}


def aggregated(directory: Path) -> dict:
    files = list(directory.rglob("results_*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())["results"]


@pytest.fixture(scope="module")
def fast_demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    patch = pytest.MonkeyPatch()
    patch.setenv("ROMA_EVAL_CACHE", str(root / "cache"))
    ctx = DemoContext.from_preset("fast", output=root / "reports", progress=False)
    run_demo(ctx)
    yield root, ctx
    patch.undo()


def test_demo_prints_every_benchmark_and_writes_lm_eval_outputs(fast_demo, capsys):
    root, ctx = fast_demo
    base = root / "reports" / "base"
    for task in EVAL_TASKS:
        assert len(per_sample(base, task)) == ctx.limit
    results = aggregated(base)
    assert set(EVAL_TASKS) <= set(results)
    assert ctx.columns["base"]["toy_mmlu"] == results["toy_mmlu"]["acc,none"]
    # Each column's metric, as the table names it: the toy ARC and PIQA report acc only (one-word choices).
    assert ctx.columns["base"]["toy_arc_challenge"] == results["toy_arc_challenge"]["acc,none"]
    metric_row = next(line for line in format_table(ctx).splitlines() if line.startswith("(metric)")).split()
    assert metric_row[1:] == ["acc", "acc_norm", "acc", "acc", "acc", "acc", "acc", "exact_match"]
    analysis = json.loads(next(base.rglob("routing_analysis.json")).read_text())
    assert analysis["n_samples"] == len(EVAL_TASKS) * ctx.limit and len(analysis["layers"]) == 5
    assert analysis["method"] == "base" and sorted(analysis["alignment"]["per_task"]) == sorted(EVAL_TASKS)


def test_plain_lm_eval_reproduces_the_demo(fast_demo, tmp_path):
    root, ctx = fast_demo
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run([LM_EVAL, "--model", "hf", "--model_args", f"pretrained={ctx.model_dir}",
                           "--include_path", str(tasks_dir()), "--tasks", "toy_suite", "--limit", str(ctx.limit),
                           "--device", "cpu", "--batch_size", str(ctx.batch_size),
                           "--output_path", str(tmp_path / "plain"), "--log_samples"],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for task in EVAL_TASKS:
        assert per_sample(tmp_path / "plain", task) == per_sample(root / "reports" / "base", task), task
    plain, demo = aggregated(tmp_path / "plain"), aggregated(root / "reports" / "base")
    assert {t: plain[t] for t in EVAL_TASKS} == {t: demo[t] for t in EVAL_TASKS}


def test_demo_adds_router_tuning_roma_oracle_c3po_and_the_report(fast_demo):
    root, ctx = fast_demo
    assert list(ctx.columns) == ["base", "router_tuning", "roma", "oracle", "c3po"]
    for method in ctx.columns:
        assert set(ctx.columns[method]) == set(EVAL_TASKS), method
    # The oracle starts at the base routing and reports a sample wrong only if it was wrong there.
    for task in EVAL_TASKS:
        assert ctx.columns["oracle"][task] >= ctx.columns["base"][task], task
    pairs = [("router_tuning", "base"), ("roma", "base"), ("roma", "router_tuning"), ("c3po", "base")]
    for method, baseline in pairs:
        assert f"{method} − {baseline} per benchmark, points [95% interval of the paired test, roma-eval check]:" \
            in ctx.notes
    assert len([n for n in ctx.notes if n.startswith("  toy_")]) == len(pairs) * len(EVAL_TASKS)
    # Per method, how many per-sample results moved, against base.
    for method in ("router_tuning", "roma", "c3po"):
        line = next(n for n in ctx.notes if n.startswith(f"{method} vs base: "))
        assert re.search(rf"\d+ of {8 * ctx.limit} per-sample results changed \(gained \d+, lost \d+;", line), line
    movement = next(n for n in ctx.notes if n.startswith("C3PO pathway movement"))
    assert f"over {8 * ctx.limit} test problems" in movement
    moved = next(n for n in ctx.notes if n.startswith("routing movement from base"))
    assert f"over {8 * ctx.limit} evaluation prompts" in moved and "RoMA median" in moved and "C3PO's pathways" in moved
    assert any(n.startswith("router_tuning training: ") and "held-out mixture acc" in n for n in ctx.notes)
    report = (root / "reports" / "report" / "report.md").read_text()
    for row in ("Base", "Router Tuning", "RoMA", "C3PO", "Oracle"):
        assert f"| {row} |" in report, row
    for name in ("report.html", "report.tex", "results.csv"):
        assert (root / "reports" / "report" / name).is_file(), name
    assert (root / "reports" / "roma" / "router_checkpoint" / "router_model.safetensors").is_file()
    # The routing stage's analyses of base, Router Tuning and RoMA (C3PO and the oracle have no single routing): the
    # report draws the routing-manifold figure from their dumps.
    assert "routing manifold" in report
    assert len(list((root / "reports" / "report" / "plots").glob("*manifold*.svg"))) == 1
    for method in ("base", "router_tuning", "roma"):
        assert any(n.startswith(f"routing alignment ({method},") and "kNN overlap" in n for n in ctx.notes), method
    for method in ("c3po", "oracle"):
        assert not list((root / "reports" / method).rglob("routing_analysis.json")), method


def test_second_run_reuses_the_model_and_the_results(fast_demo, monkeypatch, caplog):
    root, ctx = fast_demo

    def fail(*args, **kwargs):
        raise AssertionError("recomputed something a second run should reuse")

    monkeypatch.setenv("ROMA_EVAL_CACHE", str(root / "cache"))
    for target in ("roma_eval.toy.pretrain.pretrain", "lm_eval.simple_evaluate",
                   "roma_eval.methods.roma.train.train_roma", "roma_eval.scoring.score_samples",
                   "roma_eval.methods.c3po.build_reference", "roma_eval.methods.oracle.solver.descend",
                   "roma_eval.analysis.collect.collect_routing"):
        monkeypatch.setattr(target, fail)
    caplog.set_level(logging.INFO, logger="roma_eval")
    again = run_demo(DemoContext.from_preset("fast", output=root / "reports", progress=False))
    assert "loaded from the cache" in caplog.text and "reusing the lm-eval results" in caplog.text
    out = summary(again)
    assert again.columns == ctx.columns
    for row in ("chance", "Base", "Router Tuning", "RoMA", "C3PO", "Oracle"):  # 8 benchmarks and the average
        assert re.search(rf"^{row}(\s+[\d.]+){{9}}$", out, re.M), row


def tables(report: Path) -> list[str]:
    """The table lines of a report.md (provenance and paths aside)."""
    return [line for line in report.read_text().splitlines() if line.startswith("|")]


def test_a_copied_tree_is_reused_and_reported_alike(fast_demo, tmp_path, monkeypatch):
    """The demo's outputs copied elsewhere, the original out of reach: a warm demo there recomputes nothing and fails
    nowhere, and both its report and `roma-eval report` on the copy give the original's tables."""
    import shutil

    from roma_eval.cli import main

    root, ctx = fast_demo
    # as `cp -r` copies: new modification times (the held-out cache was keyed on them)
    copy = Path(shutil.copytree(root / "reports", tmp_path / "elsewhere" / "demo", copy_function=shutil.copy))
    for target in ("roma_eval.toy.pretrain.pretrain", "lm_eval.simple_evaluate",
                   "roma_eval.methods.roma.train.train_roma", "roma_eval.scoring.score_samples",
                   "roma_eval.methods.c3po.build_reference", "roma_eval.methods.oracle.solver.descend",
                   "roma_eval.analysis.collect.collect_routing"):
        monkeypatch.setattr(target, lambda *a, **k: pytest.fail("recomputed something the copy holds"))
    monkeypatch.setenv("ROMA_EVAL_CACHE", str(root / "cache"))
    hidden = root / "reports-hidden"
    (root / "reports").rename(hidden)
    try:
        again = run_demo(DemoContext.from_preset("fast", output=copy, progress=False))
        assert main(["report", str(copy), "--columns", "present", "--no_plots",
                     "--output_path", str(tmp_path / "cli")]) == 0
    finally:
        hidden.rename(root / "reports")
    assert again.columns == ctx.columns
    original = tables(root / "reports" / "report" / "report.md")
    assert any(line.startswith("| Router Tuning |") for line in original)
    assert tables(copy / "report" / "report.md") == original == tables(tmp_path / "cli" / "report.md")


def test_the_reports_chance_is_the_demos(fast_demo):
    """The report reads chance from lm-eval's samples; the demo's table computes it from the toy documents."""
    from roma_eval.demo.table import chance_levels
    from roma_eval.report.formatting import fmt

    root, ctx = fast_demo
    row = next(line for line in tables(root / "reports" / "report" / "report.md") if line.startswith("| chance |"))
    expected = chance_levels(ctx.limit)
    assert row.strip("| ").split(" | ")[1:9] == [fmt(100 * expected[task]) for task in EVAL_TASKS]


def test_another_seed_into_the_same_directory_is_refused(fast_demo, capsys):
    from roma_eval.cli import main

    root, _ = fast_demo
    before = sorted(p.stat().st_mtime_ns for p in (root / "reports").rglob("*") if p.is_file())
    assert main(["demo", "--preset", "fast", "--seed", "1", "--output_path", str(root / "reports"),
                 "--no_progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--output_path" in err[0] and "seed" in err[0] and "other settings" in err[0]
    assert sorted(p.stat().st_mtime_ns for p in (root / "reports").rglob("*") if p.is_file()) == before


def test_output_that_is_a_file_is_refused(tmp_path, capsys):
    from roma_eval.cli import main

    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    assert main(["demo", "--preset", "fast", "--output_path", str(taken), "--no_progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file" in err[0] and taken.read_text() == "mine"

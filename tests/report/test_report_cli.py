"""`roma-eval report` (and the --metric checks it shares with `check`), the demo's report, and the report
path's imports."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from roma_eval.errors import RomaEvalError
from roma_eval.report.stages import write_stage_report

REPO = Path(__file__).resolve().parents[2]
DEMO_METHODS = ("base", "roma", "c3po", "oracle")


def test_report_cli(runs, verb, capsys, tmp_path):
    out = tmp_path / "r"
    argv = [str(runs / "base"), f"RoMA-v2={runs / 'roma'}", "--paper", "--output_path", str(out), "--format", "md,html"]
    assert verb("report", argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["plots", "report.html", "report.md", "results.csv"]
    text = (out / "report.md").read_text()
    assert "| RoMA-v2 | **70.0**↑ |" in text and "## RoMA Table 1 — Qwen3-30B-A3B (published)" in text
    before = (out / "report.md").read_text()
    assert verb("report", argv) == 2
    assert "already exists" in capsys.readouterr().err and (out / "report.md").read_text() == before
    assert verb("report", argv + ["--overwrite"]) == 0


def test_report_notes_runs_evaluated_differently(runs, derive_run, verb, tmp_path):
    def five_shot_limit_10(data):  # as `lm_eval --num_fewshot 5 --limit 10` records it
        data["n-shot"] = dict.fromkeys(data["n-shot"], 5)
        data["config"]["limit"] = 10
        for counts in data["n-samples"].values():
            counts["effective"] = min(10, counts["original"])
    argv = [str(runs / "base"), str(derive_run("roma", "roma", five_shot_limit_10)), str(runs / "oracle"),
            "--output_path", str(tmp_path / "r"), "--format", "md", "--no-plots"]
    assert verb("report", argv) == 0  # a note, not a refusal: the table is still worth seeing
    text = (tmp_path / "r" / "report.md").read_text()
    assert ("_Not evaluated alike (tiny-olmoe): n-shot in MMLU, ARC-E, BoolQ, GSM8K: Base 0, Oracle 0, RoMA 5; "
            "limit in MMLU: Base none, Oracle none, RoMA 10 (18 of 20 documents); limit in ARC-E: Base none, "
            "Oracle none, RoMA 10 (10 of 24 documents); limit in BoolQ: Base none, Oracle none, RoMA 10 (10 of 20 "
            "documents)._") in text
    assert text.count("Not evaluated alike") == 1  # under the scores table only


@pytest.mark.parametrize("argv, message", [
    ([], "nothing to report"),
    (["--paper", "--format", "pdf"], "--format 'pdf'"),
    (["{runs}/base", "--metric", "arc_easy"], "is not COLUMN=METRIC"),
])
def test_report_cli_bad_input(runs, verb, capsys, tmp_path, argv, message):
    argv = [a.format(runs=runs) for a in argv] + ["--output_path", str(tmp_path / "r")]
    assert verb("report", argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def metric_argv(verb_name: str, runs: Path, out: Path, metric: str) -> list[str]:
    """argv for `roma-eval report` or `check` on base and the oracle (which reports fewer metrics), writing ``out``."""
    if verb_name == "report":
        return [str(runs / "base"), str(runs / "oracle"), "--output_path", str(out), "--no-plots", "--metric", metric]
    return ["--baseline", str(runs / "base"), "--candidate", str(runs / "regressed"), "--summary", str(out),
            "--metric", metric]


@pytest.mark.parametrize("verb_name", ["report", "check"])
@pytest.mark.parametrize("metric, message", [
    ("hellaswg=acc", "--metric hellaswg=acc: no column or task named 'hellaswg'; choose among mmlu, hellaswag, "
                     "arc_challenge, arc_easy, piqa, winogrande, boolq, gsm8k, toy_arc_easy, toy_boolq, toy_gsm8k, "
                     "toy_mmlu"),
    ("arc_easy=acc_nrom", "--metric arc_easy=acc_nrom: no run reports 'acc_nrom,none' for arc_easy; choose among "
                          "'acc,none', 'acc_norm,none'"),
    ("toy_gsm8k=exact_match,strict_match", "--metric toy_gsm8k=exact_match,strict_match: no run reports "
                                           "'exact_match,strict_match' for toy_gsm8k; choose among "
                                           "'exact_match,flexible-extract', '"),
], ids=["column", "metric", "filter"])
def test_metric_typos_are_refused(runs, verb, capsys, tmp_path, verb_name, metric, message):
    out = tmp_path / "out"
    assert verb(verb_name, metric_argv(verb_name, runs, out, metric)) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.splitlines()
    assert line.startswith(f"roma-eval {verb_name}: error: {message}") and not captured.out
    assert not out.exists()


@pytest.mark.parametrize("verb_name, metric, status", [
    ("report", "gsm8k=exact_match,strict-match", 0),  # base reports it; the oracle's cell stays blank
    ("report", "toy_arc_easy=acc", 0), ("check", "toy_arc_easy=acc", 1), ("check", "arc_easy=acc", 1),
])
def test_metrics_some_run_reports_are_accepted(runs, verb, capsys, tmp_path, verb_name, metric, status):
    out = tmp_path / "out"
    assert verb(verb_name, metric_argv(verb_name, runs, out, metric)) == status
    # A task name or a column takes effect: base's toy_arc_easy acc is 37.5 (acc_norm, the default, 29.2).
    if verb_name == "report" and metric.endswith("=acc"):
        assert "| Base | 40.0 | — | — | 37.5 |" in (out / "report.md").read_text()
    if verb_name == "check":
        assert "toy_arc_easy: acc,none 37.5 -> " in capsys.readouterr().out


def demo_results(runs, tmp_path, methods=DEMO_METHODS) -> Path:
    results = tmp_path / "results"
    for method in methods:
        shutil.copytree(runs / method, results / method)
    return results


def test_demo_report(runs, tmp_path):
    written = write_stage_report(demo_results(runs, tmp_path), tmp_path / "reports" / "demo")
    names = {p.name for p in written}
    assert {"report.md", "report.html", "report.tex", "tiny-olmoe_toy_bars.png", "tiny-olmoe_toy_bars.svg"} <= names
    text = (tmp_path / "reports" / "demo" / "report.md").read_text()
    for row in ("| Base |", "| RoMA |", "| C3PO |", "| Oracle |"):
        assert row in text
    assert "| Method | MMLU | ARC-E | BoolQ | GSM8K | Avg |" in text  # the toy columns that were run


def test_demo_report_with_what_exists(runs, tmp_path):
    results = demo_results(runs, tmp_path, methods=("base",))
    (results / "c3po").mkdir()  # a method that has not run yet
    write_stage_report(results, tmp_path / "demo")
    text = (tmp_path / "demo" / "report.md").read_text()
    assert "| Base |" in text and "| C3PO |" not in text
    with pytest.raises(RomaEvalError, match="no method results under"):
        write_stage_report(tmp_path / "empty", tmp_path / "demo2")


def test_report_path_imports_no_torch(runs, tmp_path):
    # Whole reports (without and with figures) and a check, in a fresh interpreter.
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        import roma_eval.results, roma_eval.commands.report, roma_eval.commands.check
        from roma_eval.report import build, check, paper, plots, render, stages, tables
        from roma_eval.results import load_runs, metric_preferences
        runs = load_runs([{str(runs / 'base')!r}, {str(runs / 'roma')!r}])
        render.write_report(build.build_report(runs, plots=False), Path({str(tmp_path / 'tables')!r}))
        assert "matplotlib" not in sys.modules  # the optional "plots" extra: tables work without it
        render.write_report(build.build_report(runs, paper=True), Path({str(tmp_path / 'out')!r}))
        check.compare(runs[:1], runs[1:], prefs=metric_preferences())
        heavy = [m for m in ("torch", "transformers", "lm_eval") if m in sys.modules]
        assert not heavy, heavy
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

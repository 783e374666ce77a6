"""Runs computed by different engines (transformers, lm-eval's vllm model on a `roma-eval export`): the report says
which engine computed each row, and the gate compares them only when told to."""

from __future__ import annotations

import json

from roma_eval.report.build import build_report
from roma_eval.report.render import render
from roma_eval.results import load_runs
from roma_eval.results.provenance import EXPORT_RECORD


def on_vllm(export: str):
    """The run as `lm_eval --model vllm --model_args pretrained=EXPORT` writes it."""
    def results(data):
        data["config"]["model"] = "vllm"
        data["config"]["model_args"] = {"pretrained": export}
        data["model_name"] = export
    return results


def exported(tmp_path, base_model: str = "hub-owner/tiny-olmoe", method: str = "roma"):
    """A model directory as `roma-eval export` leaves it, reduced to the record the report reads."""
    directory = tmp_path / "exports" / "my-tuned-model"
    directory.mkdir(parents=True)
    (directory / EXPORT_RECORD).write_text(json.dumps({"format_version": 1, "method": method,
                                                       "base_model": base_model, "router_config": {}}))
    return directory


def test_a_vllm_candidate_is_refused_unless_allowed_and_then_says_so(runs, derive_run, verb, capsys):
    candidate = derive_run("candidate", "regressed", on_vllm("/models/exported"))
    argv = ["--baseline", str(runs / "base"), "--candidate", str(candidate)]
    assert verb("check", argv) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.splitlines()
    assert line == ("roma-eval check: error: the runs were computed by different engines (the baseline on hf, the "
                    "candidate on vllm), whose kernels and batching move scores; evaluate both on one backend, or pass "
                    "--allow-backend-change to compare anyway")
    assert not captured.out
    assert verb("check", [*argv, "--allow-backend-change"]) == 1  # the planted toy_boolq regression is still found
    regression = [line for line in capsys.readouterr().out.splitlines() if line.startswith("REGRESSION")]
    assert regression and regression[0].endswith("backends differ: hf in the baseline, vllm in the candidate")


def test_runs_of_one_backend_are_not_refused(runs, derive_run, verb):
    both = [derive_run(name, source, on_vllm("/models/exported")) for name, source in
            (("baseline", "base"), ("candidate", "regressed"))]
    assert verb("check", ["--baseline", str(both[0]), "--candidate", str(both[1])]) == 1  # compared: the regression


def test_the_report_names_each_rows_engine_and_notes_a_mixed_table(runs, derive_run, tmp_path):
    vllm = derive_run("vllm_run", "regressed", on_vllm(str(exported(tmp_path, base_model="tiny-olmoe"))))
    loaded = load_runs([f"base={runs / 'base'}", f"roma={vllm}"])
    text = render(build_report(loaded, plots=False), "md")
    assert "backend transformers" in text and "backend vLLM" in text
    assert "Rows computed by different engines (Base on transformers; RoMA on vLLM)" in text
    alone = render(build_report(load_runs([str(runs / "base")]), plots=False), "md")
    assert "backend transformers" in alone and "different engines" not in alone


def test_a_run_of_an_export_joins_its_base_models_table(runs, derive_run, tmp_path):
    directory = exported(tmp_path)
    (run,) = load_runs([str(derive_run("export_run", "base", on_vllm(str(directory))))])
    assert (run.model, run.checkpoint, run.method, run.backend) == ("tiny-olmoe", "hub-owner/tiny-olmoe", "roma",
                                                                    "vllm")
    (plain,) = load_runs([str(derive_run("plain_vllm", "base", on_vllm(str(tmp_path / "elsewhere"))))])
    assert (plain.model, plain.method) == ("elsewhere", "base")  # no record: the directory's own name, the base

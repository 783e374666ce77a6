"""results.py against what lm-eval itself wrote: its aggregated metrics are the reference."""

from __future__ import annotations

import json

import pytest

from roma_eval.errors import RomaEvalError
from roma_eval.results import (
    column_of,
    find_results_files,
    load_run,
    load_runs,
    method_of,
    parse_metric_overrides,
    split_label,
    tidy,
)


@pytest.mark.parametrize("run_dir", ["base", "roma_lm_eval"])
def test_per_sample_means_equal_lm_evals_aggregates(runs, run_dir):
    # Every metric of every benchmark of a real run, the toy_mmlu group (two subtasks, weighted by
    # size) and both gsm8k filters included.
    run = load_run(find_results_files(runs / run_dir)[0])
    checked = 0
    for bench in run.benchmarks:
        for metric, reported in run.metrics(bench).items():
            samples = run.samples(bench, metric)
            assert len(samples) == run.n(bench, metric)
            assert sum(s.value for s in samples.values()) / len(samples) == pytest.approx(reported, abs=1e-12)
            checked += 1
    assert checked == 6  # mmlu acc, arc_easy acc + acc_norm, boolq acc, gsm8k two filters


def test_benchmarks_of_the_real_run(runs):
    run = load_run(find_results_files(runs / "base")[0])
    found = {(b.suite, b.name): b for b in run.benchmarks}
    assert set(found) == {("toy", "mmlu"), ("toy", "arc_easy"), ("toy", "boolq"), ("toy", "gsm8k")}
    assert found[("toy", "mmlu")].leaves == ("toy_mmlu_math", "toy_mmlu_colour")  # toy_suite is only a bundle
    assert run.model == "tiny-olmoe" and run.method == "base"


def test_tidy_rows_carry_lm_evals_numbers(runs):
    rows = {(r.benchmark, r.metric): r for r in tidy(load_runs([str(runs / "base")]))}
    arc = rows[("arc_easy", "acc_norm,none")]
    assert (arc.value, arc.n, arc.model, arc.method, arc.task) == (7 / 24, 24, "tiny-olmoe", "base", "toy_arc_easy")
    assert arc.stderr == pytest.approx(0.09477598811252415)
    assert rows[("mmlu", "acc,none")].n == 20 and rows[("mmlu", "acc,none")].value == pytest.approx(0.4)
    assert rows[("gsm8k", "exact_match,strict-match")].value == 0.0


@pytest.mark.parametrize("run_dir, method", [
    ("base", "base"), ("roma_lm_eval", "roma"), ("roma", "roma"), ("roma_no_checkpoint", "base"), ("c3po", "c3po"),
    ("oracle", "oracle"),
])
def test_method_from_model_and_model_args(runs, run_dir, method):
    assert load_runs([str(runs / run_dir)])[0].method == method


def test_a_label_overrides_the_method(runs):
    assert load_runs([f"mine={runs / 'roma'}"])[0].method == "mine"
    assert split_label(str(runs / "roma")) == (None, runs / "roma")


@pytest.mark.parametrize("model, args, method", [
    ("hf", {}, "base"), ("hf-auto", {}, "base"), ("huggingface", {}, "base"), ("vllm", {}, "base"),
    ("roma", {"router_checkpoint": "c"}, "roma"), ("roma", {"router_checkpoint": ""}, "base"),
    ("c3po", {}, "c3po"), ("oracle", {}, "oracle"), ("openai-completions", {}, "openai-completions"),
])
def test_method_of(model, args, method):
    assert method_of(model, args) == method


def test_model_args_recorded_as_a_string(runs):
    run = load_runs([str(runs / "c3po")])[0]
    assert run.model_args == {"pretrained": "tiny-olmoe", "k": "3", "steps": "10"}


def test_column_mapping():
    assert column_of("mmlu") == ("paper", "mmlu")
    assert column_of("toy_arc_challenge") == ("toy", "arc_challenge")
    assert column_of("toy_suite") is None and column_of("lambada_openai") is None


def test_other_tasks_and_bare_groups(tmp_path):
    results = {
        "results": {"my_suite": {"alias": "my_suite"}, "lambada_openai": {"acc,none": 0.5, "perplexity,none": 9.0},
                    "arc_easy": {"acc,none": 0.7, "acc_norm,none": 0.72}},
        "group_subtasks": {"my_suite": ["lambada_openai", "arc_easy"]},
        "n-samples": {"lambada_openai": {"effective": 10}, "arc_easy": {"effective": 20}},
        "config": {"model": "hf", "model_args": "pretrained=org/Some-Model"},
    }
    path = tmp_path / "results_2026-01-01T00-00-00.json"
    path.write_text(json.dumps(results))
    run = load_run(path)
    assert {(b.suite, b.name) for b in run.benchmarks} == {("paper", "arc_easy"), ("other", "lambada_openai")}
    assert run.model == "Some-Model"


def test_oracle_samples_without_filter(runs):
    run = load_runs([str(runs / "oracle")])[0]
    gsm8k = next(b for b in run.benchmarks if b.name == "gsm8k")
    samples = run.samples(gsm8k, "exact_match,none")
    assert sum(s.value for s in samples.values()) / len(samples) == run.metrics(gsm8k)["exact_match,none"]


def test_metric_overrides():
    assert parse_metric_overrides(["arc_easy=acc", "gsm8k=exact_match,strict-match"]) == {
        "arc_easy": "acc", "gsm8k": "exact_match,strict-match"}
    with pytest.raises(RomaEvalError, match="COLUMN=METRIC"):
        parse_metric_overrides(["arc_easy"])


# Bad input: one clear error naming the file.

def test_truncated_results_file(copy_run):
    path = find_results_files(copy_run("base"))[0]
    path.write_text(path.read_text()[:500])
    with pytest.raises(RomaEvalError, match=f"{path.name} is not valid JSON"):
        load_runs([str(path.parent)])


def test_json_that_is_not_a_results_file(tmp_path):
    path = tmp_path / "results_2026-01-01T00-00-00.json"
    path.write_text(json.dumps({"samples": []}))
    with pytest.raises(RomaEvalError, match=r"not an lm-eval results file \(no 'results' object\)"):
        load_run(path)
    path.write_text(json.dumps({"results": {"boolq": [0.5]}, "config": {"model": "hf"}}))
    with pytest.raises(RomaEvalError, match=f"{path.name} has a malformed results.boolq"):
        load_run(path)


def test_truncated_samples_file(copy_run):
    directory = copy_run("base") / "tiny-olmoe"
    samples = next(directory.glob("samples_toy_boolq_*.jsonl"))
    samples.write_text(samples.read_text()[:-300])
    run = load_run(next(directory.glob("results_*.json")))
    boolq = next(b for b in run.benchmarks if b.name == "boolq")
    with pytest.raises(RomaEvalError, match=f"line 20 of .*{samples.name} is not valid JSON"):
        run.samples(boolq, "acc,none")


def test_missing_samples_say_log_samples(copy_run):
    directory = copy_run("base") / "tiny-olmoe"
    next(directory.glob("samples_toy_boolq_*.jsonl")).unlink()
    run = load_run(next(directory.glob("results_*.json")))
    boolq = next(b for b in run.benchmarks if b.name == "boolq")
    with pytest.raises(RomaEvalError, match="no samples_toy_boolq_.*--log_samples"):
        run.samples(boolq, "acc,none")


def test_missing_and_empty_directories(tmp_path):
    with pytest.raises(RomaEvalError, match="does not exist"):
        load_runs([str(tmp_path / "nowhere")])
    with pytest.raises(RomaEvalError, match="no lm-eval results_<date>.json under"):
        load_runs([str(tmp_path)])

"""The regression gate: its tests against hand computations and scipy, and its verdicts on planted runs."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from roma_eval.errors import RomaEvalError
from roma_eval.report.check import bootstrap_p, compare, mcnemar_p
from roma_eval.results import load_runs, metric_preferences


def test_mcnemar_by_hand():
    assert mcnemar_p(6, 0) == 1 / 64  # every discordant document went the candidate's wrong way
    assert mcnemar_p(5, 2) == (21 + 7 + 1) / 128  # P(X >= 5), X ~ Bin(7, 1/2)
    assert mcnemar_p(0, 0) == 1.0 and mcnemar_p(0, 9) == 1.0


def test_bootstrap_matches_exhaustive_resampling():
    # All 5^5 resamples of five paired drops, enumerated: the exact bootstrap p-value.
    drops = np.array([1.0, 1.0, 0.0, -1.0, 1.0])
    observed = drops.mean()
    means = [drops[list(idx)].mean() for idx in itertools.product(range(5), repeat=5)]
    exact = np.mean([m - observed >= observed - 1e-12 for m in means])
    assert bootstrap_p(drops, iterations=200_000, seed=1) == pytest.approx(exact, abs=0.005)


def test_bootstrap_on_continuous_values_and_no_drop():
    rng = np.random.default_rng(0)
    worse = rng.normal(0.3, 1.0, size=400)  # a real drop of 0.3 sd
    assert bootstrap_p(worse, iterations=2000) < 0.01
    assert bootstrap_p(-worse, iterations=2000) > 0.99
    assert bootstrap_p(np.zeros(10), iterations=100) == 1.0


def test_planted_regression_is_caught(runs):
    result = compare(load_runs([str(runs / "base")]), load_runs([str(runs / "regressed")]), prefs=metric_preferences())
    verdicts = {c.benchmark: c for c in result}
    assert [c.benchmark for c in result] == ["toy_mmlu", "toy_arc_easy", "toy_boolq", "toy_gsm8k"]
    boolq = verdicts["toy_boolq"]
    assert (boolq.baseline, boolq.candidate, boolq.p_value, boolq.regression) == (50.0, 20.0, 1 / 64, True)
    mmlu = verdicts["toy_mmlu"]  # 5 points lost, one document: beyond the threshold, not significant
    assert (mmlu.delta, mmlu.p_value, mmlu.regression) == (pytest.approx(-5.0), 0.5, False)
    assert verdicts["toy_arc_easy"].delta == pytest.approx(12.5) and not verdicts["toy_arc_easy"].regression


@pytest.mark.parametrize("max_drop, alpha, regressed", [(1.0, 0.05, True), (30.0, 0.05, False), (1.0, 0.01, False)])
def test_both_threshold_and_significance_are_needed(runs, max_drop, alpha, regressed):
    result = compare(load_runs([str(runs / "base")]), load_runs([str(runs / "regressed")]), prefs=metric_preferences(),
                     max_drop=max_drop, alpha=alpha, benchmarks=["boolq"])
    assert [c.regression for c in result] == [regressed]


def test_identical_runs_pass(runs):
    result = compare(load_runs([str(runs / "base")]), load_runs([str(runs / "base")]), prefs=metric_preferences())
    assert len(result) == 4 and not any(c.regression or c.delta or c.p_value < 1 for c in result)


def test_oracle_outputs_compare_with_lm_eval_runs(runs):
    result = compare(load_runs([str(runs / "base")]), load_runs([str(runs / "oracle")]), prefs=metric_preferences())
    gsm8k = result[-1]
    assert gsm8k.metric == "exact_match,flexible-extract / exact_match,none" and gsm8k.candidate == 87.5


def test_check_cli_exit_codes(runs, verb, capsys, tmp_path):
    assert verb("check", ["--baseline", str(runs / "base"), "--candidate", str(runs / "regressed")]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert sum(line.startswith(("PASS", "REGRESSION")) for line in lines) == 4
    assert lines[2].startswith("REGRESSION toy_boolq: acc,none 50.0 -> 20.0 (-30.0 pp")
    assert "### roma-eval check: FAIL — 1 of 4 benchmarks regressed" in out
    summary = tmp_path / "summary.md"
    assert verb("check", ["--baseline", str(runs / "base"), "--candidate", str(runs / "base"),
                          "--summary", str(summary)]) == 0
    assert summary.read_text().startswith("### roma-eval check: PASS — 0 of 4 benchmarks regressed")
    assert verb("check", ["--baseline", str(runs / "base"), "--candidate", str(runs / "base"),
                          "--summary", str(summary)]) == 2
    assert "summary.md already exists" in capsys.readouterr().err


def test_check_on_bad_input(runs, verb, capsys, copy_run):
    assert verb("check", ["--baseline", str(runs / "base"), "--candidate", str(runs / "nowhere")]) == 2
    assert "nowhere does not exist" in capsys.readouterr().err
    partial = copy_run("regressed") / "tiny-olmoe"
    results_file = next(partial.glob("results_*.json"))
    data = json.loads(results_file.read_text())
    del data["results"]["toy_boolq"]
    results_file.write_text(json.dumps(data))
    assert verb("check", ["--baseline", str(runs / "base"), "--candidate", str(partial)]) == 2
    assert "has no results for toy_boolq" in capsys.readouterr().err
    assert verb("check", ["--baseline", str(runs / "base"), "--candidate", str(runs / "base"), "--alpha", "2"]) == 2


def test_different_documents_are_refused(runs, copy_run):
    other = copy_run("regressed") / "tiny-olmoe"
    samples = next(other.glob("samples_toy_boolq_*.jsonl"))
    lines = [json.loads(line) for line in samples.read_text().splitlines()]
    lines[3]["doc_hash"] = "0" * 64
    samples.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(RomaEvalError, match="document 3 of toy_boolq differs"):
        compare(load_runs([str(runs / "base")]), load_runs([str(other)]), prefs=metric_preferences())


def test_a_directory_of_several_methods_is_ambiguous(runs):
    with pytest.raises(RomaEvalError, match="several models or methods"):
        compare(load_runs([str(runs / "base")]), load_runs([str(runs / "roma"), str(runs / "c3po")]),
                prefs=metric_preferences())


def test_bootstrap_interval_matches_plain_index_resampling():
    """The multinomial shortcut against the textbook bootstrap (resample documents by index)."""
    import numpy as np

    from roma_eval.report.check import bootstrap_interval

    gains = np.array([1.0] * 30 + [0.0] * 50 + [-1.0] * 20)
    rng = np.random.default_rng(1)
    plain = [gains[rng.integers(0, len(gains), len(gains))].mean() for _ in range(20_000)]
    expected = np.quantile(plain, [0.025, 0.975])
    low, high = bootstrap_interval(gains, iterations=20_000, seed=3)
    assert low == pytest.approx(expected[0], abs=0.015) and high == pytest.approx(expected[1], abs=0.015)
    assert low < gains.mean() < high


# The gate compares like with like: a candidate evaluated with other prompts or on other documents is refused.

def test_a_candidate_with_another_few_shot_setting_is_refused(runs, few_shot_run, verb, capsys, tmp_path):
    # The case: a 0-shot candidate against a 5-shot baseline used to pass.
    baseline, summary = few_shot_run("five_shot", 5), tmp_path / "summary.md"
    argv = ["--baseline", str(baseline), "--candidate", str(runs / "base"), "--summary", str(summary)]
    assert verb("check", argv) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.splitlines()
    assert line.startswith("roma-eval check: error: toy_mmlu: n-shot 5 in the baseline, 0 in the candidate and "
                           "prompts of 20 of 20 documents differ; toy_arc_easy: n-shot 5 in the baseline, 0 in the "
                           "candidate")
    assert line.endswith("or pass --allow-prompt-change to compare anyway")
    assert not captured.out and not summary.exists()


def test_allow_prompt_change_compares_and_says_so(runs, few_shot_run, verb, capsys, tmp_path):
    summary = tmp_path / "summary.md"
    argv = ["--baseline", str(few_shot_run("five_shot", 5)), "--candidate", str(runs / "regressed"),
            "--summary", str(summary), "--allow-prompt-change"]
    assert verb("check", argv) == 1  # the planted toy_boolq regression is still found
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].startswith("REGRESSION toy_boolq: acc,none 50.0 -> 20.0")
    assert lines[2].endswith("n=20; prompts differ: n-shot 5 in the baseline, 0 in the candidate and prompts of 20 "
                             "of 20 documents differ")
    assert "_toy_boolq: prompts differ: n-shot 5 in the baseline" in summary.read_text()


def limited(n: int):
    """lm_eval --limit n: recorded in config.limit and n-samples, and only the first n documents logged."""
    def results(data):
        data["config"]["limit"] = n
        for counts in data["n-samples"].values():
            counts["effective"] = min(n, counts["original"])
    return results, lambda task, line: line["doc_id"] < n


def new_boolq_version(data):
    data["versions"]["toy_boolq"] = 2.0


def chat_template_on_boolq(task, line):
    if task == "toy_boolq":  # lm-eval hashes the prompt as the model saw it: a chat template changes it
        line["prompt_hash"] = "0" * 64


@pytest.mark.parametrize("edits, message", [
    (limited(10), "toy_mmlu: limit none in the baseline, 10 (18 of 20 documents) in the candidate; toy_arc_easy: "
                  "limit none in the baseline, 10 (10 of 24 documents) in the candidate; toy_boolq:"),
    ((new_boolq_version, None), "toy_boolq: version 1.0 in the baseline, 2.0 in the candidate; re-run"),
    ((None, chat_template_on_boolq), "toy_boolq: prompts of 20 of 20 documents differ; re-run"),
], ids=["limit", "task-version", "prompts"])
def test_other_documents_or_prompts_are_refused(runs, derive_run, verb, capsys, edits, message):
    candidate = derive_run("candidate", "regressed", *edits)
    assert verb("check", ["--baseline", str(runs / "base"), "--candidate", str(candidate)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert message in line
    assert verb("check", ["--baseline", str(runs / "base"), "--candidate", str(candidate),
                          "--allow-prompt-change"]) == 1


def test_another_dataset_is_refused_even_when_prompts_may_change(runs, derive_run, verb, capsys):
    def other_document(task, line):
        if task == "toy_boolq" and line["doc_id"] == 3:
            line["doc_hash"] = "0" * 64
    candidate = derive_run("candidate", "regressed", sample=other_document)
    assert verb("check", ["--baseline", str(runs / "base"), "--candidate", str(candidate),
                          "--allow-prompt-change"]) == 2
    assert "document 3 of toy_boolq differs" in capsys.readouterr().err

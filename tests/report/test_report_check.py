"""The regression gate: its tests against hand computations and scipy, and its verdicts on planted runs."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from roma_eval.errors import RomaEvalError
from roma_eval.report.check import (
    BETTER,
    SAME,
    WORSE,
    Significance,
    bootstrap_test,
    compare,
    mcnemar_interval,
    mcnemar_p,
)
from roma_eval.results import load_runs, metric_preferences


def test_mcnemar_by_hand_and_against_scipy():
    from scipy.stats import binomtest

    assert mcnemar_p(6, 0) == 2 / 64  # every discordant document went the candidate's wrong way: 2 P(X <= 0)
    assert mcnemar_p(5, 2) == 2 * (1 + 7 + 21) / 128  # 2 P(X <= 2), X ~ Bin(7, 1/2)
    assert mcnemar_p(0, 0) == 1.0 and mcnemar_p(0, 9) == 2 / 512 and mcnemar_p(3, 3) == 1.0
    for losses, wins in itertools.product(range(12), repeat=2):
        if losses + wins:  # under p = 1/2 the central and scipy's "minlike" two-sided p-values coincide
            assert mcnemar_p(losses, wins) == pytest.approx(binomtest(wins, losses + wins, 0.5).pvalue, rel=1e-9)


def test_mcnemar_interval_is_clopper_pearson_and_the_dual_of_its_test():
    """The printed interval excludes 0 exactly when p < alpha: the verdict can never contradict it."""
    from scipy.stats import beta

    for losses, wins in itertools.product(range(25), repeat=2):
        discordant, n = losses + wins, losses + wins + 13
        if not discordant:
            continue
        low, high = mcnemar_interval(losses, wins, n, 0.95)
        # Clopper-Pearson by its beta-quantile form, mapped from the share of wins to the accuracy difference.
        share_low = beta.ppf(0.025, wins, discordant - wins + 1) if wins else 0.0
        share_high = beta.ppf(0.975, wins + 1, discordant - wins) if losses else 1.0
        assert low == pytest.approx(discordant / n * (2 * share_low - 1), abs=1e-9)
        assert high == pytest.approx(discordant / n * (2 * share_high - 1), abs=1e-9)
        assert (low > 0 or high < 0) == (mcnemar_p(losses, wins) < 0.05)
        assert low <= (wins - losses) / n <= high


def test_bootstrap_matches_exhaustive_resampling():
    # All 5^5 resamples of five paired gains, enumerated: the exact two-sided bootstrap p-value and interval.
    gains = np.array([1.0, 1.0, 0.0, -1.0, 1.0])
    means = np.array([gains[list(idx)].mean() for idx in itertools.product(range(5), repeat=5)])
    exact = 2 * min(np.mean(means <= 0), np.mean(means >= 0))
    p, (low, high) = bootstrap_test(gains, 0.9, iterations=200_000, seed=1)
    assert p == pytest.approx(exact, abs=0.005)
    assert (low, high) == tuple(np.quantile(means, [0.05, 0.95], method="inverted_cdf"))


def test_bootstrap_on_continuous_values_and_no_change():
    rng = np.random.default_rng(0)
    worse = -rng.normal(0.3, 1.0, size=400)  # a real loss of 0.3 sd
    p, (low, high) = bootstrap_test(worse, iterations=2000)
    assert p < 0.01 and high < 0
    assert bootstrap_test(-worse, iterations=2000)[1][0] > 0
    assert bootstrap_test(np.zeros(10), iterations=100) == (1.0, (0.0, 0.0))


def test_bootstrap_verdicts_agree_with_their_p_values():
    rng = np.random.default_rng(4)
    for shift in np.linspace(-0.4, 0.4, 41):
        p, (low, high) = bootstrap_test(rng.normal(shift, 1.0, size=60), iterations=2000, seed=2)
        assert (low > 0 or high < 0) == (p < 0.05) or p == pytest.approx(0.05, abs=1e-3)


def test_planted_regression_is_caught(runs):
    check = compare(load_runs([str(runs / "base")]), load_runs([str(runs / "regressed")]), prefs=metric_preferences())
    verdicts = {c.benchmark: c for c in check.comparisons}
    assert [c.benchmark for c in check.comparisons] == ["toy_mmlu", "toy_arc_easy", "toy_boolq", "toy_gsm8k"]
    boolq = verdicts["toy_boolq"]
    assert (boolq.baseline, boolq.candidate, boolq.p_value, boolq.regression) == (50.0, 20.0, 2 / 64, True)
    assert boolq.verdict == WORSE and boolq.interval[1] < 0
    mmlu = verdicts["toy_mmlu"]  # 5 points lost, one document: beyond the threshold, not significant
    assert (mmlu.delta, mmlu.p_value, mmlu.regression, mmlu.verdict) == (pytest.approx(-5.0), 1.0, False, SAME)
    assert verdicts["toy_arc_easy"].delta == pytest.approx(12.5) and not verdicts["toy_arc_easy"].regression
    assert check.regressions == [boolq] and check.overall().startswith("REGRESSION: toy_boolq -30.0 pp")
    # The average is the mean of the benchmarks' scores, with a bootstrap over each benchmark's documents.
    assert check.average.delta == pytest.approx(np.mean([c.delta for c in check.comparisons]))
    assert check.average.interval[0] <= check.average.delta <= check.average.interval[1]


@pytest.mark.parametrize("max_drop, alpha, regressed", [(1.0, 0.05, True), (30.0, 0.05, False), (1.0, 0.01, False)])
def test_both_threshold_and_significance_are_needed(runs, max_drop, alpha, regressed):
    check = compare(load_runs([str(runs / "base")]), load_runs([str(runs / "regressed")]), prefs=metric_preferences(),
                    max_drop=max_drop, significance=Significance(alpha=alpha), benchmarks=["boolq"])
    assert [c.regression for c in check.comparisons] == [regressed] and check.average is None


def test_identical_runs_pass(runs):
    check = compare(load_runs([str(runs / "base")]), load_runs([str(runs / "base")]), prefs=metric_preferences())
    assert len(check.comparisons) == 4 and not check.regressions
    assert all(c.delta == 0 and c.p_value == 1 and c.verdict == SAME for c in [*check.comparisons, check.average])
    assert check.overall() == (f"NO REGRESSION: {BETTER} on 0, {WORSE} on 0, {SAME} on 4; "
                               f"average +0.0 pp [+0.0, +0.0], {SAME}")


def test_a_significant_gain_is_called_better(runs):
    check = compare(load_runs([str(runs / "regressed")]), load_runs([str(runs / "base")]), prefs=metric_preferences())
    boolq = {c.benchmark: c for c in check.comparisons}["toy_boolq"]
    assert (boolq.verdict, boolq.p_value, boolq.regression) == (BETTER, 2 / 64, False) and boolq.interval[0] > 0


def test_oracle_outputs_compare_with_lm_eval_runs(runs):
    result = compare(load_runs([str(runs / "base")]), load_runs([str(runs / "oracle")]), prefs=metric_preferences())
    gsm8k = result.comparisons[-1]
    assert gsm8k.metric == "exact_match,flexible-extract / exact_match,none" and gsm8k.candidate == 87.5


def test_check_cli_exit_codes(runs, verb, capsys, tmp_path):
    assert verb("check", ["--baseline", str(runs / "base"), "--candidate", str(runs / "regressed")]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 6  # four benchmarks, the average, the overall verdict: printed once
    assert lines[2].startswith("REGRESSION                toy_boolq: acc,none 50.0 -> 20.0 (-30.0 pp), 95% CI [")
    assert lines[4].startswith(tuple(f"{v:<25} average" for v in (BETTER, WORSE, SAME)))
    assert lines[5].startswith("REGRESSION: toy_boolq -30.0 pp (worse beyond --max-drop 1)")
    summary = tmp_path / "summary.md"
    assert verb("check", ["--baseline", str(runs / "base"), "--candidate", str(runs / "base"),
                          "--summary", str(summary)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("NO REGRESSION")
    assert summary.read_text().startswith("### roma-eval check: PASS — NO REGRESSION")
    assert verb("check", ["--baseline", str(runs / "base"), "--candidate", str(runs / "base"),
                          "--summary", str(summary)]) == 2
    assert "summary.md already exists" in capsys.readouterr().err


@pytest.mark.parametrize("baseline, candidate", [("base", "regressed"), ("regressed", "base"), ("base", "roma"),
                                                 ("base", "c3po"), ("base", "oracle")])
def test_every_printed_verdict_agrees_with_its_printed_interval(runs, verb, capsys, baseline, candidate):
    import re

    verb("check", ["--baseline", str(runs / baseline), "--candidate", str(runs / candidate)])
    lines = capsys.readouterr().out.splitlines()[:-1]
    for line in lines:
        verdict, low, high = re.match(r"(better|worse|REGRESSION|no significant difference) .* CI \[(\S+), (\S+)\]",
                                      line).groups()
        low, high = float(low), float(high)
        assert {"better": low >= 0, "worse": high <= 0, "REGRESSION": high <= 0, SAME: low <= 0 <= high}[verdict], line
        delta = float(re.search(r"\((\S+) pp\)", line).group(1))
        assert low <= delta <= high, line


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


def test_an_unknown_test_is_one_clear_error_and_the_cli_offers_the_same_tests():
    from roma_eval.cli import build_parser
    from roma_eval.report.check import TESTS

    with pytest.raises(RomaEvalError, match="test='exact' is unknown; use one of auto, mcnemar, bootstrap"):
        Significance(test="exact")
    _, parser = build_parser("check")
    assert next(a for a in parser._actions if a.dest == "test").choices == TESTS == ("auto", "mcnemar", "bootstrap")


def test_a_directory_of_several_methods_is_ambiguous(runs):
    with pytest.raises(RomaEvalError, match="several models or methods"):
        compare(load_runs([str(runs / "base")]), load_runs([str(runs / "roma"), str(runs / "c3po")]),
                prefs=metric_preferences())


def test_bootstrap_interval_matches_plain_index_resampling():
    """The multinomial shortcut against the textbook bootstrap (resample documents by index)."""
    gains = np.array([1.0] * 30 + [0.0] * 50 + [-1.0] * 20)
    rng = np.random.default_rng(1)
    plain = [gains[rng.integers(0, len(gains), len(gains))].mean() for _ in range(20_000)]
    expected = np.quantile(plain, [0.025, 0.975])
    _, (low, high) = bootstrap_test(gains, iterations=20_000, seed=3)
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
    assert lines[2].startswith("REGRESSION                toy_boolq: acc,none 50.0 -> 20.0")
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


# With --limit 10 the planted boolq loss is 5 of 5 discordant documents: two-sided p = 1/16, not significant.
@pytest.mark.parametrize("edits, message, allowed", [
    (limited(10), "toy_mmlu: limit none in the baseline, 10 (18 of 20 documents) in the candidate; toy_arc_easy: "
                  "limit none in the baseline, 10 (10 of 24 documents) in the candidate; toy_boolq:", 0),
    ((new_boolq_version, None), "toy_boolq: version 1.0 in the baseline, 2.0 in the candidate; re-run", 1),
    ((None, chat_template_on_boolq), "toy_boolq: prompts of 20 of 20 documents differ; re-run", 1),
], ids=["limit", "task-version", "prompts"])
def test_other_documents_or_prompts_are_refused(runs, derive_run, verb, capsys, edits, message, allowed):
    candidate = derive_run("candidate", "regressed", *edits)
    assert verb("check", ["--baseline", str(runs / "base"), "--candidate", str(candidate)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert message in line
    assert verb("check", ["--baseline", str(runs / "base"), "--candidate", str(candidate),
                          "--allow-prompt-change"]) == allowed


def test_another_dataset_is_refused_even_when_prompts_may_change(runs, derive_run, verb, capsys):
    def other_document(task, line):
        if task == "toy_boolq" and line["doc_id"] == 3:
            line["doc_hash"] = "0" * 64
    candidate = derive_run("candidate", "regressed", sample=other_document)
    assert verb("check", ["--baseline", str(runs / "base"), "--candidate", str(candidate),
                          "--allow-prompt-change"]) == 2
    assert "document 3 of toy_boolq differs" in capsys.readouterr().err

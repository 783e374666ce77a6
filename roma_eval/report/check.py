"""The regression gate: is a candidate run better, worse or not distinguishable from a baseline, per benchmark?

Both runs are compared document by document (paired on lm-eval's (task, doc_id), with doc_hash checked where both
have one).  Per benchmark, one two-sided paired test gives the p-value *and* the interval of candidate − baseline
at level 1 − alpha, each the other's dual, so a verdict never contradicts its interval:

* exact McNemar on 0/1 correctness: the candidate's share π of the discordant documents against ½ (central
  two-sided binomial p-value), and Clopper-Pearson's interval for π, the exact dual of that test, mapped onto the
  difference in accuracy (Δ = (discordant / n)·(2π − 1));
* a paired bootstrap of the mean gain otherwise: the percentile interval and the p-value 2·min(P*(Δ* ≤ 0),
  P*(Δ* ≥ 0)) from the same resamples.

"better" when the interval lies above 0, "worse" when below, else "no significant difference".  A benchmark
**regresses** (exit 1) when it is worse by more than ``max_drop`` points.  The average over benchmarks (the paper's
unweighted mean) gets its own bootstrap interval and verdict.  Routing gates (``routing_gates``, off by default) add
verdicts on the runs' routing analyses; a failed one is a regression too.

A score only means something next to another made the same way: runs whose prompts differ (lm-eval's
per-document prompt_hash, or the recorded n-shot, limit or task version) are refused unless
``allow_prompt_change``; another dataset (doc_hash) always is.  Runs computed by different engines (transformers
against an export on vLLM: their kernels and batching move log-likelihoods) are refused unless
``allow_backend_change``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from roma_eval.choices import check_choices
from roma_eval.errors import RomaEvalError
from roma_eval.report.formatting import fmt, interval_text
from roma_eval.report.routing_gates import GateResult
from roma_eval.report.templating import environment
from roma_eval.results import (
    PAPER_COLUMNS,
    Benchmark,
    Run,
    choose_metric,
    latest_cells,
    wanted_metrics,
)

BETTER, WORSE, SAME = "better", "worse", "no significant difference"
Test = Literal["auto", "mcnemar", "bootstrap"]
TESTS = get_args(Test)  # auto: exact McNemar on 0/1 correctness, the paired bootstrap otherwise


@dataclass(frozen=True)
class Significance:
    """How each verdict is reached: the paired test, its level 1 − ``alpha``, and the bootstrap's resamples and seed
    (the average's, and a benchmark's when the test is the bootstrap)."""

    alpha: float = 0.05
    test: Test = "auto"
    iterations: int = 10_000
    seed: int = 0

    def __post_init__(self):
        check_choices(self)


@dataclass(frozen=True)
class Comparison:
    benchmark: str  # the lm-eval task or group name, or "average"
    metric: str
    n: int
    baseline: float  # mean, percent
    candidate: float
    test: str
    p_value: float  # two-sided
    interval: tuple[float, float]  # candidate − baseline, points, at level 1 − alpha (the test's dual)
    regression: bool  # worse by more than max_drop
    note: str = ""

    @property
    def delta(self) -> float:
        return self.candidate - self.baseline

    @property
    def verdict(self) -> str:
        return BETTER if self.interval[0] > 0 else WORSE if self.interval[1] < 0 else SAME


@dataclass(frozen=True)
class _Paired:
    """One benchmark's per-document values of both runs, in the same document order."""

    benchmark: str  # the lm-eval task or group name
    metric: str
    baseline: np.ndarray
    candidate: np.ndarray
    sizes: tuple[int, int]  # documents of each run before pairing
    differences: tuple[str, ...]  # how the runs' prompts differ, e.g. "n-shot 5 in the baseline, 0 in the candidate"
    backends: tuple[str, str]  # the engine of each run (Run.backend)


def mcnemar_p(losses: int, wins: int) -> float:
    """Two-sided exact McNemar p-value, central: 2·min(P(X ≤ wins), P(X ≥ wins)) for X ~ Binomial(losses + wins, ½),
    at most 1.

    ``losses`` = documents the baseline gets right and the candidate wrong, ``wins`` the reverse;
    documents both get right (or wrong) carry no information about the difference.
    """
    from scipy.stats import binom

    discordant = losses + wins
    if not discordant:
        return 1.0
    return float(min(1.0, 2 * min(binom.cdf(wins, discordant, 0.5), binom.sf(wins - 1, discordant, 0.5))))


def mcnemar_interval(losses: int, wins: int, n: int, level: float) -> tuple[float, float]:
    """The interval of Δ accuracy dual to ``mcnemar_p``: Clopper-Pearson's for the candidate's share of the
    discordant documents, times (discordant / n), mapped from [0, 1] to [-1, 1]; it excludes 0 exactly when
    the p-value is below 1 − level."""
    from scipy.stats import binomtest

    discordant = losses + wins
    if not discordant:
        return 0.0, 0.0
    ci = binomtest(wins, discordant, 0.5).proportion_ci(confidence_level=level, method="exact")
    return discordant / n * (2 * ci.low - 1), discordant / n * (2 * ci.high - 1)


def _bootstrap_means(values: np.ndarray, iterations: int, seed: int) -> np.ndarray:
    """Means of ``iterations`` paired-bootstrap resamples of ``values`` (one value per document).

    Resampling documents with replacement only changes how often each distinct value is drawn, so
    the resamples are drawn as multinomial counts over the distinct values: the same distribution
    as resampling indices, and far cheaper (MMLU-sized, 14,042 0/1 documents, 10,000 resamples:
    1.9 ms against 1.57 s for ``scipy.stats.bootstrap``, bench/NOTES.md).
    """
    n = len(values)
    distinct, counts = np.unique(values, return_counts=True)
    rng = np.random.default_rng(seed)
    chunk = max(1, 4_000_000 // len(distinct))
    return np.concatenate([rng.multinomial(n, counts / n, size=min(chunk, iterations - done)) @ distinct / n
                           for done in range(0, iterations, chunk)])


def bootstrap_test(gains: np.ndarray, level: float = 0.95, iterations: int = 10_000,
                   seed: int = 0) -> tuple[float, tuple[float, float]]:
    """Two-sided paired bootstrap of the mean per-document gain (candidate − baseline): the p-value
    2·min(P*(Δ* ≤ 0), P*(Δ* ≥ 0)) and the percentile interval at ``level``, from the same resamples."""
    return _bootstrap_from_means(_bootstrap_means(gains, iterations, seed), level)


def _bootstrap_from_means(means: np.ndarray, level: float) -> tuple[float, tuple[float, float]]:
    p = min(1.0, 2 * min(float(np.mean(means <= 0)), float(np.mean(means >= 0))))
    # inverted_cdf: the lower end is above 0 exactly when fewer than (1 - level) / 2 of the resamples are <= 0.
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")
    return p, (float(low), float(high))


def compare(baseline: list[Run], candidate: list[Run], *, prefs: dict[str, tuple[str, ...]], max_drop: float = 1.0,
            significance: Significance = Significance(), benchmarks: list[str] | None = None,
            allow_prompt_change: bool = False, allow_backend_change: bool = False) -> Check:
    """One comparison per benchmark of the baseline (or of ``benchmarks``, by column or task name), and of their
    average when there are several; a benchmark regresses when significantly worse by more than ``max_drop`` points.

    Runs whose prompts differ are refused, every difference in one message, unless ``allow_prompt_change``:
    then they are compared and each verdict's note says how the prompts differ.  Likewise runs of different
    engines, unless ``allow_backend_change``.
    """
    base, cand = _by_benchmark(baseline, "baseline"), _by_benchmark(candidate, "candidate")
    wanted = [key for key in _ordered(base) if benchmarks is None or {key[1], base[key][1].task} & set(benchmarks)]
    if benchmarks is not None:
        known = {name for key, (_, bench) in base.items() for name in (key[1], bench.task)}
        if unknown := [b for b in benchmarks if b not in known]:
            raise RomaEvalError(f"the baseline has no benchmark {', '.join(unknown)}; it has "
                                f"{', '.join(sorted(b.task for _, b in base.values()))}")
    if missing := [base[key][1].task for key in wanted if key not in cand]:
        raise RomaEvalError(f"the candidate has no results for {', '.join(missing)}, which the baseline has; "
                            f"evaluate them or restrict the check with --benchmarks")
    paired = [_pair(base[key], cand[key], prefs) for key in wanted]
    if not allow_prompt_change and (changed := [p for p in paired if p.differences]):
        listed = "; ".join(f"{p.benchmark}: {' and '.join(p.differences)}" for p in changed)
        raise RomaEvalError(f"{listed}; re-run the candidate with the baseline's lm_eval settings, or pass "
                            f"--allow-prompt-change to compare anyway")
    if not allow_backend_change and (engines := {p.backends for p in paired if p.backends[0] != p.backends[1]}):
        listed = "; ".join(f"the baseline on {a}, the candidate on {b}" for a, b in sorted(engines))
        raise RomaEvalError(f"the runs were computed by different engines ({listed}), whose kernels and batching "
                            f"move scores; evaluate both on one backend, or pass --allow-backend-change to compare "
                            f"anyway")
    comparisons = [_compare_one(p, max_drop, significance) for p in paired]
    average = _average(paired, comparisons, max_drop, significance) if len(paired) > 1 else None
    return Check(comparisons, average, max_drop, significance.alpha)


@dataclass(frozen=True)
class Check:
    comparisons: list[Comparison]
    average: Comparison | None
    max_drop: float
    alpha: float
    gates: tuple[GateResult, ...] = ()  # the routing gates turned on (report.routing_gates)

    @property
    def regressions(self) -> list[Comparison]:
        return [c for c in [*self.comparisons, self.average] if c is not None and c.regression]

    @property
    def failed(self) -> bool:
        """A benchmark, the average or a routing gate regressed (exit status 1)."""
        return bool(self.regressions) or any(g.regression for g in self.gates)

    def overall(self) -> str:
        """The one line a CI log shows: the gate's verdict, then how the benchmarks, the average and the routing
        gates went."""
        counts = ", ".join(f"{verdict} on {sum(c.verdict == verdict for c in self.comparisons)}"
                           for verdict in (BETTER, WORSE, SAME))
        average = "" if self.average is None else (f"; average {fmt(self.average.delta, sign=True)} pp "
                                                   f"{_interval(self.average)}, {self.average.verdict}")
        gates = "" if not self.gates else "; routing " + ", ".join(
            f"{g.gate} {'REGRESSION' if g.regression else g.verdict}" for g in self.gates)
        failed = []
        if self.regressions:
            listed = ", ".join(f"{c.benchmark} {fmt(c.delta, sign=True)}" for c in self.regressions)
            failed.append(f"{listed} pp (worse beyond --max-drop {self.max_drop:g})")
        failed += [f"routing {g.gate} ({g.note})" for g in self.gates if g.regression]
        if failed:
            return f"REGRESSION: {'; '.join(failed)}; {counts}{average}{gates}"
        return f"NO REGRESSION: {counts}{average}{gates}"


def _interval(c: Comparison) -> str:
    return interval_text(*c.interval)


def _average(paired: list[_Paired], comparisons: list[Comparison], max_drop: float,
             significance: Significance) -> Comparison:
    """The unweighted mean over benchmarks (the paper's average): each benchmark's documents resampled on their own,
    the resampled mean gains averaged."""
    iterations, seed = significance.iterations, significance.seed
    means = np.mean([_bootstrap_means(p.candidate - p.baseline, iterations, seed + i) for i, p in enumerate(paired)],
                    axis=0)
    p_value, (low, high) = _bootstrap_from_means(means, 1 - significance.alpha)
    baseline = float(np.mean([c.baseline for c in comparisons]))
    candidate = float(np.mean([c.candidate for c in comparisons]))
    return Comparison(benchmark="average", metric=f"mean of {len(comparisons)} benchmarks",
                      n=sum(c.n for c in comparisons), baseline=baseline, candidate=candidate, test="bootstrap",
                      p_value=p_value, interval=(100 * low, 100 * high),
                      regression=high < 0 and baseline - candidate > max_drop)


def verdict_line(c: Comparison, alpha: float) -> str:
    """The benchmark's verdict first (REGRESSION for a worse one beyond the allowed drop), then the numbers."""
    return (f"{'REGRESSION' if c.regression else c.verdict:<25} {c.benchmark}: {c.metric} {fmt(c.baseline)} -> "
            f"{fmt(c.candidate)} ({fmt(c.delta, sign=True)} pp), {100 * (1 - alpha):g}% CI {_interval(c)}, {c.test} "
            f"p={c.p_value:.3g}, n={c.n}{'; ' + c.note if c.note else ''}")


def markdown_summary(check: Check, *, baseline: str, candidate: str) -> str:
    return environment("md").get_template("check.md.j2").render(
        check=check, baseline=baseline, candidate=candidate, level=f"{100 * (1 - check.alpha):g}", fmt=fmt,
        interval=_interval)


def _by_benchmark(runs: list[Run], name: str) -> dict[tuple[str, str], tuple[Run, Benchmark]]:
    cells = latest_cells(runs)
    sources = sorted({(model, method) for model, method, _, _ in cells})
    if len(sources) > 1:
        listed = ", ".join(f"{method} of {model}" for model, method in sources)
        raise RomaEvalError(f"the {name} holds runs of several models or methods ({listed}); "
                            f"point --{name} at the directory of one")
    if not cells:
        raise RomaEvalError(f"the {name} has no benchmark results")
    return {(suite, bench_name): value for (_, _, suite, bench_name), value in cells.items()}


def _ordered(cells: dict[tuple[str, str], tuple[Run, Benchmark]]) -> list[tuple[str, str]]:
    """The paper's column order first, then other benchmarks by name."""
    order = {c: i for i, c in enumerate(PAPER_COLUMNS)}
    return sorted(cells, key=lambda key: (key[0] == "other", order.get(key[1], len(order)), key))


def _pair(base: tuple[Run, Benchmark], cand: tuple[Run, Benchmark], prefs) -> _Paired:
    (base_run, base_bench), (cand_run, cand_bench) = base, cand
    # Each side takes its own preferred metric: the oracle logs gsm8k correctness without lm-eval's
    # filters, and its "exact_match,none" is the counterpart of a base run's flexible-extract.
    base_metric = choose_metric(base_run.metrics(base_bench), base_bench.name, prefs, base_bench.task)
    cand_metric = choose_metric(cand_run.metrics(cand_bench), cand_bench.name, prefs, cand_bench.task)
    for metric, run in ((base_metric, base_run), (cand_metric, cand_run)):
        if metric is None:
            wanted = wanted_metrics(prefs, base_bench.name, base_bench.task) or ()
            raise RomaEvalError(f"{base_bench.task}: {run.results_file} reports none of the metrics wanted "
                                f"({', '.join(wanted)}); choose one with --metric")
    metric = base_metric if base_metric == cand_metric else f"{base_metric} / {cand_metric}"
    a, b = base_run.samples(base_bench, base_metric), cand_run.samples(cand_bench, cand_metric)
    keys = sorted(a.keys() & b.keys())
    if not keys:
        raise RomaEvalError(f"{base_bench.task}: the two runs share no documents (task, doc_id); "
                            f"compare runs of the same task")
    for key in keys:
        if a[key].doc_hash and b[key].doc_hash and a[key].doc_hash != b[key].doc_hash:
            raise RomaEvalError(f"document {key[1]} of {key[0]} differs between {base_run.results_file.parent} and "
                                f"{cand_run.results_file.parent} (another dataset or task version); compare runs of "
                                f"the same task")
    was, now = base_run.settings(base_bench), cand_run.settings(cand_bench)
    differences = [f"{name} {was[name]} in the baseline, {now[name]} in the candidate" for name in was
                   if None not in (was[name], now[name]) and was[name] != now[name]]
    # Where both logged it (the oracle does not); catches what no setting records, e.g. a chat template.
    hashed = [k for k in keys if a[k].prompt_hash and b[k].prompt_hash]
    if changed := sum(a[k].prompt_hash != b[k].prompt_hash for k in hashed):
        differences.append(f"prompts of {changed} of {len(hashed)} documents differ")
    return _Paired(benchmark=base_bench.task, metric=metric, baseline=np.array([a[k].value for k in keys]),
                   candidate=np.array([b[k].value for k in keys]), sizes=(len(a), len(b)),
                   differences=tuple(differences), backends=(base_run.backend, cand_run.backend))


def _compare_one(paired: _Paired, max_drop: float, significance: Significance) -> Comparison:
    x, y = paired.baseline, paired.candidate
    alpha = significance.alpha
    binary = bool(np.isin(x, (0.0, 1.0)).all() and np.isin(y, (0.0, 1.0)).all())
    used = ("mcnemar" if binary else "bootstrap") if significance.test == "auto" else significance.test
    if used == "mcnemar" and not binary:
        raise RomaEvalError(f"{paired.benchmark}: {paired.metric} is not 0/1 per document, so McNemar does not "
                            f"apply; use --test bootstrap")
    n = len(x)
    if used == "mcnemar":
        losses, wins = int(((x == 1) & (y == 0)).sum()), int(((x == 0) & (y == 1)).sum())
        p, (low, high) = mcnemar_p(losses, wins), mcnemar_interval(losses, wins, n, 1 - alpha)
    else:
        p, (low, high) = bootstrap_test(y - x, 1 - alpha, significance.iterations, significance.seed)
    baseline, candidate = 100 * float(x.mean()), 100 * float(y.mean())
    notes = []
    if n < max(paired.sizes):
        notes.append(f"paired on {n} of {paired.sizes[0]} / {paired.sizes[1]} documents")
    if paired.differences:
        notes.append("prompts differ: " + " and ".join(paired.differences))
    if paired.backends[0] != paired.backends[1]:
        notes.append(f"backends differ: {paired.backends[0]} in the baseline, {paired.backends[1]} in the candidate")
    return Comparison(benchmark=paired.benchmark, metric=paired.metric, n=n, baseline=baseline,
                      candidate=candidate, test="McNemar" if used == "mcnemar" else "bootstrap", p_value=p,
                      interval=(100 * low, 100 * high), regression=high < 0 and baseline - candidate > max_drop,
                      note="; ".join(notes))

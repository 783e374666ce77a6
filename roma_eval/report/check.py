"""The regression gate: does a candidate run lose accuracy against a baseline, per benchmark?

Both runs are compared document by document (paired on lm-eval's (task, doc_id), with doc_hash
checked where both have one).  A benchmark regresses when the candidate's score drops by more than
``max_drop`` points *and* a one-sided paired test rejects "the candidate is not worse" at ``alpha``:
exact McNemar on 0/1 correctness (the usual case), a paired bootstrap otherwise.

A score only means something next to another made the same way: runs whose prompts differ (lm-eval's
per-document prompt_hash, or the recorded n-shot, limit or task version) are refused unless
``allow_prompt_change``; another dataset (doc_hash) always is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from roma_eval.errors import RomaEvalError
from roma_eval.report.tables import fmt
from roma_eval.report.templating import environment
from roma_eval.results import (
    PAPER_COLUMNS,
    Benchmark,
    Run,
    choose_metric,
    latest_cells,
    wanted_metrics,
)

TESTS = ("auto", "mcnemar", "bootstrap")


@dataclass(frozen=True)
class Comparison:
    benchmark: str  # the lm-eval task or group name
    metric: str
    n: int
    baseline: float  # mean, percent
    candidate: float
    test: str
    p_value: float
    regression: bool
    interval: tuple[float, float]  # 95% paired-bootstrap interval of candidate − baseline, points
    note: str = ""

    @property
    def delta(self) -> float:
        return self.candidate - self.baseline


@dataclass(frozen=True)
class _Paired:
    """One benchmark's per-document values of both runs, in the same document order."""

    benchmark: str  # the lm-eval task or group name
    metric: str
    baseline: np.ndarray
    candidate: np.ndarray
    sizes: tuple[int, int]  # documents of each run before pairing
    differences: tuple[str, ...]  # how the runs' prompts differ, e.g. "n-shot 5 in the baseline, 0 in the candidate"


def mcnemar_p(losses: int, wins: int) -> float:
    """One-sided exact McNemar p-value: P(X >= losses) for X ~ Binomial(losses + wins, 1/2).

    ``losses`` = documents the baseline gets right and the candidate wrong, ``wins`` the reverse;
    documents both get right (or wrong) carry no information about the difference.
    """
    from scipy.stats import binomtest

    return binomtest(losses, losses + wins, 0.5, alternative="greater").pvalue if losses + wins else 1.0


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


def bootstrap_p(drops: np.ndarray, iterations: int = 10_000, seed: int = 0) -> float:
    """One-sided paired-bootstrap p-value for "mean drop > 0" (Efron & Tibshirani's shifted null).

    ``drops`` = baseline − candidate per document.
    """
    observed = float(drops.mean())
    exceed = int(np.count_nonzero(_bootstrap_means(drops, iterations, seed) - observed >= observed - 1e-12))
    return (exceed + 1) / (iterations + 1)


def bootstrap_interval(gains: np.ndarray, level: float = 0.95, iterations: int = 10_000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile paired-bootstrap interval of the mean per-document gain (candidate − baseline)."""
    low, high = np.quantile(_bootstrap_means(gains, iterations, seed), [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def compare(baseline: list[Run], candidate: list[Run], *, prefs: dict[str, tuple[str, ...]], max_drop: float = 1.0,
            alpha: float = 0.05, test: str = "auto", benchmarks: list[str] | None = None, iterations: int = 10_000,
            seed: int = 0, allow_prompt_change: bool = False) -> list[Comparison]:
    """One comparison per benchmark of the baseline (or of ``benchmarks``, by column or task name).

    Runs whose prompts differ are refused, every difference in one message, unless ``allow_prompt_change``:
    then they are compared and each verdict's note says how the prompts differ.
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
    return [_compare_one(p, max_drop, alpha, test, iterations, seed) for p in paired]


def verdict_line(c: Comparison, max_drop: float, alpha: float) -> str:
    verdict = "REGRESSION" if c.regression else "PASS"
    return (f"{verdict:<10} {c.benchmark}: {c.metric} {fmt(c.baseline)} -> {fmt(c.candidate)} "
            f"({fmt(c.delta, sign=True)} pp; max drop {max_drop:g}), {c.test} p={c.p_value:.3g} "
            f"(alpha {alpha:g}), 95% CI [{fmt(c.interval[0], sign=True)}, {fmt(c.interval[1], sign=True)}], "
            f"n={c.n}{'; ' + c.note if c.note else ''}")


def markdown_summary(comparisons: list[Comparison], *, baseline: str, candidate: str, max_drop: float,
                     alpha: float) -> str:
    return environment("md").get_template("check.md.j2").render(
        comparisons=comparisons, regressions=sum(c.regression for c in comparisons), baseline=baseline,
        candidate=candidate, max_drop=max_drop, alpha=alpha, fmt=fmt)


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
                   differences=tuple(differences))


def _compare_one(paired: _Paired, max_drop: float, alpha: float, test: str, iterations: int,
                 seed: int) -> Comparison:
    x, y = paired.baseline, paired.candidate
    binary = bool(np.isin(x, (0.0, 1.0)).all() and np.isin(y, (0.0, 1.0)).all())
    used = ("mcnemar" if binary else "bootstrap") if test == "auto" else test
    if used == "mcnemar" and not binary:
        raise RomaEvalError(f"{paired.benchmark}: {paired.metric} is not 0/1 per document, so McNemar does not "
                            f"apply; use --test bootstrap")
    if used == "mcnemar":
        p = mcnemar_p(int(((x == 1) & (y == 0)).sum()), int(((x == 0) & (y == 1)).sum()))
    else:
        p = bootstrap_p(x - y, iterations, seed)
    baseline, candidate = 100 * float(x.mean()), 100 * float(y.mean())
    low, high = bootstrap_interval(y - x, iterations=iterations, seed=seed)
    notes = []
    if len(x) < max(paired.sizes):
        notes.append(f"paired on {len(x)} of {paired.sizes[0]} / {paired.sizes[1]} documents")
    if paired.differences:
        notes.append("prompts differ: " + " and ".join(paired.differences))
    return Comparison(benchmark=paired.benchmark, metric=paired.metric, n=len(x), baseline=baseline,
                      candidate=candidate, test="McNemar" if used == "mcnemar" else "bootstrap", p_value=p,
                      regression=(baseline - candidate > max_drop and p < alpha), interval=(100 * low, 100 * high),
                      note="; ".join(notes))

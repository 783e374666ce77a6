"""`roma-eval check`'s routing gates, off by default: besides scoring as well, a candidate's routers must not

* kill experts (``dead_experts``): an expert that no context token of any sample selects in the candidate, in an
  analysed layer, must be dead in the baseline too;
* lose manifold alignment (``alignment``): the candidate's overall kNN overlap must not lie below the baseline's
  bootstrap interval (its lower end).

Both read each side's routing_analysis.json (`roma-eval analyze`), which must have analysed the same layers, tasks
and limit with the same k and embedder: otherwise their numbers describe different things.
"""

from __future__ import annotations

from dataclasses import dataclass

from roma_eval.errors import RomaEvalError
from roma_eval.report.formatting import fmt, interval_text
from roma_eval.results import RoutingAnalysis, Run, read_routing_analysis

GATES = ("dead_experts", "alignment")
REGRESSION = "REGRESSION"
DIGITS = 3


@dataclass(frozen=True)
class GateResult:
    gate: str  # one of GATES
    verdict: str  # "better", or what passing means for the gate
    baseline: str  # the baseline's figure, as printed
    candidate: str
    regression: bool
    note: str = ""

    def line(self) -> str:
        """The gate's verdict line, laid out as check's benchmark lines."""
        verdict = REGRESSION if self.regression else self.verdict
        return (f"{verdict:<25} routing {self.gate}: {self.baseline} -> {self.candidate}"
                f"{'; ' + self.note if self.note else ''}")


def parse_gates(text: str) -> tuple[str, ...]:
    """``--routing_gates`` ("all", or a comma-separated list of GATES) -> the gates, in GATES' order."""
    wanted = {g.strip() for g in text.split(",") if g.strip()}
    if "all" in wanted:
        return GATES
    if not wanted or wanted - set(GATES):
        raise RomaEvalError(f"--routing_gates {text!r}: choose among {', '.join(GATES)} (comma-separated), or all")
    return tuple(g for g in GATES if g in wanted)


def routing_gates(baseline: list[Run], candidate: list[Run], gates: tuple[str, ...]) -> list[GateResult]:
    """The gates' verdicts for the routing analyses beside each side's latest results file."""
    base, cand = _analysis(baseline, "baseline"), _analysis(candidate, "candidate")
    if differences := _differences(base, cand):
        raise RomaEvalError(f"the routing analyses differ in {'; '.join(differences)}; re-run `roma-eval analyze` "
                            f"on both runs with the same settings")
    checks = {"dead_experts": _dead_experts, "alignment": _alignment}
    return [checks[gate](base, cand) for gate in gates]


def _analysis(runs: list[Run], side: str) -> RoutingAnalysis:
    latest = max(runs, key=lambda run: run.date)
    if not latest.routing_analysis_file.is_file():
        raise RomaEvalError(f"--routing_gates: the {side} run {latest.results_file.parent} has no "
                            f"{latest.routing_analysis_file.name}; write it with `roma-eval analyze "
                            f"{latest.results_file.parent}`")
    return read_routing_analysis(latest.routing_analysis_file)


def _differences(base: RoutingAnalysis, cand: RoutingAnalysis) -> list[str]:
    aspects = {"num_experts": lambda a: a.num_experts, "layers": lambda a: list(a.layers),
               "tasks": lambda a: sorted(a.tasks), "limit": lambda a: a.limit, "k": lambda a: a.settings.get("k"),
               "embedder": lambda a: a.settings.get("embedder")}
    return [f"{name} ({value(base)} in the baseline, {value(cand)} in the candidate)"
            for name, value in aspects.items() if value(base) != value(cand)]


def _dead_experts(base: RoutingAnalysis, cand: RoutingAnalysis) -> GateResult:
    """New dead experts (dead in the candidate, alive in the baseline) in any layer fail the gate; experts revived
    and none killed is better."""
    was = {layer: set(base.per_layer[layer].dead_experts) for layer in base.layers}
    now = {layer: set(cand.per_layer[layer].dead_experts) for layer in cand.layers}
    killed = {layer: sorted(now[layer] - was[layer]) for layer in now if now[layer] - was[layer]}
    revived = sum(len(was[layer] - now[layer]) for layer in was)
    listed = "; ".join(f"L{layer}: {', '.join(map(str, experts))}" for layer, experts in killed.items())
    verdict = "better" if revived and not killed else "no new dead experts"
    note = f"new dead experts {listed}" if killed else f"{revived} revived" if revived else ""
    return GateResult("dead_experts", verdict, _dead_count(was), _dead_count(now), bool(killed), note)


def _dead_count(dead: dict[int, set[int]]) -> str:
    return f"{sum(map(len, dead.values()))} dead experts in {len(dead)} layers"


def _alignment(base: RoutingAnalysis, cand: RoutingAnalysis) -> GateResult:
    """The candidate's overall kNN overlap below the baseline's interval fails the gate; above it is better."""
    if missing := [side for side, a in (("baseline", base), ("candidate", cand)) if a.overall is None]:
        raise RomaEvalError(f"--routing_gates alignment: the {' and '.join(missing)} analysis has no overall "
                            f"alignment (fewer than 2 samples); analyse more documents (roma-eval analyze --limit)")
    low, high = base.overall.knn_overlap_interval
    value = cand.overall.knn_overlap
    verdict = "better" if value > high else "within the baseline's interval"
    note = f"below the baseline's lower end {fmt(low, DIGITS)}" if value < low else ""
    return GateResult("alignment", verdict, _overlap(base), _overlap(cand), value < low, note)


def _overlap(analysis: RoutingAnalysis) -> str:
    overall = analysis.overall
    return (f"kNN overlap {fmt(overall.knn_overlap, DIGITS)} "
            f"{interval_text(*overall.knn_overlap_interval, DIGITS, False)} (k={analysis.settings.get('k')})")

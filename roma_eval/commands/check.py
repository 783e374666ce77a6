"""`roma-eval check`: the regression gate — is a candidate run better, worse or indistinguishable from a baseline?

Exit status: 0 no regression, 1 a benchmark (or the average) is significantly worse by more than --max-drop or a
routing gate (--routing_gates) fails, 2 bad input or runs that cannot be compared.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from roma_eval.commands.options import flag
from roma_eval.errors import RomaEvalError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from roma_eval.report.check import TESTS

    parser.add_argument("--baseline", required=True, metavar="PATH",
                        help="lm-eval output (directory or results_*.json, with samples_*.jsonl from --log_samples)")
    parser.add_argument("--candidate", required=True, metavar="PATH", help="the run to check, same form")
    parser.add_argument(*flag("max_drop"), type=float, default=1.0,
                        help="points a significantly worse benchmark may lose before it fails the gate "
                             "(default: %(default)s)")
    parser.add_argument("--alpha", type=float, default=0.05,
                        help="significance level of the two-sided paired test; the intervals are at 1 - alpha "
                             "(default: %(default)s)")
    parser.add_argument("--test", choices=TESTS, default="auto",
                        help="auto: exact McNemar (with its Clopper-Pearson interval) on 0/1 correctness, paired "
                             "bootstrap otherwise (default: %(default)s)")
    parser.add_argument("--benchmarks", default=None,
                        help="comma-separated benchmarks to check (paper column or lm-eval task name); default: all "
                             "of the baseline's")
    parser.add_argument("--metric", action="append", metavar="COLUMN=METRIC[,FILTER]",
                        help="the lm-eval metric of a column, e.g. arc_easy=acc (repeatable)")
    parser.add_argument(*flag("allow_prompt_change"), action="store_true",
                        help="compare runs whose prompts differ (n-shot, limit, task version or lm-eval's per-document "
                             "prompt_hash) instead of refusing them; each verdict then says how they differ")
    parser.add_argument(*flag("allow_backend_change"), action="store_true",
                        help="compare runs computed by different engines (e.g. --model roma on transformers against "
                             "an export on --model vllm) instead of refusing them; each verdict then says so")
    parser.add_argument(*flag("bootstrap_iterations"), type=int, default=10_000, help="default: %(default)s")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: %(default)s)")
    parser.add_argument(*flag("routing_gates"), nargs="?", const="all", default=None, metavar="GATES",
                        help="also gate on the runs' routing (each run needs its routing_analysis.json, written by "
                             "roma-eval analyze): dead_experts fails on an expert dead in the candidate but not in "
                             "the baseline, in any analysed layer; alignment fails when the candidate's overall kNN "
                             "overlap lies below the baseline's bootstrap interval. Comma-separated, or no value for "
                             "both (default: off)")
    parser.add_argument("--summary", type=Path, default=None,
                        help="also write the verdicts as a Markdown table to this file (e.g. a CI job summary)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --summary file")


def run(args) -> int:
    from roma_eval.claims import claim_output
    from roma_eval.report.check import Significance, compare, markdown_summary, verdict_line
    from roma_eval.report.output import refuse_existing, write_atomic
    from roma_eval.report.routing_gates import parse_gates, routing_gates
    from roma_eval.results import load_runs, metric_preferences, parse_metric_overrides

    if not 0 < args.alpha < 1 or args.max_drop < 0 or args.bootstrap_iterations < 1:
        raise RomaEvalError("--alpha must be in (0, 1), --max-drop >= 0 and --bootstrap-iterations >= 1")
    gates = parse_gates(args.routing_gates) if args.routing_gates is not None else ()
    if args.summary:
        refuse_existing([args.summary], args.overwrite, "--summary")
        claim_output(args.summary, "--summary", directory=False)
    benchmarks = [b.strip() for b in args.benchmarks.split(",") if b.strip()] if args.benchmarks else None
    baseline, candidate = load_runs([args.baseline]), load_runs([args.candidate])
    gate_results = tuple(routing_gates(baseline, candidate, gates)) if gates else ()  # a missing analysis fails early
    prefs = metric_preferences(parse_metric_overrides(args.metric), baseline + candidate)
    significance = Significance(alpha=args.alpha, test=args.test, iterations=args.bootstrap_iterations,
                                seed=args.seed)
    check = compare(baseline, candidate, prefs=prefs, max_drop=args.max_drop, significance=significance,
                    benchmarks=benchmarks, allow_prompt_change=args.allow_prompt_change,
                    allow_backend_change=args.allow_backend_change)
    check = replace(check, gates=gate_results)
    for comparison in [*check.comparisons, *([check.average] if check.average else [])]:
        print(verdict_line(comparison, args.alpha))
    for gate in check.gates:
        print(gate.line())
    print(check.overall())
    if args.summary:
        write_atomic(args.summary, markdown_summary(check, baseline=args.baseline, candidate=args.candidate))
    return 1 if check.failed else 0

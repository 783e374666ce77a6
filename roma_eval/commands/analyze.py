"""`roma-eval analyze RUN_DIR [RUN_DIR ...]`: what the routers do in each lm-eval run (docs/analysis.md).

For every run found under the paths (what `lm_eval --output_path OUT --log_samples` wrote with --model hf or roma;
the newest results file of each directory), the same tasks and documents are read again with lm-eval's prompts and
the model's routing is recorded at every context token of the analysed layers: expert load, dead and overloaded
experts, routing entropy, top-k margin, how far the routing moved from the base model's, and the alignment of the
routing with the embedding manifold (RoMA's premise), per task and overall.  `routing_analysis.json` and the routing
dump (`routing_analysis.npz`, the report's manifold figure) are written beside the run's results.

Runs of one base model share one load of it.  One run that has no single routing (the oracle, C3PO, ICL, a peft
adapter, a dense model) is refused; among several, such runs are skipped with a notice.  A run analysed before with
the same settings is skipped; one analysed with other settings needs --overwrite.
"""

from __future__ import annotations

import argparse


def parents() -> list[argparse.ArgumentParser]:
    from roma_eval.analysis.config import AnalysisConfig
    from roma_eval.commands.options import config_parser

    return [config_parser(AnalysisConfig)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from roma_eval.commands.options import add_progress, flag

    parser.add_argument("runs", nargs="+", metavar="RUN_DIR",
                        help="lm-eval output directories (--output_path of lm_eval, a stage of `roma-eval reproduce`) "
                             "or results_*.json files")
    parser.add_argument(*flag("include_path"), action="append", default=[],
                        help="extra directory of task YAMLs (for runs of tasks neither lm-eval nor roma-eval has)")
    parser.add_argument("--device", default=None, help="torch device (default: accelerate's choice, GPU if present)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an analysis written with other settings (one with the same settings is kept)")
    add_progress(parser)


def summary_line(planned) -> str:
    """One run's outcome: its directory, and the alignment figures when computed here."""
    if planned.document is None:
        return f"{planned.run.directory}: already analysed with these settings ({planned.run.output.name})"
    overall = planned.document["alignment"]["overall"]
    low, high = overall["knn_overlap_interval"]
    gap_low, gap_high = overall["similarity_gap_interval"]
    return (f"{planned.run.directory}: {planned.document['method']}, {overall['n']} samples, layers "
            f"{planned.document['layers']}: kNN overlap {overall['knn_overlap']:.3f} [{low:.3f}, {high:.3f}] "
            f"(chance {overall['knn_overlap_chance']:.3f}), neighbour − random routing similarity "
            f"{overall['similarity_gap']:+.3f} [{gap_low:+.3f}, {gap_high:+.3f}]")


def run(args) -> int:
    from roma_eval.analysis.analyse import Where, analyse_planned, plan
    from roma_eval.analysis.config import AnalysisConfig
    from roma_eval.analysis.runs import find_runs
    from roma_eval.claims import claim_output
    from roma_eval.commands.options import config_from_args

    config = config_from_args(AnalysisConfig, args)
    runs = find_runs(args.runs)
    planned = plan(runs, config, args.overwrite)  # every refusal before anything is claimed or loaded
    for item in planned:
        if not item.done:
            claim_output(item.run.output, "RUN_DIR", directory=False)
    where = Where(tuple(args.include_path), args.device, not args.no_progress)
    for item in analyse_planned(planned, config, where):
        print(summary_line(item))
    return 0

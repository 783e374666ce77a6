"""`roma-eval report`: the paper's tables (Markdown, LaTeX, HTML) and plots from lm-eval result directories."""

from __future__ import annotations

import argparse
from pathlib import Path

from roma_eval.commands.options import flag
from roma_eval.errors import RomaEvalError

FORMATS = ("md", "tex", "html")
PAPER_MODELS = ("olmoe", "deepseekmoe", "qwen3")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="*", metavar="[LABEL=]PATH",
                        help="a directory lm_eval --output_path wrote (searched recursively) or a results_*.json; "
                             "LABEL names the method of its runs (default: from lm-eval's --model and --model_args: "
                             "hf -> base; roma with router_checkpoint -> the method its router_config.json records "
                             "(roma, router_tuning, oracle_tuning, dense_bp); hf / hf-peft with peft= -> the adapter's "
                             "(prefix_tuning, prompt_tuning); icl, c3po, oracle).  Runs of one method that evaluated "
                             "different things (another router checkpoint, other model_args, limit or chat template) "
                             "are separate rows, named by their PATH")
    parser.add_argument(*flag("output_path"), type=Path, default=Path("reports/report"),
                        help="directory for report.md, report.tex, report.html, results.csv and plots/ "
                             "(default: %(default)s)")
    parser.add_argument("--paper", action="store_true",
                        help="add the paper's published Table 1 (RoMA, three models) and C3PO's Table 1")
    parser.add_argument(*flag("paper_dir"), type=Path, default=None,
                        help="read the published CSVs (table1_<model>.csv, c3po_table1.csv) from here "
                             "instead of the copy shipped with roma-eval")
    parser.add_argument(*flag("paper_model"), choices=PAPER_MODELS, default=None,
                        help="compare our runs with this model's published rows (default: guessed from the model name)")
    parser.add_argument("--metric", action="append", metavar="COLUMN=METRIC[,FILTER]",
                        help="the lm-eval metric of a column, e.g. arc_easy=acc or gsm8k=exact_match,strict-match "
                             "(repeatable; defaults in docs/report.md)")
    parser.add_argument("--columns", choices=("all", "present"), default="all",
                        help="all: the paper's 8 columns, missing cells shown as '—'; present: only columns some "
                             "method has, averaged over those (default: %(default)s)")
    parser.add_argument("--format", default=",".join(FORMATS),
                        help="comma-separated outputs among md, tex, html (default: %(default)s)")
    parser.add_argument(*flag("no_plots"), action="store_true", help="write no figures")
    parser.add_argument(*flag("paper_style"), action="store_true",
                        help="lay the tables out as the paper's Table 1: bare numbers, without the documents per "
                             "benchmark (n), chance, significance marks and paired intervals shown by default")
    parser.add_argument("--title", default="roma-eval report", help="the report's title")
    parser.add_argument("--overwrite", action="store_true", help="replace report files that already exist")


def run(args) -> int:
    from roma_eval.claims import claim_output
    from roma_eval.report.build import PaperSource, build_report
    from roma_eval.report.paper import PUBLISHED_DIR
    from roma_eval.report.render import write_report
    from roma_eval.results import load_runs, parse_metric_overrides

    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    if not formats or any(f not in FORMATS for f in formats):
        raise RomaEvalError(f"--format {args.format!r}: choose among {', '.join(FORMATS)} (comma-separated)")
    if not args.runs and not args.paper:
        raise RomaEvalError("nothing to report: give result directories (lm_eval --output_path) and/or --paper")
    claim_output(args.output_path)
    source = PaperSource(model=args.paper_model, directory=args.paper_dir or PUBLISHED_DIR)
    report = build_report(load_runs(args.runs), metric_overrides=parse_metric_overrides(args.metric),
                          columns=args.columns, paper=args.paper, paper_source=source, plots=not args.no_plots,
                          title=args.title, paper_style=args.paper_style)
    for path in write_report(report, args.output_path, formats=formats, overwrite=args.overwrite):
        print(path)
    return 0

"""`roma-eval <verb>`: the project's command line.

Each verb lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
the modules are imported only when building the parser, and must keep heavy imports (torch,
transformers, lm_eval) inside ``run`` so ``roma-eval --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from roma_eval import __version__
from roma_eval.errors import RomaEvalError

# verb -> (module, one-line help)
VERBS = {
    "demo": ("roma_eval.commands.demo",
             "the whole story on the embedded toy world: base, RoMA, oracle and C3PO on 8 benchmarks, then the report"),
    "toy": ("roma_eval.commands.toy", "the embedded toy world: build its MoE, list or show its lm-eval tasks"),
    "tasks": ("roma_eval.commands.tasks", "the paper's 8 evaluation benchmarks and 49k training mixture as lm-eval groups"),
    "eval": ("roma_eval.commands.eval", "run lm-eval (any --model) with roma-eval's tasks/ on the include path"),
    "train": ("roma_eval.commands.train", "RoMA router post-training: routers only, task loss + manifold regulariser"),
    "oracle": ("roma_eval.commands.oracle",
               "the routing upper bound: per-sample routing gradient descent with the gold label"),
    "c3po": ("roma_eval.commands.c3po", "C3PO's reference set (build-reference); evaluate with --model c3po"),
    "report": ("roma_eval.commands.report",
               "paper-style tables (Markdown, LaTeX, HTML) and plots from lm-eval results; --paper adds the published tables"),
    "check": ("roma_eval.commands.check",
              "regression gate: per-benchmark paired test of a candidate run against a baseline"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="roma-eval", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"roma-eval {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="<verb>", required=True)
    for verb, (module_name, help_text) in VERBS.items():
        module = importlib.import_module(module_name)
        verb_parser = sub.add_parser(verb, help=help_text, description=help_text)
        module.add_arguments(verb_parser)
        verb_parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "_accepts_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    try:
        return int(args._run(args) or 0)
    except RomaEvalError as exc:
        print(f"roma-eval {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # stdout closed by the reader (`roma-eval toy tasks | head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print(f"roma-eval {args.verb}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

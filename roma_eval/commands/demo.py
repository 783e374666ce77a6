"""`roma-eval demo`: the whole story on the embedded toy world, offline, on a laptop CPU.

Builds (or loads from the cache) a small pretrained OLMoE, evaluates it on the eight toy
benchmarks through lm-eval, writes lm-eval-format results under reports/demo/ and prints a table.
"""

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from roma_eval.commands.options import add_progress, flag

    parser.add_argument("--preset", default="default", choices=("default", "fast"),
                        help="default: the README's demo; fast: a briefly trained model and 16 docs per "
                             "benchmark (CI smoke test)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the toy model's weights and pretraining text")
    parser.add_argument(*flag("output_path"), default=None,
                        help="results directory (default: reports/demo, or reports/demo-fast for --preset fast)")
    parser.add_argument(*flag("batch_size"), type=int, default=32,
                        help="lm-eval batch size; plain `lm_eval ... --batch_size` with the same value reproduces "
                             "every "
                             "number")
    parser.add_argument("--overwrite", action="store_true", help="recompute stages whose results already exist")
    add_progress(parser)


def run(args) -> int:
    from roma_eval.demo import DemoContext, run_demo, summary

    ctx = DemoContext.from_preset(args.preset, seed=args.seed, output=args.output_path, batch_size=args.batch_size,
                                  overwrite=args.overwrite, progress=not args.no_progress)
    print(summary(run_demo(ctx)))
    return 0

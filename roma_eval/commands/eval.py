"""`roma-eval eval ARGS...`: exactly `lm_eval run ARGS...`, with roma-eval's tasks/ on the include path.

Any --include_path you give is kept and searched alongside ours.
"""

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = "roma-eval eval --model roma --model_args pretrained=M,router_checkpoint=C --tasks T [lm_eval run options]"
    parser.epilog = "All arguments are passed to `lm_eval run`; see `lm_eval run --help`."
    parser.set_defaults(_accepts_extra=True)


def run(args) -> int:
    from lm_eval._cli import HarnessCLI
    from lm_eval.utils import setup_logging

    from roma_eval.resources import tasks_dir

    setup_logging()
    cli = HarnessCLI()
    sys.argv = ["lm_eval", "run", *args.extra]
    lm_args = cli.parse_args()
    # lm-eval's CLI takes one include path; its TaskManager takes a list.
    lm_args.include_path = [str(tasks_dir())] + ([lm_args.include_path] if lm_args.include_path else [])
    cli.execute(lm_args)
    return 0

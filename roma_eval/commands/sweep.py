"""`roma-eval sweep --pretrained M --router_checkpoints A,B,C --tasks T --output_path OUT`: several router
checkpoints of one base model evaluated by lm-eval with one load of the base model (roma_eval/methods/roma/sweep.py).

Checkpoint C's run goes where `lm_eval --model roma --model_args pretrained=M,router_checkpoint=C --tasks T
--output_path OUT/<name> --log_samples` puts it, with the same files; `roma-eval report OUT` shows one row per
checkpoint.  Every checkpoint is checked before the model loads; one already evaluated into its directory with the
same settings is not evaluated again (--overwrite recomputes it), so an interrupted sweep resumes.  Prints one line
per checkpoint, then lm-eval's results table as `lm_eval` prints it.
"""

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from roma_eval.commands.options import add_base_model, add_chat_template, add_output, add_tasks, flag

    add_base_model(parser)
    parser.add_argument(*flag("router_checkpoints"), required=True, metavar="A,B,...",
                        help="comma-separated router checkpoints of the base model (directories written by "
                             "`roma-eval train` and the other router-training verbs, or hub ids)")
    add_tasks(parser, "comma-separated lm-eval tasks or groups, e.g. roma_paper")
    parser.add_argument(*flag("batch_size"), type=str, default=1,
                        help="lm-eval's --batch_size: an integer, auto or auto:N")
    add_output(parser, "as lm-eval's --output_path, one per checkpoint: C's run goes to "
                       "OUT/<name>/<model name, sanitized>/, <name> being C's directory name (with its parent "
                       "directories' names, joined by __, where two checkpoints' directories share a name)")
    add_chat_template(parser)


def _settings(args):
    """The sweep's settings from the flags, the tasks checked (unknown names are one line)."""
    import torch

    from roma_eval.commands.options import chat_template_args, split_list
    from roma_eval.errors import RomaEvalError
    from roma_eval.harness import check_limit, parse_model_args, task_manager
    from roma_eval.methods.roma.sweep import SweepSettings

    check_limit(args.limit)
    tasks = split_list(args.tasks)
    if not tasks:
        raise RomaEvalError("--tasks is empty; give comma-separated lm-eval tasks or groups")
    options = chat_template_args(args)  # before the task index: a flag mistake is found in no time
    base = {"pretrained": args.pretrained, "revision": args.revision,
            "dtype": None if args.dtype == "auto" else args.dtype, "trust_remote_code": args.trust_remote_code or None}
    model_args = parse_model_args(",".join(f"{key}={value}" for key, value in base.items() if value is not None))
    # HFLM's own default device is "cuda", which fails on a machine without one.
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return SweepSettings(model_args, tuple(tasks), args.output_path, task_manager(args.include_path, tasks),
                         {"limit": args.limit, "batch_size": args.batch_size, "device": device, **options})


def _line(number: int, total: int, outcome) -> str:
    from roma_eval import registry

    entry = outcome.entry
    head = f"[{number}/{total}] {registry.label(entry.method)} {entry.source}"
    if outcome.skipped:
        return f"{head}: evaluated before with these settings, {outcome.results_file} (--overwrite recomputes it)"
    return f"{head} -> {outcome.results_file} ({outcome.seconds:.1f} s)"


def run(args) -> int:
    import os
    from pathlib import Path

    from roma_eval.claims import claim_output
    from roma_eval.commands.options import split_list
    from roma_eval.errors import RomaEvalError
    from roma_eval.harness import tables
    from roma_eval.methods.roma.sweep import load_base, plan, prepare, sweep
    from roma_eval.model_loading import check_model_source

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise RomaEvalError("sweep runs in one process (one model, routers swapped in place); run it without "
                            "accelerate launch / torchrun")
    args.output_path = Path(args.output_path)
    check_model_source(args.pretrained, args.revision, args.trust_remote_code)
    settings = _settings(args)
    entries = prepare(split_list(args.router_checkpoints), settings)
    claim_output(settings.output_path)
    plan(entries, settings, args.overwrite)
    lm = load_base(settings) if any(entry.done is None for entry in entries) else None
    for number, outcome in enumerate(sweep(lm, entries, settings), start=1):
        print(_line(number, len(entries), outcome), flush=True)
        print(tables(outcome.results), flush=True)
    return 0

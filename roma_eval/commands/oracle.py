"""`roma-eval oracle --model M --tasks T [--out DIR]`: the oracle routing upper bound (flags = OracleConfig fields).

lm-eval evaluates the oracle like any model (`OracleLM`, roma_eval/oracle/lm_eval.py) and writes what
`lm_eval --output_path DIR --log_samples` writes, in DIR/<model_name_sanitized>/ (groups such as MMLU's
total included); `roma-eval report` reads it as the "oracle" method.  Rerun the same command to resume an
interrupted run.
"""

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from roma_eval.commands.options import add_config_fields, add_model_and_tasks
    from roma_eval.oracle.config import OracleConfig

    add_model_and_tasks(parser, dtype="auto", dtype_help="model dtype (auto, float32, bfloat16, float16)",
                        tasks_help="comma-separated lm-eval tasks or groups with gold labels")
    parser.add_argument("--device", default=None, help="torch device (default: accelerate's choice, GPU if present)")
    parser.add_argument("--split", choices=("eval", "train"), default="eval",
                        help="documents to run on (train: e.g. oracle routing targets for training)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many documents per task")
    parser.add_argument("--out", default="oracle",
                        help="output directory, as lm-eval's --output_path: the run goes to OUT/<model name, "
                             "sanitized>/ (default: oracle)")
    parser.add_argument("--overwrite", action="store_true", help="replace the oracle results already in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_fields(parser.add_argument_group("oracle configuration (docs/oracle.md)"), OracleConfig)


def run(args) -> int:
    import logging

    from lm_eval.utils import sanitize_model_name

    from roma_eval.commands.options import config_from_args
    from roma_eval.errors import RomaEvalError
    from roma_eval.oracle import OracleConfig, OracleStore, gap_table, load_oracle_tasks, run_oracle

    if args.limit is not None and args.limit < 1:
        raise RomaEvalError(f"--limit {args.limit}: give at least 1 document per task, or leave it out")
    config = config_from_args(OracleConfig, args)
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    tasks = load_oracle_tasks(args.tasks.split(","), args.include_path, args.split, args.limit)
    # Refuse a directory holding another run before the (possibly large) model is loaded.
    OracleStore.precheck(f"{args.out}/{sanitize_model_name(args.model)}",
                         {"tasks": tasks.names, "split": tasks.split, "limit": tasks.limit,
                          "settings": config.settings()}, args.overwrite)

    from roma_eval.model_loading import load_model

    if args.no_progress:
        import transformers

        transformers.utils.logging.disable_progress_bar()
    model, tokenizer = load_model(args.model, args.revision, args.dtype, args.device,
                                  trust_remote_code=args.trust_remote_code)
    result = run_oracle(model, tokenizer, tasks, args.out, config, model_name=args.model, overwrite=args.overwrite,
                        progress=not args.no_progress)
    if result.resumed_complete:
        print(f"{result.results_file.parent} already holds this complete oracle run; pass --overwrite to recompute it")
    print("\n".join(gap_table(result.results)))
    print(result.results_file)
    return 0

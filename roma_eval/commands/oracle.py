"""`roma-eval oracle --model M --tasks T [--out DIR]`: the oracle routing upper bound (flags = OracleConfig fields).

Writes lm-eval-style results (results_<date>.json, samples_<task>_<date>.jsonl) that `roma-eval report`
reads as the "oracle" method; rerun the same command to resume an interrupted run.
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
    parser.add_argument("--out", default=None, help="output directory (default: oracle/<model name>)")
    parser.add_argument("--overwrite", action="store_true", help="replace the oracle results already in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_fields(parser.add_argument_group("oracle configuration (docs/oracle.md)"), OracleConfig)


def default_out(model: str) -> str:
    return f"oracle/{model.rstrip('/').split('/')[-1]}"


def run(args) -> int:
    from lm_eval.models.huggingface import HFLM

    from roma_eval.commands.options import config_from_args
    from roma_eval.errors import RomaEvalError
    from roma_eval.model_loading import load_model
    from roma_eval.oracle import OracleConfig, gap_table, load_oracle_tasks, run_oracle

    if args.limit is not None and args.limit < 1:
        raise RomaEvalError(f"--limit {args.limit}: give at least 1 document per task, or leave it out")
    config = config_from_args(OracleConfig, args)
    tasks, group_map = load_oracle_tasks([t for t in args.tasks.split(",") if t], args.include_path, args.split,
                                         args.limit)
    model, tokenizer = load_model(args.model, args.revision, args.dtype, args.device,
                                  trust_remote_code=args.trust_remote_code)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=1)
    out = args.out or default_out(args.model)
    run_result = run_oracle(lm, tasks, out, config, model_name=args.model, group_map=group_map, split=args.split,
                            limit=args.limit, overwrite=args.overwrite, progress=not args.no_progress)
    if run_result.resumed_complete:
        print(f"{out} already holds this complete oracle run; pass --overwrite to recompute it")
    print("\n".join(gap_table(run_result.results)))
    print(run_result.results_file)
    return 0

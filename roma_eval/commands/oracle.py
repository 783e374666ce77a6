"""`roma-eval oracle --pretrained M --tasks T [--output_path DIR]`: the oracle routing upper bound (flags =
OracleConfig fields).

lm-eval evaluates the oracle like any model (`OracleLM`, roma_eval/methods/oracle/lm_eval.py) and writes what
`lm_eval --output_path DIR --log_samples` writes, in DIR/<model_name_sanitized>/ (groups such as MMLU's
total included); `roma-eval report` reads it as the "oracle" method.  It ends as `lm_eval` does, with lm-eval's
results table, then the gap table (base -> oracle per benchmark; a group without an aggregate, such as roma_paper,
by its members).  Rerun the same command to resume an interrupted run.
"""

import argparse


def parents() -> list[argparse.ArgumentParser]:
    from roma_eval.commands.options import config_parser
    from roma_eval.methods.oracle.config import OracleConfig

    return [config_parser(OracleConfig)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from roma_eval.commands.options import (
        add_base_model,
        add_chat_template,
        add_output,
        add_progress,
        add_tasks,
    )

    add_base_model(parser)
    add_tasks(parser, "comma-separated lm-eval tasks or groups with gold labels, e.g. roma_paper")
    parser.add_argument("--split", choices=("eval", "train"), default="eval",
                        help="documents to run on (train: e.g. oracle routing targets for training)")
    add_output(parser, "as lm-eval's --output_path: the run goes to DIR/<model name, sanitized>/ (default: oracle)",
               default="oracle")
    parser.add_argument("--parallelize", action="store_true",
                        help="split the model across this machine's GPUs (device_map=auto, as lm-eval's "
                             "parallelize=True), for a model larger than one GPU; `accelerate launch` instead runs "
                             "one copy per GPU on a share of the documents")
    add_chat_template(parser)
    add_progress(parser)


def run(args) -> int:
    import logging

    from roma_eval.claims import claim_output
    from roma_eval.commands.options import chat_template_args, config_from_args, split_list
    from roma_eval.harness import check_limit, run_dir, tables
    from roma_eval.methods.oracle import OracleConfig, OracleStore, gap_table, load_oracle_tasks, run_oracle
    from roma_eval.model_loading import check_model_source

    check_limit(args.limit)
    config = config_from_args(OracleConfig, args)
    chat_template = chat_template_args(args)
    directory = run_dir(args.output_path, args.pretrained)  # this model's run directory
    claim_output(directory)
    check_model_source(args.pretrained, args.revision, args.trust_remote_code)
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    tasks = load_oracle_tasks(split_list(args.tasks), args.include_path, args.split, args.limit, chat_template)
    # Refuse a directory holding another run before the (possibly large) model is loaded.
    OracleStore.precheck(directory, {"tasks": tasks.names, "split": tasks.split, "limit": tasks.limit,
                                     "settings": config.settings()}, args.overwrite)

    from roma_eval.model_loading import load_model

    if args.no_progress:
        import transformers

        transformers.utils.logging.disable_progress_bar()
    from roma_eval.devices import process_state

    model, tokenizer = load_model(args.pretrained, args.revision, args.dtype, args.device,
                                  trust_remote_code=args.trust_remote_code,
                                  device_map="auto" if args.parallelize else None)
    result = run_oracle(model, tokenizer, tasks, args.output_path, config, model_name=args.pretrained,
                        overwrite=args.overwrite, progress=not args.no_progress)
    if not process_state().is_main_process:
        return 0
    if result.resumed_complete:
        print(f"{result.results_file.parent} already holds this complete oracle run; pass --overwrite to recompute it")
    print(tables(result.results))
    print("oracle against base (the same documents, base = the descent's iterate 0):")
    print("\n".join(gap_table(result.results)))
    print(result.results_file)
    return 0

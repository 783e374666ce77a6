"""`roma-eval icl --pretrained M --tasks roma_paper --train_tasks roma_paper_train --output_path OUT`: the ICL row
(flags = IclConfig fields): each evaluation document gets its k nearest successful training samples as in-context
examples in lm-eval's own few-shot format; lm-eval evaluates the base model and writes OUT/<model>/ as
`lm_eval --output_path OUT --log_samples` does (config.model "icl"), with icl_demonstrations.json beside it, and
prints lm-eval's results table as `lm_eval` does."""

import argparse


def parents() -> list[argparse.ArgumentParser]:
    from roma_eval.commands.options import config_parser
    from roma_eval.methods.icl.config import IclConfig

    return [config_parser(IclConfig)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from roma_eval.commands.options import add_base_model, add_chat_template, add_output, add_progress, add_tasks, flag

    add_base_model(parser)
    add_tasks(parser, "comma-separated lm-eval tasks or groups to evaluate, e.g. roma_paper")
    parser.add_argument(*flag("train_tasks"), default="roma_paper_train",
                        help="comma-separated lm-eval tasks or groups whose training documents are the examples' pool")
    add_output(parser, "as lm-eval's --output_path: the run goes to DIR/<model name, sanitized>/")
    add_chat_template(parser)
    add_progress(parser)


def run(args) -> int:
    import logging

    from roma_eval.claims import claim_output
    from roma_eval.commands.options import chat_template_args, config_from_args, split_list
    from roma_eval.harness import check_limit, run_dir, tables
    from roma_eval.methods.icl import IclConfig, RunSettings, run_icl
    from roma_eval.model_loading import check_model_source, load_model

    check_limit(args.limit)
    config = config_from_args(IclConfig, args)
    run = RunSettings(args.output_path, args.pretrained, include_path=args.include_path, limit=args.limit,
                      overwrite=args.overwrite, chat_template=chat_template_args(args))
    claim_output(run_dir(args.output_path, args.pretrained))  # this model's run directory
    check_model_source(args.pretrained, args.revision, args.trust_remote_code)
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    model, tokenizer = load_model(args.pretrained, args.revision, args.dtype, args.device,
                                  trust_remote_code=args.trust_remote_code)
    result = run_icl(model, tokenizer, split_list(args.tasks), run, config, train_tasks=split_list(args.train_tasks),
                     progress=not args.no_progress)
    print(tables(result.results))
    s = result.demonstrations.summary
    print(f"ICL: {s['pool_size']} of {s['training_samples']} training samples in the pool, k={config.k}, "
          f"{s['evaluation_documents']} documents evaluated")
    print(result.results_file)
    return 0

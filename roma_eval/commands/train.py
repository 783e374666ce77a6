"""`roma-eval train --model M --tasks T --out DIR`: RoMA router post-training (flags = RomaConfig fields)."""

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from roma_eval.commands.options import add_config_fields, add_model_and_tasks
    from roma_eval.roma_config import RomaConfig

    add_model_and_tasks(parser, dtype="float32", dtype_help="model dtype for training (float32, bfloat16, auto)",
                        tasks_help="comma-separated lm-eval training tasks or groups (train split)")
    parser.add_argument("--out", required=True, help="output directory for the router checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    add_config_fields(parser.add_argument_group("RoMA configuration (defaults: the paper's best setting)"), RomaConfig)


def run(args) -> int:
    from accelerate import PartialState

    from roma_eval.checkpoint import ensure_new_output
    from roma_eval.commands.options import config_from_args
    from roma_eval.model_loading import load_model
    from roma_eval.roma import train_roma
    from roma_eval.roma_config import RomaConfig
    from roma_eval.samples import load_samples

    ensure_new_output(args.out, args.overwrite)
    config = config_from_args(RomaConfig, args)
    samples = load_samples(args.tasks.split(","), split="train", include_path=args.include_path, limit=config.limit)
    model, tokenizer = load_model(args.model, args.revision, args.dtype, trust_remote_code=args.trust_remote_code)
    result = train_roma(model, tokenizer, samples, args.out, config, base_model=args.model, revision=args.revision,
                        overwrite=args.overwrite)
    s = result.summary
    if PartialState().is_main_process:
        print(f"router checkpoint: {result.checkpoint}  ({s['training_samples']} samples, success set {s['success_set_size']}, "
              f"{s['steps']} steps, tuned layers {s['tuned_layers']})")
    return 0

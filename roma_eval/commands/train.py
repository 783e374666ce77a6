"""`roma-eval train --pretrained M --tasks T --output_path DIR`: RoMA router post-training (flags = RomaConfig
fields)."""

import argparse


def parents() -> list[argparse.ArgumentParser]:
    from roma_eval.commands.options import config_parser
    from roma_eval.methods.roma.config import RomaConfig

    return [config_parser(RomaConfig)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from roma_eval.commands.options import (
        add_base_model,
        add_output,
        add_progress,
        add_tasks,
    )

    add_base_model(parser, dtype="float32")
    add_tasks(parser, "comma-separated lm-eval training tasks or groups (train split), e.g. roma_paper_train",
              limit=False)  # --limit is RomaConfig's: it is recorded with the checkpoint
    add_output(parser, "output directory for the router checkpoint")
    add_progress(parser)


def run(args) -> int:
    from roma_eval.checkpoint import ensure_new_output
    from roma_eval.commands.options import config_from_args, split_list
    from roma_eval.methods.devices import process_state
    from roma_eval.methods.roma import RomaConfig, train_roma
    from roma_eval.model_loading import load_model
    from roma_eval.samples import load_samples

    ensure_new_output(args.output_path, args.overwrite)
    config = config_from_args(RomaConfig, args)
    samples = load_samples(split_list(args.tasks), split="train", include_path=args.include_path, limit=config.limit)
    model, tokenizer = load_model(args.pretrained, args.revision, args.dtype, args.device,
                                  trust_remote_code=args.trust_remote_code)
    result = train_roma(model, tokenizer, samples, args.output_path, config, base_model=args.pretrained,
                        revision=args.revision, overwrite=args.overwrite, progress=not args.no_progress)
    s = result.summary
    if process_state().is_main_process:
        print(f"router checkpoint: {result.checkpoint}  ({s['training_samples']} samples, success set "
              f"{s['success_set_size']}, "
              f"{s['steps']} steps, tuned layers {s['tuned_layers']})")
    return 0

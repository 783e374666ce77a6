"""What the training verbs share (train, dense-bp, oracle-tuning, prefix-tuning, prompt-tuning): the base model,
the training tasks, the output directory; loading, training, and for the router-training verbs the one-line
summary."""

import argparse


def add_training_arguments(parser: argparse.ArgumentParser, artefact: str = "router checkpoint") -> None:
    from roma_eval.commands.options import add_base_model, add_output, add_progress, add_tasks

    add_base_model(parser)
    add_tasks(parser, "comma-separated lm-eval training tasks or groups (train split), e.g. roma_paper_train",
              limit=False)  # --limit is the config's: it is recorded with the artefact
    add_output(parser, f"output directory for the {artefact}")
    add_progress(parser)


def train_from_args(args, config_cls, train):
    """(config, result) of ``train(model, tokenizer, samples, output_path, config, ...)`` on the verb's flags;
    refuses an existing or claimed output directory and an unreadable model before anything is loaded."""
    from roma_eval.checkpoint import ensure_new_output
    from roma_eval.claims import claim_output
    from roma_eval.commands.options import config_from_args, split_list
    from roma_eval.model_loading import check_model_source, load_model
    from roma_eval.samples import load_samples

    ensure_new_output(args.output_path, args.overwrite)
    config = config_from_args(config_cls, args)
    claim_output(args.output_path)
    check_model_source(args.pretrained, args.revision, args.trust_remote_code)
    samples = load_samples(split_list(args.tasks), split="train", include_path=args.include_path, limit=config.limit)
    model, tokenizer = load_model(args.pretrained, args.revision, args.dtype, args.device,
                                  trust_remote_code=args.trust_remote_code)
    result = train(model, tokenizer, samples, args.output_path, config, base_model=args.pretrained,
                   revision=args.revision, overwrite=args.overwrite, progress=not args.no_progress)
    return config, result


def run_router_training(args, config_cls, train, success_set: bool = False) -> int:
    """Train routers and print the checkpoint's one-line summary (once, from the main process)."""
    from roma_eval.methods.devices import process_state

    _, result = train_from_args(args, config_cls, train)
    s = result.summary
    if process_state().is_main_process:
        success = f"success set {s['success_set_size']}, " if success_set else ""
        print(f"router checkpoint: {result.checkpoint}  ({s['training_samples']} samples, {success}{s['steps']} steps, "
              f"tuned layers {s['tuned_layers']})")
    return 0

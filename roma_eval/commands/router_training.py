"""What the training verbs share (train, dense-bp, oracle-tuning, prefix-tuning, prompt-tuning): the base model,
the training tasks, the output directory; loading and training.  The router-training verbs (train, dense-bp,
oracle-tuning) then print the checkpoint's one-line summary, the accuracy on the training tasks' held-out split
before and after training (``roma_eval.heldout``; `--no_heldout_eval` skips it) and the plain `lm_eval` command
that evaluates the checkpoint."""

import argparse
import shlex

ROUTER_CHECKPOINT = "router checkpoint"
HELDOUT_LIMIT = 200  # held-out documents per training task: a few minutes on a GPU for the paper's models
# The evaluation suite each training mixture was built for: the one the printed `lm_eval` command names.
EVAL_SUITES = {"roma_paper_train": "roma_paper", "toy_train": "toy_suite"}
LR_NOTE = ("Learning rate: the default --lr 7e-05 is RoMA's released trainer's, whose default model is OLMoE-1B-7B: a "
           "rate for models of the paper's size (1-30B parameters). Small models need more: the toy MoE's routers "
           "train at 1e-2 (chosen on the toy mixture's held-out split, docs/toy.md). The accuracy this verb prints "
           "before and after training shows whether a rate moved anything.")


def add_training_arguments(parser: argparse.ArgumentParser, artefact: str = ROUTER_CHECKPOINT) -> None:
    from roma_eval.commands.options import add_base_model, add_output, add_progress, add_tasks, flag

    add_base_model(parser)
    add_tasks(parser, "comma-separated lm-eval training tasks or groups (train split), e.g. roma_paper_train",
              limit=False)  # --limit is the config's: it is recorded with the artefact
    add_output(parser, f"output directory for the {artefact}")
    add_progress(parser)
    if artefact == ROUTER_CHECKPOINT:  # the router-training verbs (the peft verbs write an adapter)
        parser.add_argument(*flag("no_heldout_eval"), action="store_true",
                            help="skip the held-out accuracy before and after training")
        parser.add_argument(*flag("heldout_limit"), type=int, default=HELDOUT_LIMIT,
                            help="held-out documents per training task (each task's lm-eval evaluation split when it "
                                 "is not its training split; roma_paper_train has none and its training documents "
                                 "are scored instead, said so)")
        parser.epilog = LR_NOTE


def load_for_training(args, config_cls, shard: bool = False):
    """(config, samples, model, tokenizer) from the verb's flags; refuses an existing or claimed output directory
    and an unreadable model before anything is loaded.  ``shard``: the model is loaded on the CPU and its frozen
    weights sharded across the processes (``training.sharding``; each shard then moves to its process's device)."""
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
    model, tokenizer = load_model(args.pretrained, args.revision, args.dtype, "cpu" if shard else args.device,
                                  trust_remote_code=args.trust_remote_code)
    if shard:
        from roma_eval.devices import process_state
        from roma_eval.training.sharding import shard_frozen_weights

        shard_frozen_weights(model, process_state())
    return config, samples, model, tokenizer


def _train(args, config, train, samples, model, tokenizer):
    return train(model, tokenizer, samples, args.output_path, config, base_model=args.pretrained,
                 revision=args.revision, overwrite=args.overwrite, progress=not args.no_progress)


def train_from_args(args, config_cls, train):
    """(config, result) of ``train(model, tokenizer, samples, output_path, config, ...)`` on the verb's flags."""
    config, samples, model, tokenizer = load_for_training(args, config_cls)
    return config, _train(args, config, train, samples, model, tokenizer)


def run_router_training(args, config_cls, train, success_set: bool = False) -> int:
    """Train routers; print the checkpoint's summary, the held-out accuracy before and after, and the `lm_eval`
    command that evaluates the checkpoint (once, from the main process)."""
    from roma_eval.checkpoint import apply_router_checkpoint, load_router_checkpoint
    from roma_eval.commands.options import split_list
    from roma_eval.devices import process_state
    from roma_eval.errors import RomaEvalError
    from roma_eval.heldout import accuracy, heldout_set

    if not args.no_heldout_eval and args.heldout_limit < 1:
        raise RomaEvalError(f"--heldout_limit {args.heldout_limit}: give at least 1 document per task, or pass "
                            "--no_heldout_eval")
    from roma_eval.training.sharding import sharding_requested

    config, samples, model, tokenizer = load_for_training(args, config_cls, shard=sharding_requested())
    held = None if args.no_heldout_eval else heldout_set(split_list(args.tasks), args.include_path, args.heldout_limit)
    scored = held is not None and bool(held.samples)
    # Every process scores the same documents (nothing to share, nobody waits); the main process prints.
    before = accuracy(model, tokenizer, held.samples, config.batch_size) if scored else None
    result = _train(args, config, train, samples, model, tokenizer)
    if scored:  # the routers as lm-eval will load them (training left them in the model already: forced)
        apply_router_checkpoint(model, load_router_checkpoint(result.checkpoint), force=True)
        after = accuracy(model, tokenizer, held.samples, config.batch_size)
    if not process_state().is_main_process:
        return 0
    s = result.summary
    success = f"success set {s['success_set_size']}, " if success_set else ""
    print(f"router checkpoint: {result.checkpoint}  ({s['training_samples']} samples, {success}{s['steps']} steps, "
          f"tuned layers {s['tuned_layers']})")
    if scored:
        print(f"accuracy before -> after training: {100 * before:.1f}% -> {100 * after:.1f}% "
              f"({100 * (after - before):+.1f} points, lr {config.lr}; {held.describe()})")
    elif held is not None:
        print(f"no held-out accuracy: {', '.join(held.tasks)} have no multiple-choice documents to score")
    print(f"evaluate it with:\n  {lm_eval_command(args, result.checkpoint)}")
    return 0


def lm_eval_command(args, checkpoint) -> str:
    """The plain `lm_eval` command that evaluates ``checkpoint`` on the suite the training tasks were built for
    (``EVAL_SUITES``; the paper's roma_paper otherwise)."""
    from pathlib import Path

    from roma_eval.commands.options import split_list
    from roma_eval.resources import tasks_dir

    suite = next((EVAL_SUITES[t] for t in split_list(args.tasks) if t in EVAL_SUITES), "roma_paper")
    model_args = {"pretrained": args.pretrained, "revision": args.revision,
                  "dtype": None if args.dtype == "auto" else args.dtype,
                  "trust_remote_code": args.trust_remote_code or None,
                  "router_checkpoint": Path(checkpoint).resolve()}
    return shlex.join(["lm_eval", "--model", "roma", "--model_args",
                       ",".join(f"{k}={v}" for k, v in model_args.items() if v is not None),
                       "--tasks", suite, "--include_path", str(tasks_dir())])

"""What `roma-eval prefix-tuning` and `roma-eval prompt-tuning` share (flags = PeftTuningConfig fields): peft's
prefix / prompt tuning on the training mixture with RoMA's task loss and budget, saved as a peft adapter.
Evaluate it with `lm_eval --model hf-peft --model_args pretrained=M,peft=DIR` (roma_eval/methods/peft_tuning/lm_eval.py
says why not plain `hf`)."""

import argparse


def parents() -> list[argparse.ArgumentParser]:
    from roma_eval.commands.options import config_parser
    from roma_eval.methods.peft_tuning.config import PeftTuningConfig

    return [config_parser(PeftTuningConfig)]


def add_arguments(parser: argparse.ArgumentParser, method: str) -> None:
    from roma_eval.commands.options import add_base_model, add_output, add_progress, add_tasks

    add_base_model(parser, dtype="float32")
    add_tasks(parser, "comma-separated lm-eval training tasks or groups (train split), e.g. roma_paper_train",
              limit=False)  # --limit is the config's: it is recorded with the adapter
    add_output(parser, "output directory for the peft adapter")
    add_progress(parser)
    parser.set_defaults(method=method)


def run(args, method: str) -> int:
    from roma_eval.checkpoint import ensure_new_output
    from roma_eval.commands.options import config_from_args, split_list
    from roma_eval.errors import RomaEvalError
    from roma_eval.methods.peft_tuning import PeftTuningConfig, train_peft_tuning
    from roma_eval.model_loading import load_model
    from roma_eval.samples import load_samples

    if args.method != method:
        raise RomaEvalError(f"--method {args.method} contradicts the verb ({method.replace('_', '-')}); drop --method")
    ensure_new_output(args.output_path, args.overwrite)
    config = config_from_args(PeftTuningConfig, args)
    samples = load_samples(split_list(args.tasks), split="train", include_path=args.include_path, limit=config.limit)
    model, tokenizer = load_model(args.pretrained, args.revision, args.dtype, args.device,
                                  trust_remote_code=args.trust_remote_code)
    result = train_peft_tuning(model, tokenizer, samples, args.output_path, config, base_model=args.pretrained,
                               revision=args.revision, overwrite=args.overwrite, progress=not args.no_progress)
    s = result.summary
    print(f"peft adapter: {result.adapter}  ({config.method}, {s['trainable_parameters']} trainable parameters, "
          f"{s['training_samples']} samples, {s['steps']} steps)")
    return 0

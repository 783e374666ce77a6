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
    from roma_eval.commands.router_training import add_training_arguments

    add_training_arguments(parser, "peft adapter")
    parser.set_defaults(method=method)


def run(args, method: str) -> int:
    from roma_eval.commands.router_training import train_from_args
    from roma_eval.errors import RomaEvalError
    from roma_eval.methods.peft_tuning import PeftTuningConfig, train_peft_tuning

    if args.method != method:
        raise RomaEvalError(f"--method {args.method} contradicts the verb ({method.replace('_', '-')}); drop --method")
    config, result = train_from_args(args, PeftTuningConfig, train_peft_tuning)
    s = result.summary
    print(f"peft adapter: {result.adapter}  ({config.method}, {s['trainable_parameters']} trainable parameters, "
          f"{s['training_samples']} samples, {s['steps']} steps)")
    return 0

"""`roma-eval train --pretrained M --tasks T --output_path DIR`: RoMA router post-training (flags = RomaConfig
fields).  Prints the training tasks' held-out accuracy before and after training and the `lm_eval --model roma`
command that evaluates the checkpoint (commands/router_training.py)."""

import argparse


def parents() -> list[argparse.ArgumentParser]:
    from roma_eval.commands.options import config_parser
    from roma_eval.methods.roma.config import RomaConfig

    return [config_parser(RomaConfig)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from roma_eval.commands.router_training import add_training_arguments

    add_training_arguments(parser)


def run(args) -> int:
    from roma_eval.commands.router_training import run_router_training
    from roma_eval.methods.roma import RomaConfig, train_roma

    return run_router_training(args, RomaConfig, train_roma, success_set=True)

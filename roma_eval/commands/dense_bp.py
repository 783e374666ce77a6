"""`roma-eval dense-bp --pretrained M --tasks T --output_path DIR`: Dense BP router training (flags = DenseBPConfig
fields): the task loss on RoMA's routers, data and budget, each router getting a dense gradient from every expert.
Evaluate the checkpoint with `lm_eval --model roma --model_args pretrained=M,router_checkpoint=DIR`."""

import argparse


def parents() -> list[argparse.ArgumentParser]:
    from roma_eval.commands.options import config_parser
    from roma_eval.methods.dense_bp.config import DenseBPConfig

    return [config_parser(DenseBPConfig)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from roma_eval.commands.router_training import add_training_arguments

    add_training_arguments(parser)


def run(args) -> int:
    from roma_eval.commands.router_training import run_router_training
    from roma_eval.methods.dense_bp import DenseBPConfig, train_dense_bp

    return run_router_training(args, DenseBPConfig, train_dense_bp)

"""`roma-eval oracle-tuning --pretrained M --tasks T --oracle_routing ORACLE --output_path DIR`: Oracle Tuning
(flags = OracleTuningConfig fields): RoMA's routers, data and budget trained towards each training sample's oracle
routing, from `roma-eval oracle --pretrained M --tasks T --split train --save_routing --output_path ORACLE`.
Evaluate the checkpoint with `lm_eval --model roma --model_args pretrained=M,router_checkpoint=DIR`."""

import argparse


def parents() -> list[argparse.ArgumentParser]:
    from roma_eval.commands.options import config_parser
    from roma_eval.methods.oracle_tuning.config import OracleTuningConfig

    return [config_parser(OracleTuningConfig)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from roma_eval.commands.router_training import add_training_arguments

    add_training_arguments(parser)


def run(args) -> int:
    from roma_eval.commands.router_training import run_router_training
    from roma_eval.methods.oracle_tuning import OracleTuningConfig, train_oracle_tuning

    return run_router_training(args, OracleTuningConfig, train_oracle_tuning)

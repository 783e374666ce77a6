"""Flags shared by the verbs that load a base MoE and read lm-eval tasks (train, oracle, c3po build-reference)."""

from __future__ import annotations

import argparse
from dataclasses import MISSING


def add_model_and_tasks(parser, *, dtype: str, dtype_help: str, tasks_help: str) -> None:
    """--model, --revision, --dtype, --tasks, --include_path, --trust_remote_code, named as lm-eval names them."""
    parser.add_argument("--model", required=True, help="base MoE: hub id or local directory")
    parser.add_argument("--revision", default=None, help="model revision on the hub")
    parser.add_argument("--dtype", default=dtype, help=dtype_help)
    parser.add_argument("--tasks", required=True, help=tasks_help)
    parser.add_argument("--include_path", action="append", default=[], help="extra directory of task YAMLs")
    parser.add_argument("--trust_remote_code", action="store_true", help="allow the model's own code (e.g. DeepSeekMoE)")


def add_config_fields(group, config_cls) -> None:
    """One flag per dataclass field of ``config_cls`` (dashes for underscores; help from the field's metadata)."""
    for f in config_cls.field_specs():
        flag = "--" + f.name.replace("_", "-")
        default = None if f.default is MISSING else f.default
        help_text = f.metadata["help"] if "default" in f.metadata["help"] else f"{f.metadata['help']} (default: {default})"
        if f.type in ("bool", bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
            continue
        kind = {"int": int, "float": float}.get(str(f.type).split(" |")[0], str)
        group.add_argument(flag, type=kind, default=default, help=help_text)


def config_from_args(config_cls, args):
    return config_cls(**{f.name: getattr(args, f.name) for f in config_cls.field_specs()})

"""One flag convention for every verb: lm-eval's names where lm-eval has the concept (--tasks, --include_path,
--limit, --batch_size, --device, --output_path, --seed), lm-eval's `hf` model_args names for the base model
(--pretrained, --revision, --dtype, --trust_remote_code), underscores first and the dashed spelling accepted
too (as transformers' HfArgumentParser does for the config dataclasses, whose fields become flags here).
"""

from __future__ import annotations

import argparse
from dataclasses import fields

# Flags of earlier versions and of other tools: refused with the new name rather than half-understood.
RENAMED = {"--model": "--pretrained", "--out": "--output_path", "--output": "--output_path",
           "--quiet": "--no_progress"}


def flag(name: str) -> list[str]:
    """``--max_drop`` and its dashed spelling ``--max-drop``."""
    return [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])


def add_base_model(parser) -> None:
    """The base MoE, named as lm-eval's `hf` model_args name it."""
    parser.add_argument(*flag("pretrained"), required=True, help="base MoE: hub id or local directory")
    parser.add_argument("--revision", default=None, help="model revision on the hub")
    parser.add_argument("--dtype", default="auto", help="model dtype: auto (the checkpoint's own, as lm-eval's `hf`), "
                        "float32, bfloat16, float16 (router training keeps float32 copies of the tuned routers)")
    parser.add_argument(*flag("trust_remote_code"), action="store_true",
                        help="allow the model's own code (e.g. DeepSeekMoE)")
    parser.add_argument("--device", default=None, help="torch device (default: accelerate's choice, GPU if present)")


def add_tasks(parser, help_text: str, limit: bool = True) -> None:
    parser.add_argument("--tasks", required=True, help=help_text)
    parser.add_argument(*flag("include_path"), action="append", default=[], help="extra directory of task YAMLs")
    if limit:
        parser.add_argument("--limit", type=int, default=None, help="at most this many documents per task")


def add_output(parser, help_text: str, default=None) -> None:
    parser.add_argument(*flag("output_path"), required=default is None, default=default, help=help_text)
    parser.add_argument("--overwrite", action="store_true", help="replace what an earlier run wrote there")


def add_chat_template(parser) -> None:
    """lm-eval's chat-template flags, spelled and defaulted as lm-eval's own CLI has them (``chat_template_args``)."""
    parser.add_argument(*flag("apply_chat_template"), nargs="?", const=True, default=False, metavar="TEMPLATE",
                        help="lm-eval's --apply_chat_template for every evaluation: prompts go through the model's "
                             "chat template (TEMPLATE: one of the tokenizer's named templates). Off by default: the "
                             "paper does not say it used one (docs/reproduce.md)")
    parser.add_argument(*flag("fewshot_as_multiturn"), nargs="?", const=True, default=None, metavar="BOOL",
                        type=lambda text: text.lower() in ("true", "1", "yes"),
                        help="lm-eval's --fewshot_as_multiturn: few-shot examples as conversation turns (default: on "
                             "with --apply_chat_template, which it needs)")


def chat_template_args(args) -> dict:
    """The chat-template flags as ``lm_eval.simple_evaluate`` takes them, by lm-eval's CLI rules: multi-turn
    few-shot is on by default with a chat template and refused without one."""
    from roma_eval.errors import RomaEvalError

    multiturn = bool(args.apply_chat_template) if args.fewshot_as_multiturn is None else args.fewshot_as_multiturn
    if multiturn and not args.apply_chat_template:
        raise RomaEvalError("--fewshot_as_multiturn needs --apply_chat_template (few-shot turns exist only in a chat); "
                            "add --apply_chat_template or drop --fewshot_as_multiturn")
    return {"apply_chat_template": args.apply_chat_template, "fewshot_as_multiturn": multiturn}


def add_progress(parser) -> None:
    parser.add_argument(*flag("no_progress"), action="store_true", help="no progress bars")


def config_parser(*config_classes) -> argparse.ArgumentParser:
    """A parent parser (``add_parser(..., parents=[...])``) with one flag per field of each config dataclass
    (transformers' HfArgumentParser: help from the field's metadata, ``Literal`` fields as choices, booleans
    with a --no_ twin), plus ``--config FILE.yaml``, whose keys set any of the verb's options (flags on the
    command line win; ``cli.main`` reads it)."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(list(config_classes), add_help=False)
    parser.add_argument("--config", default=None, metavar="FILE.yaml",
                        help="YAML file of option values (keys as the flags, without dashes)")
    return parser


def config_from_args(config_cls, args):
    return config_cls(**{f.name: getattr(args, f.name) for f in fields(config_cls) if f.init})


def split_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]

"""`roma-eval train --model M --tasks T --out DIR`: RoMA router post-training (flags = RomaConfig fields)."""

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dataclasses import MISSING

    from roma_eval.roma_config import RomaConfig

    parser.add_argument("--model", required=True, help="base MoE: hub id or local directory")
    parser.add_argument("--revision", default=None, help="model revision on the hub")
    parser.add_argument("--dtype", default="float32", help="model dtype for training (float32, bfloat16, auto)")
    parser.add_argument("--tasks", required=True, help="comma-separated lm-eval training tasks or groups (train split)")
    parser.add_argument("--include_path", action="append", default=[], help="extra directory of task YAMLs")
    parser.add_argument("--out", required=True, help="output directory for the router checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    parser.add_argument("--trust_remote_code", action="store_true", help="allow the model's own code (e.g. DeepSeekMoE)")
    group = parser.add_argument_group("RoMA configuration (defaults: the paper's best setting)")
    for f in RomaConfig.field_specs():
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            group.add_argument(flag, action="store_true", help=f.metadata["help"])
            continue
        kind = {"int": int, "float": float}.get(str(f.type).split(" |")[0], str)
        group.add_argument(flag, type=kind, default=None if f.default is MISSING else f.default,
                           help=f"{f.metadata['help']} (default: {f.default})")


def run(args) -> int:
    from accelerate import PartialState

    from roma_eval.checkpoint import ensure_new_output
    from roma_eval.model_loading import load_model
    from roma_eval.roma import train_roma
    from roma_eval.roma_config import RomaConfig
    from roma_eval.samples import load_samples

    ensure_new_output(args.out, args.overwrite)
    config = RomaConfig(**{f.name: getattr(args, f.name) for f in RomaConfig.field_specs()})
    samples = load_samples(args.tasks.split(","), split="train", include_path=args.include_path, limit=config.limit)
    model, tokenizer = load_model(args.model, args.revision, args.dtype, trust_remote_code=args.trust_remote_code)
    result = train_roma(model, tokenizer, samples, args.out, config, base_model=args.model, revision=args.revision,
                        overwrite=args.overwrite)
    s = result.summary
    if PartialState().is_main_process:
        print(f"router checkpoint: {result.checkpoint}  ({s['training_samples']} samples, success set {s['success_set_size']}, "
              f"{s['steps']} steps, tuned layers {s['tuned_layers']})")
    return 0

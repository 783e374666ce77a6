"""`roma-eval export --pretrained M --router_checkpoint C --output_path DIR`: a complete model directory with the tuned
routers in its weights, which `lm_eval --model hf`, `--model vllm`, SGLang or transformers load as they load M.

Only the shards holding a tuned router are rewritten; the others are hard links to M's (symbolic links where the
file system refuses one; the command says which).  Beside the weights: M's config, tokenizer and remote code, a model
card (README.md) and roma_export.json (roma_eval/export.py).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from roma_eval.commands.options import add_output, flag

    parser.add_argument(*flag("pretrained"), required=True,
                        help="the base MoE the routers were tuned on: a local directory, or a hub id in the local hub "
                             "cache (downloaded first when the hub is reachable)")
    parser.add_argument("--revision", default=None, help="the base model's revision on the hub")
    parser.add_argument(*flag("trust_remote_code"), action="store_true",
                        help="allow the model's own code (e.g. DeepSeekMoE): its skeleton names the routers")
    parser.add_argument(*flag("router_checkpoint"), required=True,
                        help="the router checkpoint (a directory written by roma-eval, or a hub repo id)")
    add_output(parser, "the new model directory (refused if it exists and is not empty, unless --overwrite)")
    parser.add_argument("--results", default=None, metavar="RESULTS_JSON",
                        help="lm-eval results of the checkpoint's run for the model card's table (a results JSON or a "
                             "directory: its newest); default: one found beside the checkpoint")


def summary(export) -> list[str]:
    """What was written, as the lines the command prints."""
    import shlex

    by_kind: dict[str, list[str]] = {}
    for shard, kind in export.linked.items():
        by_kind.setdefault(kind, []).append(shard)
    record = export.record
    lines = [f"exported {record['base_model']} with the {record['method']} routers of layers {record['layers']} "
             f"to {export.output}",
             f"  rewritten (tuned routers): {', '.join(export.rewritten)}"]
    lines += [f"  {kind} (unchanged): {', '.join(shards)}" for kind, shards in by_kind.items()]
    lines += [f"  copied: {', '.join(export.carried)}, README.md and roma_export.json written"]
    lines += [f"  not carried: {', '.join(export.left_out)}"] if export.left_out else []
    lines += [f"  router fingerprint: base {record['base_router_fingerprint'][:12]}, "
              f"exported {record['router_fingerprint'][:12]}",
              "evaluate it as the base model is evaluated, e.g.:",
              f"  lm_eval --model hf --model_args {shlex.quote(f'pretrained={export.output}')} --tasks ...",
              f"  lm_eval --model vllm --model_args "
              f"{shlex.quote(f'pretrained={export.output},tensor_parallel_size=1')} --tasks ..."]
    return lines


def run(args) -> int:
    from roma_eval.claims import claim_output
    from roma_eval.export import check_output, export_model

    check_output(args.output_path, args.overwrite)  # before the claim makes any directory
    claim_output(args.output_path)
    export = export_model(args.pretrained, args.router_checkpoint, args.output_path, revision=args.revision,
                          trust_remote_code=args.trust_remote_code, overwrite=args.overwrite, results=args.results)
    print("\n".join(summary(export)))
    return 0

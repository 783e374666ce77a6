"""`roma-eval c3po build-reference --pretrained M --tasks T --output_path DIR`: C3PO's reference set
(arXiv 2504.07964).

Evaluating with C3PO is lm-eval's job once the reference exists:
`roma-eval eval --model c3po --model_args pretrained=M,reference=DIR,c3po_method=ngd --tasks ...`
"""

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dataclasses import fields

    from roma_eval.commands.options import (
        add_base_model,
        add_output,
        add_progress,
        add_tasks,
        flag,
    )
    from roma_eval.methods.c3po.config import ReferenceBuild

    helps = {f.name: f.metadata["help"] for f in fields(ReferenceBuild)}

    actions = parser.add_subparsers(dest="c3po_action", metavar="<action>", required=True)
    build = actions.add_parser(
        "build-reference", formatter_class=parser.formatter_class, help="score training tasks with the base model "
                                                                        "and store the correctly answered ones "
                                "with their pathways and frozen prefixes",
        description="C3PO's reference set: training samples the base model answers correctly (lm-eval acc), "
                    "their routing at the critical layers and last context token, prompt embeddings and frozen "
                    "prefixes; a multiple-input task (winogrande) keeps one prompt per choice, its pathway the mean "
                    "over them.  Interrupted builds resume from DIR.partial/.")
    add_base_model(build)
    add_tasks(build, "comma-separated lm-eval multiple-choice training tasks or groups (train split); prefixes are "
                     "stored in the model's dtype")
    add_output(build, "output directory for the reference")
    build.add_argument("--layers", default=None, help=helps["layers"])
    build.add_argument(*flag("batch_size"), type=int, default=8, help=helps["batch_size"])
    build.add_argument(*flag("chunk_size"), type=int, default=256, help=helps["chunk_size"])
    build.add_argument(*flag("no_prefixes"), action="store_true",
                       help="do not store frozen prefixes (smaller file; C3PO then computes them once per run)")
    build.add_argument("--embedder", default=None, help=helps["embedder"])
    add_progress(build)


def run(args) -> int:
    from roma_eval.checkpoint import ensure_new_output
    from roma_eval.claims import claim_output
    from roma_eval.commands.options import split_list
    from roma_eval.methods.c3po import build_reference, load_reference
    from roma_eval.methods.c3po.config import ReferenceBuild
    from roma_eval.model_loading import check_model_source, load_model
    from roma_eval.samples import load_samples

    build = ReferenceBuild(base_model=args.pretrained, revision=args.revision, layers=args.layers,
                           embedder=args.embedder, batch_size=args.batch_size, chunk_size=args.chunk_size,
                           prefixes=not args.no_prefixes)
    ensure_new_output(args.output_path, args.overwrite)
    claim_output(args.output_path)
    check_model_source(args.pretrained, args.revision, args.trust_remote_code)
    samples = load_samples(split_list(args.tasks), split="train", include_path=args.include_path, limit=args.limit)
    model, tokenizer = load_model(args.pretrained, args.revision, args.dtype, args.device,
                                  trust_remote_code=args.trust_remote_code)
    out = build_reference(model, tokenizer, samples, args.output_path, build, overwrite=args.overwrite,
                          progress=not args.no_progress)
    from roma_eval.devices import process_state

    if not process_state().is_main_process:
        return 0
    meta = load_reference(out).metadata
    print(f"C3PO reference: {out}  ({meta['n_references']} of {meta['n_training_samples']} training samples answered "
          f"correctly; layers {meta['layers']}; prefixes {'stored' if meta['prefixes'] else 'not stored'})")
    return 0

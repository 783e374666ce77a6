"""`roma-eval toy build|path|tasks|show`: the embedded toy world (its model and its tasks)."""

import argparse


def _model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="default", choices=("default", "fast"), help="toy model preset")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the pretraining text")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="toy_action", metavar="<action>", required=True)
    build = actions.add_parser("build", help="pretrain the toy model (or load it from the cache) and print its "
                                             "directory")
    _model_flags(build)
    build.add_argument("--rebuild", action="store_true",
                       help="pretrain again into the cache even if the model is shipped or cached, and compare with "
                            "the shipped run: its first steps bit for bit on the machine that recorded them, within "
                            "float rounding on another CPU (exit 1 when they differ), the final weights for "
                            "information")
    path = actions.add_parser("path", help="print the toy model's directory (the cache location; builds nothing)")
    _model_flags(path)
    actions.add_parser("tasks", help="list the toy tasks: the eight benchmarks and the training mixture")
    show = actions.add_parser("show", help="print a few documents of a toy task as lm-eval presents them")
    show.add_argument("task", help="a toy task name, e.g. toy_arc_challenge or toy_train_zoology")
    show.add_argument("--split", default="test", help="test (every task) or train (training mixture)")
    show.add_argument("-n", type=int, default=3, help="how many documents")


def run(args) -> int:
    return {"build": _build, "path": _path, "tasks": _tasks, "show": _show}[args.toy_action](args)


def _build(args) -> int:
    import sys

    from roma_eval.toy.cache import ensure_model, read_record, same_weights, shipped_dir
    from roma_eval.toy.config import preset
    from roma_eval.toy.pretrain import prefix_agrees

    config = preset(args.preset, args.seed)
    directory = ensure_model(config, rebuild=args.rebuild)
    print(directory)
    if args.rebuild and (shipped := shipped_dir(config)) is not None:
        agrees, how = prefix_agrees(read_record(directory)["training"], read_record(shipped)["training"])
        final = "bit-identical to" if same_weights(directory, shipped) else "not bit-identical to"
        print(f"{how}; the final weights are {final} the shipped ones in {shipped}", file=sys.stderr)
        return 0 if agrees else 1
    return 0


def _path(args) -> int:
    import sys

    from roma_eval.toy.cache import is_built, model_dir
    from roma_eval.toy.config import preset

    config = preset(args.preset, args.seed)
    print(model_dir(config))
    if not is_built(config):
        print(f"(not built yet: run `roma-eval toy build --preset {args.preset} --seed {args.seed}`)", file=sys.stderr)
        return 1
    return 0


def _tasks(args) -> int:
    from roma_eval.toy.benchmarks import BENCHMARKS
    from roma_eval.toy.families import ANALOGUES
    from roma_eval.toy.suite import (
        EVAL_GROUP,
        EVAL_TASKS,
        TRAIN_GROUP,
        TRAIN_TASKS,
        task_splits,
    )

    analogue = {f"toy_{name}": paper for name, (paper, _, _) in BENCHMARKS.items()} | {"toy_gsm8k": "GSM8K"}
    analogue |= {f"toy_train_{name}": paper for name, paper in ANALOGUES.items()}
    for group, tasks in ((EVAL_GROUP, EVAL_TASKS), (TRAIN_GROUP, TRAIN_TASKS)):
        print(f"{group}:")
        for task in tasks:
            sizes = ", ".join(f"{split} {len(docs)}" for split, docs in sorted(task_splits(task).items()))
            print(f"  {task:24s} {sizes:20s} ({analogue[task]})")
    return 0


def _show(args) -> int:
    from roma_eval.errors import RomaEvalError
    from roma_eval.toy.suite import task_splits

    splits = task_splits(args.task)
    if args.split not in splits:
        raise RomaEvalError(f"task {args.task} has no {args.split!r} split; use one of {', '.join(sorted(splits))}")
    for doc in splits[args.split][: args.n]:
        if "choices" in doc:
            marks = [("*" if i == doc["label"] else " ") + f" {c}" for i, c in enumerate(doc["choices"])]
            print(f"{doc['id']} [{doc['skill']}]\n{doc['prompt']}\n" + "\n".join(marks) + "\n")
        else:
            print(f"{doc['id']} [{doc['skill']}]\nQuestion: {doc['question']}\nAnswer: {doc['answer']}\n")
    return 0

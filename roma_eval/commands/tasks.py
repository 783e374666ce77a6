"""`roma-eval tasks`: the paper's evaluation suite (roma_paper) and training mixture (roma_paper_train).

It reads roma-eval's own YAMLs in tasks/ and nothing else: no lm-eval import, no datasets, and not
the index of lm-eval's ~14k task YAMLs that `lm_eval ls tasks` builds (~12 s here; this takes ~0.1 s).
The evaluation sets' sizes are the documents lm-eval evaluates (docs/tasks.md); the mixture's counts are
each source's `metadata.sample_size`, which is what its lm-eval task samples.  `--decontamination` also counts
the documents each source loses to decontamination: that loads the mixture through lm-eval, with every training
split and evaluation set (the datasets lm-eval downloads), and takes minutes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

EVAL_GROUP, TRAIN_GROUP = "roma_paper", "roma_paper_train"

# lm-eval task -> (benchmark, split lm-eval evaluates, its documents, the paper's documents)
BENCHMARKS = {
    "mmlu": ("MMLU", "test", 14042, 14042),
    "hellaswag": ("HellaSwag", "validation", 10042, 10042),
    "arc_challenge": ("ARC-Challenge", "test", 1172, 1172),
    "arc_easy": ("ARC-Easy", "test", 2376, 2376),
    "piqa": ("PIQA", "validation", 1838, 1838),
    "winogrande": ("WinoGrande", "validation", 1267, 1267),
    "boolq": ("BoolQ", "validation", 3270, 3227),
    "gsm8k": ("GSM8K", "test", 1319, 1000),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--decontamination", action="store_true",
                        help="also count the training documents each mixture source leaves out because they repeat an "
                             "evaluation question (loads every dataset of both groups through lm-eval: minutes)")
    parser.epilog = ("Run them with `roma-eval eval --tasks roma_paper` (or plain `lm_eval --include_path TASKS_DIR`); "
                     "train on the mixture with `roma-eval train --tasks roma_paper_train`.")


def _load(path: Path) -> dict:
    """A task or group YAML as lm-eval's loader sees it (``include:`` merged), without resolving functions."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: f"!function {loader.construct_scalar(node)}")
    cfg = yaml.load(path.read_text(), Loader=Loader) or {}
    include = cfg.pop("include", None)
    return {**(_load(path.parent / include) if include else {}), **cfg}


def _index(folder: Path) -> dict[str, dict]:
    """name -> config of every task and group YAML in ``folder``."""
    configs = [_load(p) for p in sorted(folder.glob("*.yaml"))]
    return {cfg.get("group") or cfg["task"]: cfg for cfg in configs}


def mixture(tasks_dir: Path) -> list[tuple[str, list[tuple[str, int, int | None]]]]:
    """roma_paper_train as [(source, [(task, sample_size, train_size), ...]), ...], in the group's order."""
    index = _index(tasks_dir / TRAIN_GROUP)
    sources: dict[str, list] = {}
    for name in index[TRAIN_GROUP]["task"]:
        members = index[name]["task"] if "group" in index[name] else [name]
        for task in members:
            meta = index[task]["metadata"]
            sources.setdefault(meta["source"], []).append((task, int(meta["sample_size"]), meta.get("train_size")))
    return list(sources.items())


def decontamination_counts() -> dict[str, tuple[int, int]]:
    """task -> (documents left out, of how many) of every roma_paper_train task, as its lm-eval task processes them
    (tasks/roma_paper_train/utils.py, MixtureDocs)."""
    from roma_eval.harness import task_manager

    tasks = task_manager(task_names=[TRAIN_GROUP]).load([TRAIN_GROUP])["tasks"]
    counts = {}
    for name, task in tasks.items():
        task.training_docs()  # processed once per task (lm-eval did it when loading); this reads the cached docs
        counts[name] = task.config.process_docs.decontaminated
    return counts


def _left_out(counts: dict[str, tuple[int, int]] | None, tasks) -> str:
    if counts is None:
        return ""
    dropped, of = (sum(counts[task][k] for task, _, _ in tasks) for k in (0, 1))
    return f"   left out: {dropped:,d} of {of:,d}"


def run(args) -> int:
    from roma_eval.resources import tasks_dir
    from roma_eval.results import DEFAULT_METRICS

    root = tasks_dir()
    paper = _load(root / EVAL_GROUP / f"_{EVAL_GROUP}.yaml")
    print(f"{EVAL_GROUP}: the paper's evaluation benchmarks, lm-eval's own tasks, num_fewshot {paper['num_fewshot']}")
    print(f"  {'task':14s} {'benchmark':14s} {'split':10s} {'documents':>9s} {'paper':>7s}  metric (roma-eval report)")
    for task in paper["task"]:
        name, split, ours, theirs = BENCHMARKS[task]
        print(f"  {task:14s} {name:14s} {split:10s} {ours:9,d} {theirs:7,d}  {DEFAULT_METRICS[task][0]}")

    sources = mixture(root)
    total = sum(size for _, tasks in sources for _, size, _ in tasks)
    seed = _load(root / TRAIN_GROUP / "_mixture_template").get("sample_seed")
    counts = decontamination_counts() if args.decontamination else None
    print(f"\n{TRAIN_GROUP}: {total:,d} training documents, seeded samples (seed {seed}) of the training splits, "
          "evaluation questions left out")
    if counts is not None:
        print("  left out: the documents that repeat an evaluation question, of the training split after the task's "
              "own filters")
    for source, tasks in sources:
        print(f"  {source:60s} {sum(size for _, size, _ in tasks):7,d}{_left_out(counts, tasks)}")
        for task, size, train in tasks:
            of = f"  of {train:,d}" if train else ""
            print(f"    {task:58s} {size:7,d}{of}{_left_out(counts, [(task, size, train)])}")
    if counts is None:
        print("\n`roma-eval tasks --decontamination` also counts the documents each source leaves out (it loads the "
              "datasets).")
    return 0

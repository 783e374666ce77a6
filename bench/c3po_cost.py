"""Wall time of lm-eval `--model c3po` (per method) over `--model hf`, on the toy suite and on a
long-prompt variant of it (3-shot: every prompt >= 256 tokens, the MMLU regime), in one run.

Before any timing it prints the ratio predicted from token and layer counts (bench/NOTES.md says
how).  Each timing is a whole simple_evaluate call (model load, embedder load, all requests);
hf and the C3PO methods are interleaved so that they share any drift of the machine.  Wall time
and this process's CPU time are both reported: on a shared box the CPU-time ratio (one torch
thread) is what the wall-time ratio would be on a quiet one.  The
reference set (built once on toy_train, frozen prefixes stored) is not part of any timing.

    .venv/bin/python bench/c3po_cost.py [--preset fast] [--limit 20] [--repeats 3]
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from roma_eval.choices import choices
from roma_eval.methods.c3po.config import C3POConfig

ROOT = Path(__file__).resolve().parents[1]
MC_TASKS = ["toy_mmlu", "toy_hellaswag", "toy_arc_challenge", "toy_arc_easy", "toy_piqa", "toy_winogrande",
            "toy_boolq"]
SUITE = MC_TASKS + ["toy_gsm8k"]
FEWSHOT = 10  # toy prompts are ~26 BPE tokens; 10 shots give ~256-480 tokens, within the 512 positions
METHODS = choices(C3POConfig, "method")
BACKWARD = 1.0  # an NGD backward pass, in forward passes: input gradients only (weights are frozen)
GRID = 11  # the α grid 1, 0.9, ..., 0: kernel regression searches it once, mode finding once per iteration


def long_variant(directory: Path) -> list[str]:
    """The toy suite's multiple-choice tasks with 3 shots, as lm-eval YAMLs including the originals."""
    names = []
    for task in MC_TASKS:
        (directory / f"{task}_long.yaml").write_text(
            f"include: {ROOT / 'tasks' / 'toy' / task}.yaml\ntask: {task}_long\nnum_fewshot: {FEWSHOT}\n")
        names.append(f"{task}_long")
    return names


def predict(samples, tokenizer, reference, n_layers: int, first_layer: int, config) -> dict[str, float]:
    """C3PO / base in token x layer units (one token through one layer = 1; LM head and attention's
    length term neglected).  Base is lm-eval's hf: one row per (context, continuation) but the last
    token, rows sharing context + continuation[:-1] computed once (its one-token-continuation cache).
    Mode finding's figure is an upper bound: ``mode_steps`` α searches, fewer once no prompt moves."""
    from roma_eval.scoring import encode_pair

    critical = n_layers - first_layer
    ref_tail = np.mean([sum(len(c) for c in p.continuations) for p in reference.problems])  # Σ_c T_c of a neighbour
    # A steered pass: the last context token through the first critical layer, the tails through the rest.
    neighbours = config["k"] * (1 + ref_tail * (critical - 1))
    per_method = {"ngd": config["steps"] * (1 + BACKWARD) * neighbours, "kernel": GRID * neighbours,
                  "mode": config["mode_steps"] * GRID * neighbours}
    base, test_side, n = 0.0, 0.0, 0
    for s in samples:
        if s.output_type == "multiple_choice":
            pairs = [encode_pair(tokenizer, s.context, c) for c in s.continuations]
            base += sum(len(key) for key in {tuple(ctx + cont[:-1]) for ctx, cont in pairs}) * n_layers
            tails = sum(len(cont) for _, cont in pairs)
            test_side += (len(pairs[0][0]) - 1 + tails) * n_layers + 1 + tails * (critical - 1)  # freeze + final
        else:  # generation: prompt + at most max_gen_toks = 6 tokens, for both; C3PO adds its freeze pass
            prompt = len(tokenizer.encode(s.context))
            base += (prompt + 6) * n_layers
            test_side += (prompt + 6) * n_layers + prompt * n_layers
        n += 1
    return {m: (test_side + n * per_method[m]) / base for m in METHODS}


def timed(model: str, model_args: str, tasks, manager, limit: int, batch_size: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one simple_evaluate call."""
    from lm_eval import simple_evaluate

    wall, cpu = time.perf_counter(), time.process_time()
    simple_evaluate(model=model, model_args=model_args, tasks=tasks, task_manager=manager, device="cpu",
                    limit=limit, batch_size=batch_size)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fast", help="toy model preset (cost does not depend on its training)")
    parser.add_argument("--limit", type=int, default=20, help="documents per evaluation task")
    parser.add_argument("--train-limit", type=int, default=40, help="documents per training task for the reference")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--group", type=int, default=8,
                        help="C3PO test prompts optimised together (0: C3PO's own default, 8 on a CPU)")
    parser.add_argument("--batch-size", type=int, default=32, help="lm-eval batch size (both models)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated C3PO methods to time")
    parser.add_argument("--variants", default="toy,long", help="toy (0-shot suite) and/or long (few-shot prompts)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: on a shared 2-core box two threads spin-wait on each other)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)

    import lm_eval.models  # noqa: F401  (fills the registry before ours is added)
    from lm_eval.api.registry import model_registry
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from roma_eval.harness import task_manager
    from roma_eval.methods.c3po import ReferenceBuild, build_reference, load_reference
    from roma_eval.samples import load_samples
    from roma_eval.toy.cache import ensure_model
    from roma_eval.toy.config import preset

    if "c3po" not in model_registry:
        model_registry.register("c3po", target="roma_eval.methods.c3po.lm_eval:C3POLM")
    model_dir = ensure_model(preset(args.preset))
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    work = Path(tempfile.mkdtemp(prefix="c3po_bench_"))
    long_tasks = long_variant(work)

    start = time.perf_counter()
    train = load_samples(["toy_train"], split="train", limit=args.train_limit)
    build_reference(model, tokenizer, train, work / "reference", ReferenceBuild(base_model=str(model_dir)),
                    progress=False)
    reference = load_reference(work / "reference")
    import os

    print(f"torch threads {torch.get_num_threads()}; lm-eval batch size {args.batch_size}; C3PO group "
          f"{args.group or 'default'}; embedding cache {os.environ.get('ROMA_EVAL_EMBEDDING_CACHE', 'on')}")
    print(f"model: toy {args.preset} ({model_dir.name}), {model.config.num_hidden_layers} layers, "
          f"critical layers {reference.layers}; reference: {len(reference)} of {len(train)} training samples, "
          f"built in {time.perf_counter() - start:.1f} s (not timed below)")

    config = {"k": 3, "steps": 10, "mode_steps": 3}  # C3POConfig's defaults
    variants = {"toy suite (0-shot)": SUITE, f"long prompts ({FEWSHOT}-shot)": long_tasks}
    wanted = args.variants.split(",")
    variants = {name: tasks for (key, (name, tasks)) in zip(("toy", "long"), variants.items()) if key in wanted}
    methods = [m for m in METHODS if m in args.methods.split(",")]
    manager = task_manager([work])
    for name, tasks in variants.items():
        samples = load_samples(tasks, include_path=[work], limit=args.limit)
        lengths = [len(tokenizer.encode(s.context)) for s in samples]
        predicted = predict(samples, tokenizer, reference, model.config.num_hidden_layers, reference.layers[0], config)
        print(f"\n{name}: {len(samples)} prompts of {min(lengths)}-{max(lengths)} tokens (mean {np.mean(lengths):.0f})")
        print("  predicted C3PO/base: " + ", ".join(f"{m} {'<= ' * (m == 'mode')}{r:.2f}" for m,
                                                    r in predicted.items() if m in methods))
        runs = {"hf": f"pretrained={model_dir}"}
        for method in methods:
            runs[method] = (f"pretrained={model_dir},reference={work / 'reference'},c3po_method={method}"
                            + (f",c3po_group={args.group}" if args.group else ""))
        times = {key: [] for key in runs}
        run = dict(tasks=tasks, manager=manager, limit=args.limit, batch_size=args.batch_size)
        for key, model_args in runs.items():  # warm-up: file cache, lazy imports, the embedder
            timed("hf" if key == "hf" else "c3po", model_args, **run)
        for _ in range(args.repeats):
            for key, model_args in runs.items():
                times[key].append(timed("hf" if key == "hf" else "c3po", model_args, **run))
        for clock, column in (("wall", 0), ("CPU", 1)):
            base = statistics.median(t[column] for t in times["hf"])
            for key, values in times.items():
                median = statistics.median(t[column] for t in values)
                ratio = "" if key == "hf" else f"  ratio {median / base:.2f} (predicted {predicted[key]:.2f})"
                runs = ", ".join(f"{t[column]:.2f}" for t in values)
                print(f"  {clock:4s} {key:6s} median {median:7.2f} s  (runs {runs}){ratio}")


if __name__ == "__main__":
    main()

"""Where a RoMA training step spends its time, on CPU, with torch.profiler: before / after comparisons.

Runs one epoch of `train_roma` on the toy training mixture (toy tokenizer, 743 samples) with a randomly
initialised OLMoE-shaped model, and prints
  - the per-phase wall time of the training steps (tokenisation, batch assembly and the frozen-layer
    cache, forward, backward, optimiser, logging) from ``record_function`` ranges wrapped around the
    training module's own functions (whichever of them the code under test has);
  - the host-device synchronisation points per step: calls of Tensor.item / tolist / cpu / numpy /
    __bool__ / __float__ / __int__ made inside the step loop (on CPU they cost nothing; on a GPU each one
    waits for every queued kernel);
  - the top operators by self CPU time.
It imports whatever ``roma_eval`` is first on PYTHONPATH, so the same script measures an older checkout:

    PYTHONPATH=/path/to/old/checkout python bench/roma_profile.py
    PYTHONPATH=$PWD python bench/roma_profile.py [--group-by-length]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import statistics
import tempfile
import time

PHASES = {  # function of roma_eval.methods.roma.recipe, or Class.method of its data, recipe or train module -> phase
    "build_choice_batch": "batch: tokenise + collate",
    "TrainingRows.batch": "batch: index pre-tokenised rows",
    "_pad_hidden": "batch: pad cached hidden (host)",
    "LayerCache.gather": "batch: gather cached hidden",
    "RouterTraining.losses": "step losses (all of forward)",
    "run_from_layer": "forward: tuned layers",
    "choice_scores": "forward: scores",
    "TowardsRouting.regulariser": "forward: regulariser",
}
SYNCS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")


def build(args):
    import torch

    from roma_eval.samples import load_samples
    from roma_eval.tiny import build_tiny_model
    from roma_eval.toy.config import preset
    from roma_eval.toy.pretrain import build_tokenizer

    tokenizer = build_tokenizer(preset("default"))
    samples = load_samples(["toy_train"], split="train")
    torch.manual_seed(0)
    model = build_tiny_model("olmoe", tokenizer, hidden_size=args.hidden, intermediate_size=args.hidden * 2,
                             num_experts=16, num_experts_per_tok=4, num_hidden_layers=args.layers,
                             num_attention_heads=4, num_key_value_heads=4)
    return model, tokenizer, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--group-by-length", action="store_true", help="new code only: length-grouped batches")
    parser.add_argument("--no-layer-cache", action="store_true", help="new code only: run every layer each step")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--where", action="store_true", help="also list the code lines that make the host syncs")
    args = parser.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from roma_eval.embedding import load_embedder
    from roma_eval.methods.roma import train as roma
    from roma_eval.methods.roma.config import RomaConfig

    torch.set_num_threads(1)
    model, tokenizer, samples = build(args)
    fields = {f for f in RomaConfig.__dataclass_fields__}
    extra = {}
    if args.group_by_length:
        extra["group_by_length"] = True
    if args.no_layer_cache:
        extra["no_layer_cache"] = True
    unknown = set(extra) - fields
    if unknown:
        raise SystemExit(f"this roma_eval has no {', '.join(sorted(unknown))}")
    config = RomaConfig(layers="last:5", epochs=1, batch_size=args.batch_size, k=3, **extra)

    # Phases: wrap the module's own functions in record_function ranges.
    import importlib

    modules = [importlib.import_module(f"roma_eval.methods.roma.{m}") for m in ("recipe", "data", "train")]
    for name in PHASES:
        owner, attr = modules[0], name
        if "." in name:
            cls_name, attr = name.split(".")
            owner = next((getattr(m, cls_name) for m in modules if hasattr(m, cls_name)), None)
        if owner is None or not hasattr(owner, attr):
            continue
        original = getattr(owner, attr)

        def wrapped(*a, _original=original, _label=PHASES[name], **kw):
            with record_function(_label):
                return _original(*a, **kw)

        setattr(owner, attr, functools.wraps(original)(wrapped))

    # Host-sync counter: active only inside the training steps (after the base pass and embedding).
    counts: collections.Counter = collections.Counter()
    sites: collections.Counter = collections.Counter()
    state = {"in_steps": False}
    for name in SYNCS:
        original = getattr(torch.Tensor, name)

        def counting(self, *a, _original=original, _name=name, **kw):
            if state["in_steps"]:
                import traceback

                frame = next((f for f in reversed(traceback.extract_stack()[:-1]) if "roma_profile" not in f.filename),
                             None)
                where = "?" if frame is None else f"{frame.filename.split('site-packages/')[-1]}:{frame.lineno}"
                # AdamW's step counter is a host tensor even on a GPU (capturable=False): reading it waits for nothing.
                kind = "host" if "torch/optim/" in where else "device"
                counts[kind] += 1
                sites[f"{kind:6s} {_name} {where}"] += 1
            return _original(self, *a, **kw)

        setattr(torch.Tensor, name, counting)
    optimizer_step = torch.optim.AdamW.step

    def step_marker(self, *a, **kw):  # the first optimiser step: the loop is running
        state["in_steps"] = True
        with record_function("optimiser step"):
            return optimizer_step(self, *a, **kw)

    torch.optim.AdamW.step = step_marker
    embedder = load_embedder()
    started = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        result = roma.train_roma(model, tokenizer, samples, tempfile.mkdtemp() + "/ckpt", config,
                                 base_model="bench", embedder=embedder, progress=False)
    total = time.perf_counter() - started
    steps = len(result.log)
    seconds = [e["seconds"] for e in result.log]
    print(f"{len(samples)} samples, {steps} steps of {args.batch_size}; model {args.layers} layers, hidden "
          f"{args.hidden}; whole call {total:.2f} s (profiler on)")
    print(f"training steps: sum {sum(seconds):.2f} s, median {statistics.median(seconds) * 1e3:.1f} ms, "
          f"mean {statistics.fmean(seconds) * 1e3:.1f} ms, max {max(seconds) * 1e3:.1f} ms")
    events = {e.key: e for e in prof.key_averages()}
    print("\nphase (record_function ranges, base pass included; nested ranges are included in their parents):")
    for label in [*dict.fromkeys(PHASES.values()), "optimiser step"]:
        if label in events:
            e = events[label]
            print(f"  {label:34s} {e.cpu_time_total / 1e6:7.2f} s  calls {e.count:5d}  "
                  f"per call {e.cpu_time_total / e.count / 1e3:7.2f} ms")
    print(f"\ncalls that would wait for a GPU (item/tolist/cpu/numpy/bool/float/int on a device tensor) inside "
          f"the step loop: {counts['device']} ({counts['device'] / max(1, steps - 1):.1f} per step); on host "
          f"tensors: {counts['host']}")
    if args.where:
        for site, n in sites.most_common(15):
            print(f"  {n:5d}  {site}")
    print(f"\ntop {args.top} operators by self CPU time:")
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top)
    print("\n".join(line for line in table.splitlines() if line.strip()))
    with contextlib.suppress(Exception):
        print(f"\nbase pass + embedding + setup (outside the steps): {total - sum(seconds):.2f} s")


if __name__ == "__main__":
    main()

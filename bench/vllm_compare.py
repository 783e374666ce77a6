"""lm-eval's `vllm` model on a model exported by `roma-eval export` against `--model roma` on the base model with the
router checkpoint: wall time per benchmark, and per-sample agreement (the chosen answer of every multiple-choice
document, the log-likelihood of every choice; the greedy text of every toy-GSM8K document).

Random weights of a real shape (bench/gpu_scale.py's SHAPES, toy tokenizer, bf16): the base model is saved in 5 GB
shards, its last 5 routers perturbed and saved as a router checkpoint, the checkpoint exported; then each side runs
in its own process (vLLM wants the GPU to itself) with one model object, timing one lm-eval evaluation per task.
The summary (``--json``) is rewritten after each side.

    python bench/vllm_compare.py                      # GPU box with vLLM: OLMoE-1B-7B shape
    python bench/vllm_compare.py --tiny --no-vllm     # CPU, seconds: save, export and the roma side only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from gpu_scale import MC_TASKS  # noqa: E402 - the toy suite's multiple-choice tasks, as the scale bench runs them

GENERATION_TASK = "toy_gsm8k"


def prepare(args, work: Path) -> dict:
    """Base model (saved in shards), a router checkpoint of perturbed routers, its export; what each step took."""
    import torch
    from gpu_scale import SHAPES, TINY, Bench, toy_tokenizer
    from gpu_scale import build_model as build

    from roma_eval.checkpoint import RouterRecord, save_router_checkpoint
    from roma_eval.export import export_model
    from roma_eval.routing import resolve_layers, router_fingerprint, router_weights

    bench = Bench(argparse.Namespace(device=args.device, json=args.json, step_timeout=600, tiny=args.tiny))
    tokenizer = toy_tokenizer()
    model = build(bench, (TINY if args.tiny else SHAPES)[args.shape], tokenizer)
    times, started = {}, time.perf_counter()
    model.save_pretrained(work / "base", max_shard_size="5GB")
    tokenizer.save_pretrained(work / "base")
    times["save_base_s"] = round(time.perf_counter() - started, 1)
    fingerprint, layers = router_fingerprint(model), resolve_layers(model, None)
    torch.manual_seed(1)
    with torch.no_grad():  # tuned routers that route differently from the base's
        for weight in router_weights(model, layers).values():
            weight.add_(torch.randn_like(weight) * weight.float().std().to(weight.dtype))
    save_router_checkpoint(model, work / "ckpt", layers, RouterRecord(str(work / "base"), fingerprint, method="roma"))
    del model
    started = time.perf_counter()
    exported = export_model(str(work / "base"), str(work / "ckpt"), work / "export")
    times["export_s"] = round(time.perf_counter() - started, 1)
    times.update(rewritten=exported.rewritten, linked=sorted(exported.linked.values()),
                 shards=len(exported.rewritten) + len(exported.linked))
    return times


def side(args) -> None:
    """One side in this process: load its lm-eval model once, evaluate task by task, write times and samples."""
    import logging

    from lm_eval import simple_evaluate

    from roma_eval.harness import task_manager

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    work = Path(args.work)
    started = time.perf_counter()
    if args.side == "vllm":
        from lm_eval.models.vllm_causallms import VLLM

        lm = VLLM(pretrained=str(work / "export"), dtype="bfloat16", tensor_parallel_size=1, batch_size="auto",
                  gpu_memory_utilization=0.85, max_model_len=2048)
    else:
        from roma_eval.methods.roma.lm_eval import RomaLM

        lm = RomaLM(pretrained=str(work / "base"), router_checkpoint=str(work / "ckpt"), batch_size=args.batch_size,
                    dtype="float32" if args.tiny else "bfloat16", device=args.device or "cuda")
    record = {"load_s": round(time.perf_counter() - started, 1), "tasks": {}}
    manager = task_manager()
    for task in [*MC_TASKS, GENERATION_TASK]:
        limit = args.gen_limit if task == GENERATION_TASK else args.limit
        started = time.perf_counter()
        out = simple_evaluate(model=lm, tasks=[task], task_manager=manager, limit=limit, bootstrap_iters=0,
                              log_samples=True, gen_kwargs="max_gen_toks=64" if task == GENERATION_TASK else None)
        seconds = time.perf_counter() - started
        samples = {s["doc_id"]: ([r[0] for r in s["filtered_resps"]] if task != GENERATION_TASK
                                 else s["filtered_resps"][0]) for s in out["samples"][task]}
        record["tasks"][task] = {"seconds": round(seconds, 2), "documents": len(samples), "samples": samples}
    Path(args.out).write_text(json.dumps(record))


def agreement(roma: dict, vllm: dict) -> dict:
    """Per task: both sides' seconds, and how often they agree per sample."""
    found = {}
    for task, ours in roma["tasks"].items():
        theirs = vllm["tasks"][task]
        docs = sorted(ours["samples"])
        row = {"documents": len(docs), "roma_s": ours["seconds"], "vllm_s": theirs["seconds"],
               "speedup": round(ours["seconds"] / max(theirs["seconds"], 1e-9), 2)}
        if task == GENERATION_TASK:
            row["same_text"] = sum(ours["samples"][d] == theirs["samples"][str(d)] for d in docs) / len(docs)
        else:
            pairs = [(ours["samples"][d], theirs["samples"][str(d)]) for d in docs]
            row["same_choice"] = sum(a.index(max(a)) == b.index(max(b)) for a, b in pairs) / len(pairs)
            gaps = sorted(abs(x - y) for a, b in pairs for x, y in zip(a, b))
            row["loglik_gap_median"], row["loglik_gap_max"] = gaps[len(gaps) // 2], gaps[-1]
        found[task] = row
    return found


def run_side(args, name: str, work: Path) -> dict:
    out = work / f"{name}.json"
    command = [sys.executable, __file__, "--side", name, "--work", str(work), "--out", str(out),
               "--limit", str(args.limit), "--gen-limit", str(args.gen_limit), "--batch-size", str(args.batch_size),
               *(["--tiny"] if args.tiny else []), *(["--device", args.device] if args.device else [])]
    subprocess.run(command, check=True, timeout=args.side_timeout)
    return json.loads(out.read_text())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="small shapes on the CPU, seconds (a dry run)")
    parser.add_argument("--shape", default="olmoe", help="olmoe or qwen3 (bench/gpu_scale.py's SHAPES)")
    parser.add_argument("--no-vllm", action="store_true", help="only save, export and run the roma side")
    parser.add_argument("--device", default=None)
    parser.add_argument("--limit", type=int, default=200, help="documents per multiple-choice toy task")
    parser.add_argument("--gen-limit", type=int, default=32, help="toy GSM8K documents")
    parser.add_argument("--batch-size", type=int, default=32, help="`--model roma`'s batch size")
    parser.add_argument("--side-timeout", type=int, default=240, help="seconds per side")
    parser.add_argument("--json", default=os.path.join(os.environ.get("OUT", "."), "vllm_compare.json"))
    parser.add_argument("--side", choices=("roma", "vllm"), help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tiny:
        args.limit, args.gen_limit, args.device = min(args.limit, 8), min(args.gen_limit, 2), args.device or "cpu"
    if args.side:
        return side(args)
    work = Path(tempfile.mkdtemp(prefix="vllm_compare_"))
    try:
        summary = {"shape": args.shape, "tiny": args.tiny, "export": prepare(args, work)}
        Path(args.json).write_text(json.dumps(summary, indent=2))
        roma = run_side(args, "roma", work)
        summary["roma_load_s"] = roma["load_s"]
        summary["tasks"] = {task: {"roma_s": row["seconds"]} for task, row in roma["tasks"].items()}
        Path(args.json).write_text(json.dumps(summary, indent=2))
        if not args.no_vllm:
            vllm = run_side(args, "vllm", work)
            summary.update(vllm_load_s=vllm["load_s"], tasks=agreement(roma, vllm))
            Path(args.json).write_text(json.dumps(summary, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the base model and its export: 27 GB at the OLMoE shape
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()

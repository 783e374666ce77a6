"""RoMA, C3PO, the oracle and the embedder at the paper's model sizes: random weights, real shapes, real timings.

No weights reach an offline GPU box, so this builds randomly initialised models of the real shapes on the device
(``SHAPES``: OLMoE-1B-7B, Qwen3-30B-A3B) with the toy world's tokenizer (its ids fit the real vocabularies; the
LM head keeps its real size), runs every stage on the toy tasks and prints, per shape:

  - embedder: texts/s of all-MiniLM-L6-v2 (the packaged one, else its architecture with random weights and a
    word-level vocabulary), and on an accelerator its agreement with the CPU (cosine);
  - RoMA: training samples/s (mean over the epoch, median and max per step), with the frozen-layer cache and without,
    the base pass's time against an epoch's, the host syncs per step (CUDA's sync debug mode), peak memory;
  - lm-eval evaluation time of ``roma`` and ``c3po`` (NGD) over ``hf`` on the toy suite's multiple-choice tasks;
  - oracle: seconds per document, multiple choice (toy MMLU) and generation (toy GSM8K);
  - peak device memory of each step.
Accuracies are meaningless (random weights).  A JSON summary is written after every step (``--json``), each step
has its own time limit (``--step-timeout``), and a failing step is recorded and skipped.

    python bench/gpu_scale.py                      # on the GPU box: OLMoE-shaped, bf16
    python bench/gpu_scale.py --shapes olmoe,qwen3 # both (Qwen3-30B-A3B: 61 GB in bf16)
    python bench/gpu_scale.py --tiny               # CPU, seconds: the same code path on small shapes
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# transformers config fields of the real models (random weights); vocab sizes keep the LM head's real cost.
SHAPES = {
    "olmoe": dict(model_type="olmoe", vocab_size=50304, hidden_size=2048, num_hidden_layers=16, num_attention_heads=16,
                  num_key_value_heads=16, intermediate_size=1024, num_experts=64, num_experts_per_tok=8,
                  norm_topk_prob=False, max_position_embeddings=4096, tie_word_embeddings=False),
    "qwen3": dict(model_type="qwen3_moe", vocab_size=151936, hidden_size=2048, num_hidden_layers=48,
                  num_attention_heads=32, num_key_value_heads=4, head_dim=128, moe_intermediate_size=768,
                  intermediate_size=6144, num_experts=128, num_experts_per_tok=8, norm_topk_prob=True,
                  decoder_sparse_step=1, mlp_only_layers=[], max_position_embeddings=4096,
                  tie_word_embeddings=False),
}
TINY = {  # the same families, small enough for a CPU in seconds
    "olmoe": dict(SHAPES["olmoe"], vocab_size=2048, hidden_size=64, num_hidden_layers=6, num_attention_heads=4,
                  num_key_value_heads=4, intermediate_size=64, num_experts=8, num_experts_per_tok=2),
    "qwen3": dict(SHAPES["qwen3"], vocab_size=2048, hidden_size=64, num_hidden_layers=6, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, moe_intermediate_size=64, intermediate_size=128,
                  num_experts=8, num_experts_per_tok=2),
}
MC_TASKS = ["toy_mmlu", "toy_hellaswag", "toy_arc_challenge", "toy_arc_easy", "toy_piqa", "toy_winogrande",
            "toy_boolq"]


class StepTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: int):
    def handler(signum, frame):
        raise StepTimeout(f"step ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, handler)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


class Bench:
    """Devices, the summary, and one ``step`` per measurement (timed out, recorded, never fatal)."""

    def __init__(self, args):
        import torch

        from roma_eval.devices import process_state

        self.args = args
        self.device = process_state().device if args.device is None else torch.device(args.device)
        self.cuda = self.device.type == "cuda"
        self.dtype = torch.float32 if self.device.type == "cpu" else torch.bfloat16
        self.summary = {"device": str(self.device), "dtype": str(self.dtype), "tiny": args.tiny, "shapes": {},
                        "torch": torch.__version__,
                        "gpu": torch.cuda.get_device_name(self.device) if self.cuda else None}
        self.work = Path(tempfile.mkdtemp(prefix="gpu_scale_"))
        self.embedder = None  # set by the embedder step (else train_roma loads the default)

    def sync(self):
        import torch

        if self.cuda:
            torch.cuda.synchronize(self.device)

    def peak_gb(self) -> float | None:
        import torch

        return round(torch.cuda.max_memory_allocated(self.device) / 2**30, 2) if self.cuda else None

    def reset_peak(self):
        import torch

        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def write(self):
        path = Path(self.args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.summary, indent=2, default=str) + "\n")
        tmp.replace(path)

    def step(self, where: dict, name: str, fn, *a, **kw):
        """Run ``fn``; store its dict (or the error) under ``where[name]``; print it; write the summary."""
        print(f"\n== {name}", flush=True)
        self.reset_peak()
        started = time.perf_counter()
        try:
            with time_limit(self.args.step_timeout):
                result = fn(*a, **kw)
            result = {**result, "step_seconds": round(time.perf_counter() - started, 2), "peak_gb": self.peak_gb()}
        except Exception as exc:  # noqa: BLE001 - a failing step is a finding, not the end of the run
            result = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:],
                      "step_seconds": round(time.perf_counter() - started, 2)}
            print(result["trace"], file=sys.stderr)
        where[name] = result
        print(json.dumps({k: v for k, v in result.items() if k != "trace"}, default=str), flush=True)
        self.write()
        return result


# ---------------------------------------------------------------- building


def toy_tokenizer():
    from roma_eval.toy.config import preset
    from roma_eval.toy.pretrain import build_tokenizer

    return build_tokenizer(preset("default"))


def build_model(bench: Bench, fields: dict, tokenizer):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = dict(fields)
    model_type = fields.pop("model_type")
    fields["vocab_size"] = max(fields["vocab_size"], len(tokenizer))
    config = AutoConfig.for_model(model_type, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                                  eos_token_id=tokenizer.eos_token_id, **fields)
    torch.manual_seed(0)
    with torch.device(bench.device):
        model = AutoModelForCausalLM.from_config(config, dtype=bench.dtype)
    return model.eval()


def build_embedder(bench: Bench, texts):
    """all-MiniLM-L6-v2 from its package, else its architecture with random weights and a word-level vocabulary."""
    from roma_eval.embedding import load_embedder

    with contextlib.suppress(Exception):
        return load_embedder(device=str(bench.device)), "all-MiniLM-L6-v2 (packaged weights)"
    import re

    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory = bench.work / "minilm"
    words = sorted({w for t in texts for w in re.findall(r"\w+|[^\w\s]", t.lower())})
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    BertTokenizerFast(vocab_file=str(directory / "vocab.txt")).save_pretrained(directory)
    BertModel(BertConfig(vocab_size=len(words) + 5, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                         intermediate_size=1536)).save_pretrained(directory)
    transformer = models.Transformer(str(directory), max_seq_length=256)
    modules = [transformer, models.Pooling(384, "mean"), models.Normalize()]
    return SentenceTransformer(modules=modules, device=str(bench.device)), "MiniLM-L6 shape, random weights"


# ---------------------------------------------------------------- steps


def embedder_step(bench: Bench, texts) -> dict:
    import numpy as np

    from roma_eval.embedding import embed

    embedder, what = build_embedder(bench, texts)
    embed(texts[:64], embedder, cache=False)  # warm-up
    bench.sync()
    started = time.perf_counter()
    vectors = embed(texts, embedder, cache=False)
    bench.sync()
    seconds = time.perf_counter() - started
    out = {"embedder": what, "texts": len(texts), "texts_per_s": round(len(texts) / seconds, 1)}
    if bench.device.type != "cpu":  # the accelerator's vectors against the CPU's
        cpu = embed(texts[:256], embedder.to("cpu"), cache=False)
        embedder.to(str(bench.device))
        out["min_cosine_vs_cpu"] = float(np.min((cpu * vectors[:256]).sum(1)))
    bench.embedder = embedder
    return out


def roma_run(bench: Bench, model, tokenizer, samples, **config) -> dict:
    import torch

    from roma_eval.methods.roma import RomaConfig, recipe
    from roma_eval.methods.roma import train as roma
    from roma_eval.routing import resolve_layers, router_weights

    layers = resolve_layers(model, None)
    saved = {i: w.detach().clone() for i, w in router_weights(model, layers).items()}
    timing = {}
    base_pass = recipe.base_pass

    def timed_base_pass(*a, **kw):
        bench.sync()
        started = time.perf_counter()
        out = base_pass(*a, **kw)
        bench.sync()
        timing["base_pass"] = time.perf_counter() - started
        return out

    recipe.base_pass = timed_base_pass
    syncs = []
    try:
        settings = dict(epochs=1, batch_size=32, lr=7e-5, log_every=config.pop("log_every", 50), **config)
        bench.sync()
        started = time.perf_counter()
        with sync_counter(bench, syncs):
            result = roma.train_roma(model, tokenizer, samples, bench.work / f"roma-{time.time_ns()}",
                                     RomaConfig(**settings), base_model="random", embedder=bench.embedder,
                                     progress=False)
        bench.sync()
        total = time.perf_counter() - started
    finally:
        recipe.base_pass = base_pass
        with torch.no_grad():
            for i, w in router_weights(model, layers).items():
                w.copy_(saved[i])
    seconds = [e["seconds"] for e in result.log]
    steps_time = sum(seconds)
    n = len(samples) * settings["epochs"]
    return {"samples": len(samples), "steps": len(seconds), "samples_per_s_mean": round(n / steps_time, 1),
            "step_s_median": round(statistics.median(seconds), 4), "step_s_max": round(max(seconds), 4),
            "base_pass_s": round(timing.get("base_pass", float("nan")), 2),
            "base_pass_share_of_epoch": round(timing.get("base_pass", float("nan")) / (steps_time / settings["epochs"]),
                                              3),
            "total_s": round(total, 2), "host_syncs_per_step": round(len(syncs) / max(1, len(seconds)), 2) if
            bench.cuda else None, "config": settings}


@contextlib.contextmanager
def sync_counter(bench: Bench, found: list):
    """Count CUDA host syncs (torch.cuda.set_sync_debug_mode('warn')) inside the block; nothing on a CPU."""
    if not bench.cuda:
        yield
        return
    import warnings

    import torch

    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        found.extend(str(w.message) for w in caught if "synchroniz" in str(w.message).lower())
    finally:
        torch.cuda.set_sync_debug_mode("default")


def roma_steps(bench: Bench, where: dict, model, tokenizer, samples):
    bench.step(where, "roma_cached", roma_run, bench, model, tokenizer, samples)
    bench.step(where, "roma_cached_per_step_sync", roma_run, bench, model, tokenizer, samples, log_every=1)
    bench.step(where, "roma_group_by_length", roma_run, bench, model, tokenizer, samples, group_by_length=True)
    bench.step(where, "roma_no_layer_cache", roma_run, bench, model, tokenizer, samples, no_layer_cache=True)


def evaluate(bench: Bench, lm, tasks, limit) -> float:
    from lm_eval import simple_evaluate

    from roma_eval.harness import task_manager

    bench.sync()
    started = time.perf_counter()
    simple_evaluate(model=lm, tasks=tasks, task_manager=task_manager(), limit=limit, bootstrap_iters=0)
    bench.sync()
    return time.perf_counter() - started


def eval_ratios(bench: Bench, model, tokenizer, train_samples) -> dict:
    """lm-eval wall time of roma (a router checkpoint applied) and c3po (NGD) over hf, same model object."""
    import torch
    from lm_eval.models.huggingface import HFLM

    from roma_eval.checkpoint import RouterRecord, save_router_checkpoint
    from roma_eval.methods.c3po import ReferenceBuild, build_reference
    from roma_eval.methods.c3po.lm_eval import C3POLM
    from roma_eval.methods.roma.lm_eval import RomaLM
    from roma_eval.routing import resolve_layers, router_fingerprint, router_weights

    args = bench.args
    layers = resolve_layers(model, None)
    saved = {i: w.detach().clone() for i, w in router_weights(model, layers).items()}
    checkpoint = bench.work / f"routers-{time.time_ns()}"
    save_router_checkpoint(model, checkpoint, layers, RouterRecord("random", router_fingerprint(model)))
    reference = bench.work / f"reference-{time.time_ns()}"
    bench.sync()
    started = time.perf_counter()
    build_reference(model, tokenizer, train_samples, reference, ReferenceBuild(base_model="random", batch_size=32),
                    progress=False)
    bench.sync()
    build = time.perf_counter() - started
    common = dict(pretrained=model, tokenizer=tokenizer, batch_size=args.eval_batch_size)
    hf = HFLM(**common)
    evaluate(bench, hf, MC_TASKS[:1], 4)  # warm-up (kernels, allocator)
    times = {"hf": evaluate(bench, hf, MC_TASKS, args.eval_limit)}
    c3po = C3POLM(reference=str(reference), **common)
    evaluate(bench, c3po, MC_TASKS[:1], 4)  # warm-up (the embedder)
    times["c3po_ngd"] = evaluate(bench, c3po, MC_TASKS, args.eval_limit)
    try:
        times["roma"] = evaluate(bench, RomaLM(router_checkpoint=str(checkpoint), **common), MC_TASKS, args.eval_limit)
    finally:
        with torch.no_grad():
            for i, w in router_weights(model, layers).items():
                w.copy_(saved[i])
    docs = args.eval_limit * len(MC_TASKS)
    return {"documents": docs, "eval_batch_size": args.eval_batch_size, "c3po_group": c3po.c3po.group,
            "seconds": {k: round(v, 2) for k, v in times.items()},
            "roma_over_hf": round(times["roma"] / times["hf"], 3),
            "c3po_over_hf": round(times["c3po_ngd"] / times["hf"], 2),
            "reference_build_s": round(build, 2)}


def oracle_step(bench: Bench, model, tokenizer, task: str, limit: int) -> dict:
    from roma_eval.methods.oracle import OracleConfig, load_oracle_tasks, run_oracle

    tasks = load_oracle_tasks([task], limit=limit)
    bench.sync()
    started = time.perf_counter()
    result = run_oracle(model, tokenizer, tasks, bench.work / f"oracle-{time.time_ns()}", OracleConfig(),
                        model_name=f"random-{task}", progress=False)
    bench.sync()
    seconds = time.perf_counter() - started
    convergence = result.results["oracle"]["convergence"][task]
    return {"task": task, "documents": limit, "s_per_document": round(seconds / limit, 4),
            "batch_size": result.results["oracle"]["config"]["batch_size"],
            "mean_steps": round(convergence["mean_steps"], 2)}


# ---------------------------------------------------------------- main


def run_shape(bench: Bench, name: str, fields: dict, tokenizer, train, texts):
    import dataclasses as dc

    import torch

    where = bench.summary["shapes"].setdefault(name, {})
    model = None

    def build():
        nonlocal model
        bench.sync()
        started = time.perf_counter()
        model = build_model(bench, fields, tokenizer)
        bench.sync()
        params = sum(p.numel() for p in model.parameters())
        return {"parameters_b": round(params / 1e9, 3), "build_s": round(time.perf_counter() - started, 2),
                "experts_implementation": getattr(model.config, "_experts_implementation", None)}

    if "error" in bench.step(where, "model", build):
        return
    args = bench.args
    samples = [dc.replace(s, doc_id=s.doc_id + 100_000 * k) for k in range(args.roma_repeat) for s in train]
    if "roma" in args.parts:
        roma_steps(bench, where, model, tokenizer, samples)
    if "eval" in args.parts:
        bench.step(where, "eval_ratios", eval_ratios, bench, model, tokenizer, train[: args.reference_samples])
    if "oracle" in args.parts:
        bench.step(where, "oracle_multiple_choice", oracle_step, bench, model, tokenizer, "toy_mmlu",
                   args.oracle_mc_limit)
        bench.step(where, "oracle_generation", oracle_step, bench, model, tokenizer, "toy_gsm8k", args.oracle_gen_limit)
    del model
    if bench.cuda:
        torch.cuda.empty_cache()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="small shapes on the CPU, seconds (a dry run)")
    parser.add_argument("--shapes", default="olmoe", help="comma-separated: olmoe, qwen3")
    parser.add_argument("--parts", default="embedder,roma,eval,oracle", help="which measurements")
    parser.add_argument("--device", default=None, help="default: this process's accelerator, else the CPU")
    parser.add_argument("--json", default=os.path.join(os.environ.get("OUT", "."), "gpu_scale.json"))
    parser.add_argument("--step-timeout", type=int, default=240, help="seconds per step")
    parser.add_argument("--roma-repeat", type=int, default=4, help="copies of the 743 toy training samples to train on")
    parser.add_argument("--reference-samples", type=int, default=400, help="training samples in C3PO's reference")
    parser.add_argument("--eval-limit", type=int, default=60, help="documents per toy task for the lm-eval ratios")
    parser.add_argument("--eval-batch-size", type=int, default=32)
    parser.add_argument("--oracle-mc-limit", type=int, default=256)
    parser.add_argument("--oracle-gen-limit", type=int, default=32)
    parser.add_argument("--embed-texts", type=int, default=8192)
    args = parser.parse_args(argv)
    if args.tiny:  # at most these sizes
        for name, value in dict(roma_repeat=1, reference_samples=60, eval_limit=4, oracle_mc_limit=8,
                                oracle_gen_limit=2, embed_texts=128).items():
            setattr(args, name, min(getattr(args, name), value))
        args.device = args.device or "cpu"
    os.environ.setdefault("ROMA_EVAL_EMBEDDING_CACHE", "off")  # timings measure the work, not the cache
    import logging

    import torch

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    torch.manual_seed(0)
    bench = Bench(args)
    bench.summary["args"] = vars(args)
    from roma_eval.samples import load_samples

    tokenizer = toy_tokenizer()
    train = load_samples(["toy_train"], split="train")
    if args.tiny:
        train = train[:48]
    texts = [s.text for s in train]
    texts = (texts * (args.embed_texts // len(texts) + 1))[: args.embed_texts]
    if "embedder" in args.parts or "roma" in args.parts or "eval" in args.parts:
        bench.step(bench.summary, "embedder", embedder_step, bench, texts)
    shapes = TINY if args.tiny else SHAPES
    for name in args.shapes.split(","):
        run_shape(bench, name, shapes[name], tokenizer, train, texts)
    bench.write()
    print(f"\nsummary: {args.json}")
    return bench.summary


if __name__ == "__main__":
    main()

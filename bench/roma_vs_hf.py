"""Wall time of lm-eval `--model roma` (with a router checkpoint) over `--model hf`, same tasks, one run.

RoMA changes router weights only, so the target ratio is <= 1.01 (issue 2).  Runs interleave
hf and roma to share any drift of the machine; each timing is a whole simple_evaluate call
(model load, checkpoint load and check, all requests).
"""

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from lm_eval_helpers import evaluate_api  # noqa: E402

from roma_eval.checkpoint import RouterRecord, save_router_checkpoint  # noqa: E402
from roma_eval.routing import resolve_layers, router_fingerprint, routers  # noqa: E402
from roma_eval.tiny import save_tiny_model  # noqa: E402

REPEATS = 3
TASKS = ["tiny_animals", "tiny_sums"]
# OLMoE's routing shape (64 experts, top-8) at a width that runs on 2 CPU cores.
SHAPE = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=8, num_experts=64, num_experts_per_tok=8)


def main() -> None:
    from transformers import AutoModelForCausalLM

    work = Path(tempfile.mkdtemp(prefix="roma_bench_"))
    base = save_tiny_model("olmoe", work / "base", seed=0, **SHAPE)
    model = AutoModelForCausalLM.from_pretrained(base)
    fingerprint = router_fingerprint(model)
    layers = resolve_layers(model)
    with torch.no_grad():
        for i in layers:
            routers(model)[i].weight.mul_(1.5)
    ckpt = save_router_checkpoint(model, work / "ckpt", layers, RouterRecord(str(base), fingerprint))
    runs = {"hf": [], "roma": []}
    cpu = {"hf": [], "roma": []}
    args = {"hf": f"pretrained={base}", "roma": f"pretrained={base},router_checkpoint={ckpt}"}
    evaluate_api("hf", args["hf"], TASKS)  # warm-up: file cache, lazy imports
    for _ in range(REPEATS):
        for name in runs:
            start, start_cpu = time.perf_counter(), time.process_time()
            evaluate_api(name, args[name], TASKS)
            runs[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    hf, roma = statistics.median(runs["hf"]), statistics.median(runs["roma"])
    print(f"model: olmoe {SHAPE}, tuned layers {layers}; tasks {TASKS}; {REPEATS} interleaved runs each")
    print(f"hf   median {hf:.3f} s  (runs {', '.join(f'{t:.3f}' for t in runs['hf'])})")
    print(f"roma median {roma:.3f} s  (runs {', '.join(f'{t:.3f}' for t in runs['roma'])})")
    print(f"roma / hf wall time = {roma / hf:.3f}  (target <= 1.01)")
    # On a shared machine wall time mostly measures the neighbours; CPU time measures our work.
    print(f"roma / hf CPU time  = {statistics.median(cpu['roma']) / statistics.median(cpu['hf']):.3f}")


if __name__ == "__main__":
    main()

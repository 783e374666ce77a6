"""Wall time of one `roma-eval sweep` over 3 router checkpoints against 3 separate `lm_eval --model roma` runs.

Two comparisons, each measured in this run, interleaved:
- the commands a user types: one `roma-eval sweep` process against three `lm_eval` processes (each separate run
  pays the interpreter, the imports, lm-eval's task index and the model load again);
- in one process: three lm-eval evaluations of `--model roma` by name (a load each, as `lm_eval` does) against one
  load and the sweep (`methods/roma/sweep.py`): the model load alone.
"""

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from lm_eval_helpers import FIXTURE_TASKS, LM_EVAL  # noqa: E402

from roma_eval.checkpoint import RouterRecord, save_router_checkpoint  # noqa: E402
from roma_eval.routing import resolve_layers, router_fingerprint, router_weights  # noqa: E402
from roma_eval.tiny import save_tiny_model  # noqa: E402

REPEATS = 2
TASKS = ["tiny_animals", "tiny_sums"]
# OLMoE's routing shape (64 experts, top-8) at a width that runs on 2 CPU cores (as bench/roma_vs_hf.py).
SHAPE = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=8, num_experts=64, num_experts_per_tok=8)
ROMA_EVAL = str(Path(sys.executable).parent / "roma-eval")
COMMON = ["--tasks", ",".join(TASKS), "--include_path", str(FIXTURE_TASKS), "--device", "cpu", "--batch_size", "8"]


def make_checkpoints(work: Path) -> tuple[Path, list[str]]:
    from transformers import AutoModelForCausalLM

    base = save_tiny_model("olmoe", work / "base", seed=0, **SHAPE)
    model = AutoModelForCausalLM.from_pretrained(base)
    record, layers = RouterRecord(str(base), router_fingerprint(model), method="roma"), resolve_layers(model)
    checkpoints = []
    for scale in (0.5, 1.5, 2.0):
        with torch.no_grad():
            for i in layers:
                router_weights(model)[i].mul_(scale)
        checkpoints.append(str(save_router_checkpoint(model, work / f"ckpt_{scale}", layers, record)))
        with torch.no_grad():
            for i in layers:
                router_weights(model)[i].div_(scale)
    return base, checkpoints


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def commands(base: Path, checkpoints: list[str], out: Path) -> dict:
    def separate():
        for i, checkpoint in enumerate(checkpoints):
            subprocess.run([LM_EVAL, "--model", "roma", "--model_args", f"pretrained={base},router_checkpoint="
                            f"{checkpoint}", *COMMON, "--output_path", str(out / f"lm_eval_{i}"), "--log_samples"],
                           check=True, capture_output=True)

    def swept():
        subprocess.run([ROMA_EVAL, "sweep", "--pretrained", str(base), "--router_checkpoints", ",".join(checkpoints),
                        *COMMON, "--output_path", str(out / "sweep"), "--overwrite"], check=True, capture_output=True)

    return {"separate": separate, "sweep": swept}


def in_process(base: Path, checkpoints: list[str], out: Path) -> dict:
    from roma_eval.harness import evaluate, task_manager
    from roma_eval.methods.roma.sweep import SweepSettings, load_base, plan, prepare, sweep

    manager = task_manager([FIXTURE_TASKS], TASKS)
    options = {"limit": None, "batch_size": 8, "device": "cpu"}

    def separate():
        for i, checkpoint in enumerate(checkpoints):
            evaluate("roma", out / f"api_{i}", TASKS, model_args=f"pretrained={base},router_checkpoint={checkpoint}",
                     task_manager=manager, **options).save()

    def swept():
        settings = SweepSettings({"pretrained": str(base)}, tuple(TASKS), out / "api_sweep", manager, options)
        entries = prepare(checkpoints, settings)
        plan(entries, settings, overwrite=True)
        list(sweep(load_base(settings), entries, settings))

    return {"separate": separate, "sweep": swept}


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="roma_sweep_bench_"))
    base, checkpoints = make_checkpoints(work)
    print(f"model: olmoe {SHAPE}; tasks {TASKS}; 3 checkpoints; {REPEATS} interleaved runs each")
    for title, runs in (("commands (lm_eval x3 vs roma-eval sweep)", commands(base, checkpoints, work)),
                        ("in one process (3 loads vs 1 load)", in_process(base, checkpoints, work))):
        runs["sweep"]()  # warm-up: file cache, lazy imports
        times = {name: [] for name in runs}
        for _ in range(REPEATS):
            for name, run in runs.items():
                times[name].append(timed(run))
        separate, swept = statistics.median(times["separate"]), statistics.median(times["sweep"])
        print(f"{title}: separate {separate:.2f} s, sweep {swept:.2f} s (runs: "
              f"{', '.join(f'{t:.2f}' for t in times['separate'])} / {', '.join(f'{t:.2f}' for t in times['sweep'])})"
              f"; separate / sweep = {separate / swept:.2f}")


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# The GPU check of issue "Paper scale on GPUs": one prepared script for the device machine (one H200, offline).
#
#   on a machine with the package registry:  ../shared/gpu/fetch_wheels.sh .gpu/whl   (keep .gpu/ out of git)
#   on the device machine, project root:     bash bench/gpu_check.sh                  (device tool: carry [".gpu"])
#
# Dry run on a CPU first:  GPU_CHECK_TINY=1 bash bench/gpu_check.sh   (seconds; the same code paths)
# Steps, each with its own time limit; $OUT/gpu_scale.json is rewritten after every measurement, $OUT/gpu_check.log
# keeps the output.  About 5 minutes on one H200 for the OLMoE-1B-7B shape; QWEN3=1 adds Qwen3-30B-A3B (~4 more);
# where vLLM is installed, step 4 (vLLM on an export against --model roma) adds about 5 (bench/vllm_compare.py);
# step 5 (router training with FSDP2 against without, one process) about 1.
set -uo pipefail
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if ! python3 -c "import lm_eval, faiss, datasets" 2>/dev/null; then  # what the GPU box lacks travels as wheels
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$HOME/site" \
    .gpu/whl/*.whl
  export PYTHONPATH="$HOME/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
TINY=${GPU_CHECK_TINY:+--tiny}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv
python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
'transformers', transformers.__version__)"

echo "== 1. lm-eval --model roma / c3po without the .pth shim (a --target install): roma-eval eval's fallback"
timeout 150 python3 - <<'PY'
import subprocess, sys, tempfile
from roma_eval.tiny import save_tiny_model
from roma_eval.toy.config import preset
from roma_eval.toy.pretrain import build_tokenizer
model = save_tiny_model("olmoe", tempfile.mkdtemp() + "/tiny", tokenizer=build_tokenizer(preset("default")))
for name in ("roma", "hf"):
    proc = subprocess.run([sys.executable, "-m", "roma_eval.cli", "eval", "--model", name, "--model_args",
                           f"pretrained={model}", "--tasks", "toy_mmlu", "--limit", "4"], capture_output=True, text=True)
    print(name, "rc", proc.returncode, proc.stdout.strip().splitlines()[-3:] if proc.stdout else proc.stderr[-800:])
PY

echo "== 2. the scale bench: OLMoE-1B-7B shape (RoMA, embedder, lm-eval ratios, oracle)"
timeout 480 python3 bench/gpu_scale.py $TINY --json "$OUT/gpu_scale.json" --step-timeout 150

if [ -n "${QWEN3:-}" ]; then
  echo "== 3. Qwen3-30B-A3B shape (RoMA and the oracle)"
  timeout 300 python3 bench/gpu_scale.py $TINY --shapes qwen3 --parts roma,oracle --roma-repeat 1 \
    --oracle-mc-limit 64 --oracle-gen-limit 8 --json "$OUT/gpu_scale_qwen3.json" --step-timeout 120
fi
echo "== 4. lm-eval's vllm model on an exported model against --model roma (issue 26; needs vLLM installed)"
if python3 -c "import vllm" 2>/dev/null; then  # vLLM (~400 MB of wheels) does not travel: only where the box has it
  timeout 560 python3 bench/vllm_compare.py ${GPU_CHECK_TINY:+--tiny --no-vllm} --json "$OUT/vllm_compare.json"
else
  echo "skipped: vLLM is not installed here; the export and the roma side on a tiny model instead"
  timeout 120 python3 bench/vllm_compare.py --tiny --no-vllm --json "$OUT/vllm_compare_tiny.json" | tail -4
fi
echo "== 5. router training with the frozen weights sharded by FSDP2 (issue 26): one process on this GPU, bf16"
# One GPU holds one NCCL rank, so the two-process comparison is the CPU test's (tests/methods/roma/test_roma.py); here
# the CUDA path (device mesh, shards moved from the CPU load to the GPU) against the same run without FSDP.
timeout 240 python3 - <<'PY'
import os, subprocess, sys, tempfile, time
from pathlib import Path
import torch
from roma_eval.checkpoint import load_router_checkpoint
from roma_eval.tiny import save_tiny_model
from roma_eval.toy.config import preset
from roma_eval.toy.pretrain import build_tokenizer
root = Path(tempfile.mkdtemp())
model = save_tiny_model("olmoe", root / "tiny", tokenizer=build_tokenizer(preset("default")))
args = ["-m", "roma_eval.cli", "train", "--pretrained", str(model), "--tasks", "toy_train", "--limit", "64",
        "--layers", "last:2", "--lr", "0.01", "--epochs", "1", "--batch-size", "8", "--dtype", "bfloat16",
        "--no_heldout_eval", "--no_progress"]
torchrun = str(Path(sys.executable).parent / "torchrun")
runs = {"plain": ([sys.executable], {}), "fsdp": ([torchrun, "--standalone", "--nproc_per_node", "1"],
                                                  {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"})}
for name, (launcher, env) in runs.items():
    start = time.perf_counter()
    proc = subprocess.run([*launcher, *args, "--output_path", str(root / name)], capture_output=True, text=True,
                          env={**os.environ, **env})
    print(name, "rc", proc.returncode, f"{time.perf_counter() - start:.1f} s", proc.stderr[-600:] if proc.returncode else "")
a, b = (load_router_checkpoint(root / n) for n in runs)
print("max |routers fsdp - plain|:", max((a.tensors[l].float() - b.tensors[l].float()).abs().max().item() for l in a.tensors),
      "sharded_across", b.metadata["training_config"]["summary"].get("sharded_across"))
PY
echo "== done: $OUT"

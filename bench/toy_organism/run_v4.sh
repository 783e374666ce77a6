#!/bin/bash
# World v4's run: pretrain the default recipe's model (one thread), then evaluate it as the 1,500-step candidate.
# usage: bench/toy_organism/run_v4.sh [STEPS] [LRS]
set -euo pipefail
steps=${1:-1500}
lrs=${2:-0.001,0.003,0.01}
source "$(dirname "$0")/env.sh"
export OMP_NUM_THREADS=1
date
"$python" -c "
from roma_eval.toy.cache import ensure_model
from roma_eval.toy.config import ToyConfig
print(ensure_model(ToyConfig(), progress=False))" 2>&1 | grep -v it/s
date
"$python" bench/toy_organism/evaluate_candidate.py "$steps" "$lrs"
date

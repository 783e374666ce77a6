#!/bin/bash
# Wait until trunk.py (its output in TRUNK_LOG) has saved the branch point of candidate STEPS, then evaluate it.
# usage: bench/toy_organism/after_branch.sh STEPS TRUNK_LOG [LRS]
set -euo pipefail
steps=${1:?usage: after_branch.sh STEPS TRUNK_LOG [LRS]}
log=$(realpath "${2:?usage: after_branch.sh STEPS TRUNK_LOG [LRS]}")
lrs=${3:-0.001,0.003,0.01}
source "$(dirname "$0")/env.sh"
while ! grep -q "saved branch for steps=$steps " "$log"; do sleep 20; done
"$python" bench/toy_organism/evaluate_candidate.py "$steps" "$lrs"

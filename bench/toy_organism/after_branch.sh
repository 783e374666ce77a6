#!/bin/bash
# wait for the trunk's branch point of candidate $1, then evaluate it
while ! grep -q "saved branch for steps=$1 " /work/toy-cache/logs/trunk.log; do sleep 20; done
cd /work/wt-toy
ROMA_EVAL_CACHE=/work/toy-cache OMP_WAIT_POLICY=PASSIVE PYTHONPATH=$PWD HF_HOME=/work/main/.hf_home HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
  /work/main/.venv/bin/python /work/toy-cache/evaluate_candidate.py $1 0.001,0.003,0.01

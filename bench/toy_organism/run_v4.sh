#!/bin/bash
cd /work/wt-toy
export ROMA_EVAL_CACHE=/work/toy-cache OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE PYTHONPATH=/work/wt-toy HF_HOME=/work/main/.hf_home HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
date
/work/main/.venv/bin/python -c "
from roma_eval.toy.cache import ensure_model
from roma_eval.toy.config import ToyConfig
print(ensure_model(ToyConfig(), progress=False))" 2>&1 | grep -v it/s
date
/work/main/.venv/bin/python /work/toy-cache/evaluate_candidate.py 1500 0.001,0.003,0.01
date

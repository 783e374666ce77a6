"""Base results of one recipe over several pretraining seeds (how much one run says): `seed_spread.py 1,2`."""
import json
import logging
import os
import sys
from pathlib import Path

from roma_eval.demo import DemoContext, run_demo
from roma_eval.demo.base import base_stage, toy_model_stage
from roma_eval.toy.config import ToyConfig

logging.basicConfig(level=logging.INFO, format="%(message)s")
for seed in (int(s) for s in sys.argv[1].split(",")):
    toy = ToyConfig().with_seed(seed)
    out = Path(os.environ.get("CANDIDATE_DIR", "runs/toy_organism")) / f"seed-{seed}"
    ctx = DemoContext.from_preset("default", output=out, progress=False)
    ctx.toy = toy
    ctx.model_identity = f"candidate {toy.key()}"
    run_demo(ctx, stages=[("toy model", toy_model_stage), ("base", base_stage)])
    print(seed, json.dumps({k: round(100 * v, 1) for k, v in ctx.columns["base"].items()}), flush=True)

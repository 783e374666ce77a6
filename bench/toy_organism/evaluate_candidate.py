"""Organism criteria of one candidate pretraining length (no RoMA involved): base vs chance on the 8 benchmarks,
oracle − base, plain Router Tuning's held-out mixture accuracy."""
import json
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from roma_eval.checkpoint import apply_router_checkpoint, load_router_checkpoint
from roma_eval.demo import DemoContext, run_demo
from roma_eval.demo.base import base_stage, toy_model_stage
from roma_eval.demo.oracle import oracle_stage
from roma_eval.demo.roma import heldout_accuracy
from roma_eval.demo.table import chance_levels
from roma_eval.methods.roma.config import RomaConfig
from roma_eval.methods.roma.train import train_roma
from roma_eval.toy.config import ToyConfig

logging.basicConfig(level=logging.INFO, format="%(message)s")
steps = int(sys.argv[1])
rt_lrs = [float(x) for x in sys.argv[2].split(",")] if len(sys.argv) > 2 else [3e-3]
base_cfg = ToyConfig()
toy = replace(base_cfg, train=replace(base_cfg.train, steps=steps))
out = Path(os.environ.get("CANDIDATE_DIR", f"runs/toy_organism/cand-{steps}"))
ctx = DemoContext.from_preset("default", output=out, progress=False)
ctx.toy = toy
ctx.model_identity = f"candidate {toy.key()}"
t = time.time()
run_demo(ctx, stages=[("toy model", toy_model_stage), ("base", base_stage), ("oracle", oracle_stage)])
print("stages", time.time() - t, flush=True)
chance = chance_levels(None)
base, oracle = ctx.columns["base"], ctx.columns["oracle"]
crit = {"steps": steps, "base": base, "oracle": oracle, "chance": chance,
        "margin": {k: 100 * (base[k] - chance[k]) for k in base},
        "oracle_gap": 100 * sum(oracle[k] - base[k] for k in base) / len(base)}

model, tok = ctx.load_model()
b, n = heldout_accuracy(model, tok)
crit["heldout_base"] = b
crit["router_tuning"] = {}
for lr in rt_lrs:
    t = time.time()
    ck = out / f"rt-lr{lr}"
    if not (ck / "router_config.json").is_file():
        model, tok = ctx.load_model()
        train_roma(model, tok, ctx.training_samples(), ck, RomaConfig(regulariser="none", lr=lr),
                   base_model=ctx.pretrained, progress=False)
    model, tok = ctx.load_model()
    apply_router_checkpoint(model, load_router_checkpoint(ck))
    crit["router_tuning"][lr] = heldout_accuracy(model, tok)[0]
    print(f"RT lr {lr}: heldout {crit['router_tuning'][lr]:.4f} vs base {b:.4f} ({time.time()-t:.0f}s)", flush=True)
(out / "criteria.json").write_text(json.dumps(crit, indent=1))
shown = ("margin", "oracle_gap", "heldout_base", "router_tuning")
print(json.dumps({k: v for k, v in crit.items() if k in shown}, indent=1))
stages = json.loads((out / "demo.json").read_text())["stages"]
print("stage seconds:", {k: v["seconds"] for k, v in stages.items()})

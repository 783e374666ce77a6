"""RoMA learning rate on the training mixture's held-out split only (no benchmark is looked at)."""
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from roma_eval.checkpoint import apply_router_checkpoint, load_router_checkpoint
from roma_eval.demo import DemoContext
from roma_eval.demo.roma import heldout_accuracy
from roma_eval.methods.roma.config import RomaConfig
from roma_eval.methods.roma.train import train_roma
from roma_eval.toy.cache import ensure_model
from roma_eval.toy.config import ToyConfig

steps = int(sys.argv[1])
lrs = [float(x) for x in sys.argv[2].split(",")]
base_cfg = ToyConfig()
toy = replace(base_cfg, train=replace(base_cfg.train, steps=steps))
out = Path(os.environ.get("CANDIDATE_DIR", f"runs/toy_organism/cand-{steps}"))
ctx = DemoContext.from_preset("default", output=out, progress=False)
ctx.toy = toy
ctx.pretrained = str(ensure_model(toy))
res = {}
for lr in lrs:
    t = time.time()
    ck = out / f"roma-lr{lr}"
    if not (ck / "router_config.json").is_file():
        model, tok = ctx.load_model()
        train_roma(model, tok, ctx.training_samples(), ck, RomaConfig(lr=lr), base_model=ctx.pretrained, progress=False)
    model, tok = ctx.load_model()
    apply_router_checkpoint(model, load_router_checkpoint(ck))
    res[lr] = heldout_accuracy(model, tok)[0]
    print(f"RoMA lr {lr}: heldout {res[lr]:.4f} ({time.time()-t:.0f}s)", flush=True)
(out / "roma_sweep.json").write_text(json.dumps(res, indent=1))

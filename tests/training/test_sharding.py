"""Router training with the frozen weights sharded by FSDP2 (roma_eval.training.sharding).  That two processes write
the one-process checkpoint is tests/methods/roma/test_roma.py::test_two_processes_give_the_one_process_checkpoint;
here: what each process holds, which layers a cached step gathers, and the refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from roma_eval.cli import main
from roma_eval.training.sharding import SHARDED_VERBS

REPO = Path(__file__).resolve().parents[2]

# Run in each of two processes: the model sharded, then run_from_layer from layer 2 (of 4), counting the FSDP units
# that gather their weights; the logits and the units' parameter types go to rank_<r>.json.
SCRIPT = """
import json, sys, torch
from torch.distributed.fsdp import FSDPModule
from torch.distributed.fsdp._fully_shard._fsdp_param_group import FSDPParamGroup
from roma_eval.devices import process_state
from roma_eval.model_loading import load_model
from roma_eval.routing import routers
from roma_eval.routing.arch import decoder_layers
from roma_eval.routing.partial import capture_layer_input, run_from_layer
from roma_eval.training.sharding import shard_frozen_weights

dist = process_state()
model, _ = load_model(sys.argv[1], device="cpu")
ids = torch.arange(3, 27).view(2, 12)
with torch.no_grad(), capture_layer_input(model, 2) as captured:
    model(input_ids=ids)
hidden = captured["hidden_states"]
with torch.no_grad():
    expected = run_from_layer(model, 2, hidden, torch.ones_like(ids)).logits
shard_frozen_weights(model, dist)
router_params = {id(p) for module in routers(model).values() for p in module.parameters()}
kinds = {type(p).__name__ for p in model.parameters() if id(p) not in router_params}  # before a forward gathers any
gathered, index = [], {id(layer): i for i, layer in enumerate(decoder_layers(model))}
unshard = FSDPParamGroup.unshard


def counted(group, *args, **kwargs):  # each decoder layer whose weights FSDP gathers
    gathered.extend(index[id(m)] for m in group.modules if id(m) in index)
    return unshard(group, *args, **kwargs)


FSDPParamGroup.unshard = counted
with torch.no_grad():
    model(input_ids=ids)  # the first forward through the root initialises FSDP (the base pass does it)
    gathered.clear()
    logits = run_from_layer(model, 2, hidden, torch.ones_like(ids)).logits
json.dump({"gathered": gathered, "difference": (logits - expected).abs().max().item(), "frozen": sorted(kinds),
           "routers": sorted({type(p).__name__ for module in routers(model).values() for p in module.parameters()}),
           "fsdp_layers": sum(isinstance(layer, FSDPModule) for layer in decoder_layers(model))},
          open(f"{sys.argv[2]}/rank_{dist.process_index}.json", "w"))
"""


@pytest.mark.slow
def test_each_process_holds_shards_and_a_cached_step_gathers_only_the_layers_it_runs(tmp_path, tokenizer):
    from roma_eval.tiny import save_tiny_model

    model = save_tiny_model("olmoe", tmp_path / "model", seed=3, tokenizer=tokenizer)
    script = tmp_path / "shard.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    torchrun = str(Path(sys.executable).parent / "torchrun")
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", str(script), str(model), str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        found = json.loads((tmp_path / f"rank_{rank}.json").read_text())
        assert found["frozen"] == ["DTensor"] and found["routers"] == ["Parameter"]  # routers whole, the rest shards
        assert found["fsdp_layers"] == 4
        assert found["gathered"] == [2, 3]  # layers 0 and 1 are skipped without gathering their weights
        assert found["difference"] < 1e-5


def test_a_verb_that_does_not_shard_is_refused_under_fsdp(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "2")
    assert "oracle" not in SHARDED_VERBS and "train" in SHARDED_VERBS
    assert main(["oracle", "--pretrained", str(tmp_path / "m"), "--tasks", "x", "--output_path",
                 str(tmp_path / "out")]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("roma-eval oracle: error: oracle does not shard a model with FSDP")
    assert "`roma-eval oracle --parallelize`" in line
    assert not (tmp_path / "out").exists()


def test_fsdp1_is_refused_before_anything_loads(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.delenv("FSDP_VERSION", raising=False)  # accelerate's default: FSDP1
    assert main(["train", "--pretrained", str(tmp_path / "m"), "--tasks", "x", "--output_path",
                 str(tmp_path / "out")]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == ("roma-eval train: error: the FSDP configuration asks for FSDP version 1; router training shards "
                    "with FSDP2: set fsdp_version: 2 in `accelerate config` (FSDP_VERSION=2 under torchrun)")
    assert not (tmp_path / "out").exists()

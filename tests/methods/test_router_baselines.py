"""Oracle Tuning and Dense BP: RoMA's loop with another routing target / another router gradient, checked against
independent references (the oracle's stored routing read by hand, Router Tuning itself)."""

import json
from contextlib import nullcontext
from types import SimpleNamespace

import pytest
import torch
from lm_eval_helpers import FIXTURE_TASKS

from roma_eval.checkpoint import load_router_checkpoint
from roma_eval.errors import RomaEvalError
from roma_eval.methods.dense_bp import DenseBPConfig, train_dense_bp
from roma_eval.methods.dense_bp import train as dense_train
from roma_eval.methods.oracle import OracleConfig, load_oracle_tasks, run_oracle
from roma_eval.methods.oracle_tuning import OracleTuningConfig, train_oracle_tuning
from roma_eval.methods.roma.config import RomaConfig
from roma_eval.methods.roma.train import train_roma
from roma_eval.routing import probe_routing, token_positions
from roma_eval.samples import load_samples
from roma_eval.scoring import build_choice_batch
from roma_eval.tiny import build_tiny_model

BUDGET = dict(layers="last:2", epochs=2, batch_size=8, lr=5e-2)
# The tiny random model's routing is peaked (routing term ~1e-2 against a task loss ~5): a large λ makes the pull
# visible within 8 steps.
PULL = {**BUDGET, "lr": 1e-2, "lam": 1e4}
TUNED = {"model.layers.2.mlp.gate.weight", "model.layers.3.mlp.gate.weight"}


@pytest.fixture(scope="module")
def train_samples():
    return load_samples(["tiny_parity"], split="train", include_path=[FIXTURE_TASKS])


def fresh_model(tokenizer):
    return build_tiny_model("olmoe", tokenizer, seed=11)


@pytest.fixture(scope="module")
def oracle_dir(tokenizer, tmp_path_factory):
    """`roma-eval oracle --split train --save_routing` on the training task, layers last:2."""
    out = tmp_path_factory.mktemp("oracle")
    tasks = load_oracle_tasks(["tiny_parity"], [FIXTURE_TASKS], split="train")
    run_oracle(fresh_model(tokenizer), tokenizer, tasks, out,
               OracleConfig(layers="last:2", max_steps=4, lr=0.5, save_routing=True), model_name="tiny",
               progress=False)
    return out


def stored_oracle_routing(oracle_dir) -> dict[int, torch.Tensor]:
    """doc_id -> r_i*, read straight from the oracle's progress file (no roma-eval reader)."""
    lines = next(oracle_dir.rglob("oracle_progress/tiny_parity.jsonl")).read_text().splitlines()
    return {item["doc_id"]: torch.tensor(item["routing"]["oracle"]).flatten() for item in map(json.loads, lines)}


def routing_of(model, tokenizer, samples):
    batch = build_choice_batch(tokenizer, samples, 512)
    with torch.no_grad():
        r = probe_routing(model, batch.input_ids, batch.attention_mask, layers=[2, 3],
                          positions=token_positions("last:1", batch.last_context))
    return batch.per_sample(r).flatten(1)


@pytest.mark.slow  # the oracle run on the training task (~10 s)
def test_oracle_tuning_pulls_each_sample_to_its_own_oracle_routing(tokenizer, train_samples, oracle_dir, tmp_path):
    targets = stored_oracle_routing(oracle_dir)
    assert len(targets) == len(train_samples)
    model = fresh_model(tokenizer)
    base_r = routing_of(model, tokenizer, train_samples)
    result = train_oracle_tuning(model, tokenizer, train_samples, tmp_path / "ot",
                                 OracleTuningConfig(oracle_routing=str(oracle_dir), **PULL),
                                 base_model="tiny", progress=False)
    # Step 0 runs at the base routers: its routing term is the batch mean of ||r_i - r_i*||², by hand.
    import random

    order = list(range(len(train_samples)))
    random.Random(0).shuffle(order)
    first = order[:8]
    by_hand = torch.stack([((base_r[i] - targets[train_samples[i].doc_id]) ** 2).sum() for i in first]).mean()
    assert result.log[0]["regulariser"] == pytest.approx(by_hand.item(), rel=1e-4)
    # and the routing term is what brings the routing closer to the oracle's: λ = 0 (the task loss alone) does not
    target = torch.stack([targets[s.doc_id] for s in train_samples])
    task_only = fresh_model(tokenizer)
    train_oracle_tuning(task_only, tokenizer, train_samples, tmp_path / "lam0",
                        OracleTuningConfig(oracle_routing=str(oracle_dir), **{**PULL, "lam": 0.0}), base_model="tiny",
                        progress=False)
    distance = {name: ((routing_of(m, tokenizer, train_samples) - target) ** 2).sum(1).mean().item()
                for name, m in (("base", fresh_model(tokenizer)), ("oracle_tuning", model), ("task_only", task_only))}
    assert distance["oracle_tuning"] < distance["base"] and distance["oracle_tuning"] < distance["task_only"], distance
    checkpoint = load_router_checkpoint(tmp_path / "ot")
    config = checkpoint.metadata["training_config"]
    assert config["method"] == "oracle_tuning" and config["oracle_routing"] == str(oracle_dir)
    assert config["summary"]["samples_with_oracle_routing"] == len(train_samples)
    assert checkpoint.layers == [2, 3]


@pytest.mark.slow
def test_oracle_tuning_refuses_mismatched_oracle_runs(tokenizer, train_samples, oracle_dir, tmp_path):
    with pytest.raises(RomaEvalError, match="steered layers"):
        train_oracle_tuning(fresh_model(tokenizer), tokenizer, train_samples, tmp_path / "a",
                            OracleTuningConfig(oracle_routing=str(oracle_dir), **{**BUDGET, "layers": "last:3"}),
                            base_model="tiny", progress=False)
    with pytest.raises(RomaEvalError, match="another base model"):
        train_oracle_tuning(build_tiny_model("olmoe", tokenizer, seed=12), tokenizer, train_samples, tmp_path / "b",
                            OracleTuningConfig(oracle_routing=str(oracle_dir), **BUDGET), base_model="tiny",
                            progress=False)
    with pytest.raises(RomaEvalError, match="--oracle_routing"):
        OracleTuningConfig()
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_dense_bp_is_router_tuning_plus_the_dense_gradient(tokenizer, train_samples, tmp_path, monkeypatch):
    base = fresh_model(tokenizer).state_dict()
    dense = fresh_model(tokenizer)
    train_dense_bp(dense, tokenizer, train_samples, tmp_path / "dense", DenseBPConfig(**BUDGET), base_model="tiny",
                   progress=False)
    for name, value in dense.state_dict().items():
        assert torch.equal(value, base[name]) == (name not in TUNED), name
    assert load_router_checkpoint(tmp_path / "dense").metadata["training_config"]["method"] == "dense_bp"

    router_tuning = fresh_model(tokenizer)
    train_roma(router_tuning, tokenizer, train_samples, tmp_path / "rt",
               RomaConfig(**BUDGET, regulariser="none", k=2), base_model="tiny", progress=False)
    weight = "model.layers.3.mlp.gate.weight"
    assert not torch.allclose(dense.state_dict()[weight], router_tuning.state_dict()[weight], atol=1e-6)
    # Without the dense term the very same loop is Router Tuning, to the last bit.
    monkeypatch.setattr(dense_train, "dense_router_gradient", lambda *args, **kwargs: nullcontext(SimpleNamespace()))
    sparse = fresh_model(tokenizer)
    train_dense_bp(sparse, tokenizer, train_samples, tmp_path / "sparse", DenseBPConfig(**BUDGET), base_model="tiny",
                   progress=False)
    assert torch.equal(sparse.state_dict()[weight], router_tuning.state_dict()[weight])

"""RoMA training: the loss against brute force, real gradients, routers-only updates, bad inputs (resuming, and
what every router-training method shares: tests/methods/test_router_training_contract.py)."""

import numpy as np
import pytest
import torch
from lm_eval_helpers import FIXTURE_TASKS

from roma_eval.checkpoint import load_router_checkpoint
from roma_eval.errors import RomaEvalError
from roma_eval.methods.roma import recipe
from roma_eval.methods.roma import train as roma
from roma_eval.methods.roma.config import RomaConfig
from roma_eval.methods.roma.train import manifold_loss, train_roma
from roma_eval.routing import probe_routing, routers, token_positions
from roma_eval.samples import load_samples
from roma_eval.tiny import build_tiny_model

# The schedule these tests' tolerances were set with (LR and λ warm up over 10% of the steps, then the LR decays
# linearly); test_schedules.py trains with the defaults (the released trainer's).
FAST = dict(layers="last:2", epochs=2, batch_size=8, lr=5e-2, k=2, lr_schedule="linear", warmup_ratio=0.1,
            lam_warmup_ratio=0.1)


@pytest.fixture(scope="module")
def train_samples():
    return load_samples(["tiny_parity"], split="train", include_path=[FIXTURE_TASKS])


@pytest.fixture(scope="module")
def embedder():
    from roma_eval.embedding import load_embedder

    return load_embedder()


def fresh_model(tokenizer):
    return build_tiny_model("olmoe", tokenizer, seed=11)


def run(tokenizer, samples, out, embedder, **overrides):
    model = fresh_model(tokenizer)
    result = train_roma(model, tokenizer, samples, out, RomaConfig(**{**FAST, **overrides}), base_model="tiny",
                        embedder=embedder, progress=False)
    return model, result


def test_manifold_loss_is_eq_7_by_brute_force():
    rng = np.random.default_rng(0)
    r, neighbour_r, w = rng.random((5, 12)), rng.random((5, 3, 12)), rng.random((5, 3))
    expected = np.mean([sum(w[i, j] * np.sum((r[i] - neighbour_r[i, j]) ** 2) for j in range(3)) for i in range(5)])
    got = manifold_loss(torch.tensor(r), torch.tensor(neighbour_r), torch.tensor(w))
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_manifold_term_has_a_gradient_wrt_router_weights(tiny_models, padded_batch):
    """The released trainer read r_i from a file: its manifold term had no gradient.  Ours does."""
    model = tiny_models["olmoe"]
    batch = padded_batch[0]["right"]
    r = probe_routing(model, batch["input_ids"], batch["attention_mask"], layers="last:2").flatten(1)
    targets = torch.rand(2, 3, r.shape[1])
    manifold_loss(r, targets, torch.full((2, 3), 1 / 3)).backward()
    grads = [routers(model)[i].weight.grad for i in (2, 3)]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_token_positions():
    last = torch.tensor([5, 2])
    assert token_positions("last:1", last).tolist() == [[5], [2]]
    assert token_positions("last:3", last).tolist() == [[3, 4, 5], [0, 1, 2]]
    assert token_positions("first:2", last).tolist() == [[0, 1], [0, 1]]
    assert token_positions("middle:1", last).tolist() == [[2], [1]]
    with pytest.raises(RomaEvalError, match="tokens="):
        token_positions("final:1", last)


def test_training_changes_only_the_tuned_routers_and_lambda_matters(tokenizer, train_samples, embedder, tmp_path):
    base = fresh_model(tokenizer).state_dict()
    with_manifold, result = run(tokenizer, train_samples, tmp_path / "roma", embedder)
    plain, _ = run(tokenizer, train_samples, tmp_path / "plain", embedder, regulariser="none")
    tuned_keys = {"model.layers.2.mlp.gate.weight", "model.layers.3.mlp.gate.weight"}
    for name, value in with_manifold.state_dict().items():
        assert torch.equal(value, base[name]) == (name not in tuned_keys), name
    assert not torch.equal(with_manifold.state_dict()["model.layers.3.mlp.gate.weight"],
                           plain.state_dict()["model.layers.3.mlp.gate.weight"])
    checkpoint = load_router_checkpoint(tmp_path / "roma")
    assert checkpoint.layers == [2, 3]
    assert torch.equal(checkpoint.tensors[3], with_manifold.state_dict()["model.layers.3.mlp.gate.weight"])
    summary = checkpoint.metadata["training_config"]["summary"]
    assert 0 < summary["success_set_size"] < 32 and summary["routing_dims"] == 2 * 8
    assert len(result.log) == 2 * 4 and all(entry["regulariser"] > 0 for entry in result.log)
    assert (tmp_path / "roma" / "training_log.jsonl").read_text().count("\n") == 8


def test_cached_prefix_training_equals_full_forward_training(tokenizer, train_samples, embedder, tmp_path):
    """The frozen-layer cache is an optimisation only: the same run through the full model (--no_layer_cache) gives
    the same routers."""
    cached, _ = run(tokenizer, train_samples, tmp_path / "cached", embedder, epochs=1)
    full, _ = run(tokenizer, train_samples, tmp_path / "full", embedder, epochs=1, no_layer_cache=True)
    torch.testing.assert_close(cached.state_dict()["model.layers.3.mlp.gate.weight"],
                               full.state_dict()["model.layers.3.mlp.gate.weight"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("overrides, match", [
    (dict(lr=1e30), r"router update of step 1 made \d+ router values NaN or inf; lower --lr"),  # before the loss
    (dict(k=1000), "k=1000 neighbours requested"),
])
def test_bad_training_inputs_are_one_clear_error(tokenizer, train_samples, embedder, tmp_path, overrides, match):
    with pytest.raises(RomaEvalError, match=match):
        run(tokenizer, train_samples, tmp_path / "bad", embedder, **overrides)
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_bf16_routers_move_as_far_as_fp32(tokenizer, train_samples, embedder, tmp_path):
    """Each AdamW step here (lr 5e-4) is below half a bf16 step at these routers' scale (|w| ~ 0.4), but 80
    steps add up to ~10 bf16 steps: updated in place in bf16 the routers barely move; with fp32 master copies a
    bf16 run moves them as far as an fp32 run (within 10%).  (At the released trainer's lr 7e-5 the same holds for real
    routers, whose weights are ~25x smaller.)"""
    moved = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = fresh_model(tokenizer).to(dtype)
        before = {i: g.weight.detach().float().clone() for i, g in routers(model).items()}
        train_roma(model, tokenizer, train_samples, tmp_path / str(dtype), RomaConfig(**{**FAST, "lr": 5e-4,
                                                                                         "epochs": 20}),
                   base_model="tiny", embedder=embedder, progress=False)
        moved[dtype] = sum((g.weight.float() - before[i]).norm() for i, g in routers(model).items() if i in (2, 3))
        assert load_router_checkpoint(tmp_path / str(dtype)).tensors[3].dtype == dtype  # saved in the model's dtype
    assert moved[torch.bfloat16] == pytest.approx(moved[torch.float32].item(), rel=0.1)


@pytest.mark.parametrize("flag, value", [
    ("--layers", "last:99"), ("--lam", "-1"), ("--sigma", "0"), ("--k", "0"), ("--lr", "0"), ("--epochs", "0"),
    ("--neighbours", "eps"), ("--warmup-ratio", "2"), ("--warmup-steps", "-1"), ("--lam-warmup-ratio", "2"),
])
def test_bad_training_flags_are_one_line_and_exit_2(tmp_path, flag, value, tokenizer):
    import contextlib
    import io

    from roma_eval.cli import main
    from roma_eval.tiny import save_tiny_model

    model_dir = save_tiny_model("olmoe", tmp_path / "model", seed=11, tokenizer=tokenizer)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["train", "--pretrained", str(model_dir), "--tasks", "tiny_parity", "--include_path",
                     str(FIXTURE_TASKS),
                     "--output_path", str(tmp_path / "out"), flag, value])
    assert code == 2
    errors = [line for line in err.getvalue().splitlines() if line.strip() and "Loading weights" not in line]
    assert len(errors) == 1 and errors[0].startswith("roma-eval train: error: ")
    assert flag.lstrip("-").split("-")[0] in errors[0]
    assert not (tmp_path / "out").exists()


def test_empty_success_set_is_one_clear_error(tokenizer, train_samples, embedder, tmp_path):
    from dataclasses import replace

    from roma_eval.routing import resolve_layers

    config = RomaConfig(**FAST)
    model = fresh_model(tokenizer)
    base = recipe.base_pass(model, tokenizer, train_samples, config, resolve_layers(model, config.layers), 8,
                          progress=False)
    # Every gold label moved off the base model's answer: it answers none of them correctly.
    wrong = [replace(s, gold=(s.gold + 1) % len(s.choices)) if ok else s for s, ok in zip(train_samples, base.correct)]
    with pytest.raises(RomaEvalError, match="success set is empty"):
        run(tokenizer, wrong, tmp_path / "empty", embedder)
    assert not (tmp_path / "empty").exists()


def test_dense_model_is_one_clear_error(tokenizer, train_samples, embedder, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    dense = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2))
    with pytest.raises(RomaEvalError, match="no recognised MoE routers"):
        train_roma(dense, tokenizer, train_samples, tmp_path / "dense", RomaConfig(**FAST), base_model="dense",
                   embedder=embedder, progress=False)
    assert not (tmp_path / "dense").exists()


def test_existing_output_is_kept(tokenizer, train_samples, embedder, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(RomaEvalError, match="already exists"):
        run(tokenizer, train_samples, tmp_path / "out", embedder)
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


# FSDP2 (`accelerate launch` with an FSDP configuration sets ACCELERATE_USE_FSDP): each process holds half of every
# frozen weight.  13 samples in batches of 3: the base pass is 3 batches on one process and 2 on the other, and the
# last training batch is one sample, so one process runs idle forwards (training.sharding) in both.
FSDP = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}
UNEVEN = ["--batch-size", "3", "--limit", "13"]


@pytest.mark.slow
@pytest.mark.parametrize("verb, extra, extra_env", [
    ("train", ["--k", "2"], {}), ("train", ["--k", "2", "--group_by_length"], {}),
    ("train", ["--k", "2", *UNEVEN], FSDP), ("train", ["--k", "2", *UNEVEN, "--no_layer_cache"], FSDP),
    # Dense BP's default outputs average the whole batch's tokens across processes: its idle steps must take part.
    ("dense-bp", UNEVEN, {}), ("dense-bp", UNEVEN, FSDP),
], ids=["data-parallel", "group-by-length", "fsdp", "fsdp-no-layer-cache", "dense-bp", "dense-bp-fsdp"])
def test_two_processes_give_the_one_process_checkpoint(tokenizer, tmp_path, verb, extra, extra_env):
    """Two CPU processes (torchrun, gloo; `accelerate launch --cpu --num_processes 2` would start one) share the base
    pass and every batch, and write the one-process checkpoint within float tolerance; with FSDP too, whose shards
    the checkpoint's summary records."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from roma_eval.tiny import save_tiny_model

    model_dir = save_tiny_model("olmoe", tmp_path / "model", seed=11, tokenizer=tokenizer)
    args = ["-m", "roma_eval.cli", verb, "--pretrained", str(model_dir), "--tasks", "tiny_parity", "--include_path",
            str(FIXTURE_TASKS), "--layers", "last:2", "--lr", "0.05", "--epochs", "2", "--batch-size", "7", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ROMA_EVAL_EMBEDDING_CACHE": "off", "PYTHONPATH": os.pathsep.join(
        p for p in (str(Path(roma.__file__).resolve().parents[3]), os.environ.get("PYTHONPATH")) if p)}
    torchrun = str(Path(sys.executable).parent / "torchrun")
    one = subprocess.run([sys.executable, *args, "--output_path", str(tmp_path / "one")], capture_output=True,
                         text=True, env=env)
    two = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", *args, "--output_path",
                          str(tmp_path / "two")], capture_output=True, text=True, env={**env, **extra_env}, timeout=600)
    assert one.returncode == 0 and two.returncode == 0, (one.stderr[-2000:], two.stderr[-2000:])
    a, b = load_router_checkpoint(tmp_path / "one"), load_router_checkpoint(tmp_path / "two")
    for layer in (2, 3):
        torch.testing.assert_close(a.tensors[layer], b.tensors[layer], rtol=0, atol=1e-4)
    assert not torch.equal(a.tensors[3], fresh_model(tokenizer).state_dict()["model.layers.3.mlp.gate.weight"])
    assert two.stdout.count("router checkpoint:") == 1  # one process reports (and writes)
    assert b.metadata["training_config"]["summary"].get("sharded_across") == (2 if extra_env else None)
    log_a, log_b = ((tmp_path / d / "training_log.jsonl").read_text().splitlines() for d in ("one", "two"))
    assert len(log_a) == len(log_b) and json_losses(log_a) == pytest.approx(json_losses(log_b), abs=1e-5)


def json_losses(lines):
    import json

    return [json.loads(line)["loss"] for line in lines]


@pytest.mark.slow
def test_base_pass_on_lm_eval_winogrande_and_arc(real_tasks, tokenizer):
    """lm-eval's real YAMLs: a multiple-input sample's r_i is the mean over its choices of the routing at each
    choice's last context token; an ordinary sample's is its context's; correctness is lm-eval's acc."""
    from roma_eval.scoring import build_choice_batch, score_samples

    model = fresh_model(tokenizer)
    samples = load_samples(["winogrande", "arc_challenge"], split="train", limit=4)
    config = RomaConfig(**FAST)
    base = recipe.base_pass(model, tokenizer, samples, config, [2, 3], batch_size=8, progress=False)
    assert base.correct.tolist() == [bool(r.acc) for r in score_samples(model, tokenizer, samples)]
    for i, sample in enumerate(samples):
        batch = build_choice_batch(tokenizer, [sample], max_length=512)
        per_choice = probe_routing(model, batch.input_ids, batch.attention_mask, layers=[2, 3],
                                   positions=batch.last_context)
        expected = per_choice.mean(0) if sample.multiple_input else per_choice[0]
        torch.testing.assert_close(base.routing[i], expected.flatten(), rtol=0, atol=1e-6)
    assert any(s.multiple_input for s in samples) and not all(s.multiple_input for s in samples)


@pytest.mark.slow
def test_train_cli_on_lm_eval_real_tasks(real_tasks, tokenizer, tmp_path):
    """`roma-eval train` on lm-eval's own arc_easy and winogrande (train split) writes a router checkpoint."""
    from roma_eval.cli import main
    from roma_eval.tiny import save_tiny_model

    model_dir = save_tiny_model("olmoe", tmp_path / "model", seed=11, tokenizer=tokenizer)
    code = main(["train", "--pretrained", str(model_dir), "--tasks", "arc_easy,winogrande", "--limit", "8",
                 "--layers", "last:2", "--epochs", "1", "--batch-size", "8", "--k", "1", "--output_path",
                 str(tmp_path / "out")])
    assert code == 0
    checkpoint = load_router_checkpoint(tmp_path / "out")
    assert checkpoint.metadata["training_config"]["summary"]["training_samples"] == 16 and checkpoint.layers == [2, 3]

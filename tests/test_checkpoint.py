import json

import pytest
import torch
from family_helpers import build_family_model, family_params

from roma_eval.checkpoint import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    RouterRecord,
    apply_router_checkpoint,
    load_router_checkpoint,
    save_router_checkpoint,
)
from roma_eval.errors import RomaEvalError
from roma_eval.routing import resolve_layers, router_fingerprint, router_parameter_names, router_weights, routers
from roma_eval.tiny import build_tiny_model


def tune(model, layers, seed=7):
    """Stand-in for training: perturb the routers of ``layers``."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for weight in router_weights(model, layers).values():
            weight.add_(torch.randn_like(weight))


@pytest.mark.parametrize("arch", family_params())
def test_every_family_round_trips(arch, tmp_path, tokenizer):
    """save -> load -> apply onto a fresh base model reproduces the tuned model exactly, changes only the routers
    of the tuned (MoE) layers, and stores them under the model's own parameter names."""
    base = build_family_model(arch, tokenizer, seed=3)
    tuned = build_family_model(arch, tokenizer, seed=3)
    layers = resolve_layers(tuned, "last:2")
    tune(tuned, layers)
    record = RouterRecord(f"tiny-{arch}", router_fingerprint(base))
    path = save_router_checkpoint(tuned, tmp_path / "ckpt", layers, record)
    checkpoint = load_router_checkpoint(path)
    assert checkpoint.layers == layers
    before = {k: v.clone() for k, v in base.state_dict().items()}
    apply_router_checkpoint(base, checkpoint)
    after = base.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == set(router_parameter_names(base, layers).values())
    assert all(torch.equal(after[k], v) for k, v in tuned.state_dict().items())
    fresh = build_family_model(arch, tokenizer, seed=3)
    assert router_fingerprint(base) == router_fingerprint(tuned) != router_fingerprint(fresh)


@pytest.fixture
def saved(tmp_path, tokenizer):
    base = build_tiny_model("olmoe", tokenizer, seed=3)
    fingerprint = router_fingerprint(base)
    tuned = build_tiny_model("olmoe", tokenizer, seed=3)
    tune(tuned, [2, 3])
    record = RouterRecord("tiny-olmoe", fingerprint, method="roma", training_config={"lambda": 0.8})
    path = save_router_checkpoint(tuned, tmp_path / "ckpt", [2, 3], record)
    return path, base, tuned


def test_save_then_load_is_bit_exact(saved):
    path, base, tuned = saved
    checkpoint = load_router_checkpoint(path)
    assert checkpoint.layers == [2, 3]
    for i in (2, 3):
        assert torch.equal(checkpoint.tensors[i], routers(tuned)[i].weight)
    meta = json.loads((path / CONFIG_NAME).read_text())
    assert meta["model_type"] == "olmoe" and meta["base_model"] == "tiny-olmoe" and meta["method"] == "roma"
    assert meta["training_config"] == {"lambda": 0.8} and meta["base_router_fingerprint"] == router_fingerprint(base)


def test_apply_changes_only_the_tuned_routers(saved):
    path, base, tuned = saved
    before = {k: v.clone() for k, v in base.state_dict().items()}
    apply_router_checkpoint(base, load_router_checkpoint(path))
    after = base.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"model.layers.2.mlp.gate.weight", "model.layers.3.mlp.gate.weight"}
    assert all(torch.equal(after[k], tuned.state_dict()[k]) for k in after)


def test_fingerprint_is_dtype_robust(saved, tokenizer):
    _, base, _ = saved
    assert router_fingerprint(base.to(torch.bfloat16)) == router_fingerprint(base.to(torch.float32))


def test_other_base_model_is_rejected_unless_forced(saved, tokenizer):
    path, _, tuned = saved
    other = build_tiny_model("olmoe", tokenizer, seed=4)
    with pytest.raises(RomaEvalError, match="tuned on tiny-olmoe.*force_router_checkpoint=True"):
        apply_router_checkpoint(other, load_router_checkpoint(path))
    apply_router_checkpoint(other, load_router_checkpoint(path), force=True)
    assert torch.equal(routers(other)[3].weight, routers(tuned)[3].weight)


@pytest.mark.parametrize("arch, overrides, match", [
    ("qwen3_moe", {}, "made for a 'olmoe' model"),
    ("olmoe", {"num_experts": 4}, "has shape"),
    ("olmoe", {"num_hidden_layers": 2}, "not a MoE layer"),
])
def test_shape_or_architecture_mismatch_is_rejected_even_when_forced(saved, tokenizer, arch, overrides, match):
    path, _, _ = saved
    other = build_tiny_model(arch, tokenizer, **overrides)
    with pytest.raises(RomaEvalError, match=match):
        apply_router_checkpoint(other, load_router_checkpoint(path), force=True)


def test_truncated_safetensors_is_one_clear_error(saved):
    path, _, _ = saved
    data = (path / WEIGHTS_NAME).read_bytes()
    (path / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(RomaEvalError, match="truncated"):
        load_router_checkpoint(path)


def test_directory_without_metadata_is_one_clear_error(saved):
    path, _, _ = saved
    (path / CONFIG_NAME).unlink()
    with pytest.raises(RomaEvalError, match=f"has no {CONFIG_NAME}"):
        load_router_checkpoint(path)


def test_existing_output_is_not_overwritten(saved):
    path, base, _ = saved
    original = (path / WEIGHTS_NAME).read_bytes()
    with pytest.raises(RomaEvalError, match="already exists.*--overwrite"):
        save_router_checkpoint(base, path, [3], RouterRecord("x", "x"))
    assert (path / WEIGHTS_NAME).read_bytes() == original
    save_router_checkpoint(base, path, [3], RouterRecord("x", "x"), overwrite=True)
    assert load_router_checkpoint(path).layers == [3]


def test_unreachable_hub_repo_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RomaEvalError, match="could not be fetched from the hub"):
        load_router_checkpoint("nobody/no-such-router-checkpoint")


def test_hub_repo_id_resolves_through_the_hub_cache(saved, tmp_path, monkeypatch):
    """A repo id goes through huggingface_hub (here from a pre-populated cache, offline)."""
    import huggingface_hub.constants

    path, _, tuned = saved
    commit = "0" * 40
    repo = tmp_path / "hub" / "models--someone--tiny-router"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in (WEIGHTS_NAME, CONFIG_NAME):
        (snapshot / name).write_bytes((path / name).read_bytes())
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    checkpoint = load_router_checkpoint("someone/tiny-router")
    assert torch.equal(checkpoint.tensors[3], routers(tuned)[3].weight)


@pytest.mark.parametrize("name, layer", [
    ("model.layers.3.mlp.gate.weight", 3), ("model.layers.12.feed_forward.router.weight", 12),
    ("transformer.blocks.2.ffn.router.layer.weight", 2), ("lm_head.weight", None), ("model.norm.weight", None),
])
def test_layer_of_parameter_reads_every_family_layout(name, layer):
    from roma_eval.routing import layer_of_parameter

    assert layer_of_parameter(name) == layer

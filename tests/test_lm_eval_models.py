"""The lm-eval model `roma` against lm-eval's own `hf`, per sample, through the API and the plain CLI."""

import subprocess
import sys

import pytest
import torch
from lm_eval_helpers import evaluate_api, evaluate_cli

from roma_eval.checkpoint import RouterRecord, save_router_checkpoint
from roma_eval.routing import resolve_layers, router_fingerprint, router_weights, routers
from roma_eval.tiny import save_tiny_model

TASKS = ["tiny_animals", "tiny_sums"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tokenizer):
    """A base model dir, a router checkpoint for it, and the same model with those routers saved in full."""
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("roma_lm")
    base_dir = save_tiny_model("olmoe", root / "base", seed=5, tokenizer=tokenizer)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    fingerprint = router_fingerprint(model)
    torch.manual_seed(0)
    with torch.no_grad():
        for i in (2, 3):
            routers(model)[i].weight.mul_(-2.0)
    ckpt = save_router_checkpoint(model, root / "ckpt", [2, 3], RouterRecord(str(base_dir), fingerprint))
    full_dir = root / "tuned_full"
    model.save_pretrained(full_dir)
    tokenizer.save_pretrained(full_dir)
    return base_dir, ckpt, full_dir, root


@pytest.fixture(scope="module")
def hf_base(setup):
    return evaluate_api("hf", f"pretrained={setup[0]}", TASKS)


def test_roma_without_checkpoint_equals_hf(setup, hf_base):
    assert evaluate_api("roma", f"pretrained={setup[0]}", TASKS) == hf_base


@pytest.mark.slow
def test_plain_lm_eval_cli_roma_with_checkpoint(setup, hf_base):
    """`lm_eval --model roma ... router_checkpoint=` equals `hf` on the model whose routers were
    replaced and saved in full: the only difference from base is the routers."""
    base_dir, ckpt, full_dir, root = setup
    via_cli = evaluate_cli("roma", f"pretrained={base_dir},router_checkpoint={ckpt}", TASKS, root / "out")
    assert via_cli == evaluate_api("hf", f"pretrained={full_dir}", TASKS)
    assert via_cli["tiny_animals"] != hf_base["tiny_animals"]


def test_entry_point_is_declared():
    from importlib.metadata import entry_points

    names = {ep.name: ep.value for ep in entry_points(group="lm_eval.models")}
    assert names.get("roma") == "roma_eval.methods.roma.lm_eval:RomaLM"
    assert names.get("c3po") == "roma_eval.methods.c3po.lm_eval:C3POLM"


@pytest.mark.slow
def test_bad_checkpoint_under_plain_cli_is_one_line(setup, tmp_path):
    base_dir, ckpt, _, _ = setup
    other = save_tiny_model("olmoe", tmp_path / "other", seed=99)
    proc = subprocess.run([sys.executable, "-c", (
        "from lm_eval.api.registry import get_model;"
        f"get_model('roma')(pretrained='{other}', router_checkpoint='{ckpt}', device='cpu')")],
        capture_output=True, text=True)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("error: router checkpoint was tuned on")
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["gpt_oss", "qwen3_next"])
def test_plain_lm_eval_cli_roma_with_checkpoint_on_more_families(arch, tmp_path, tokenizer):
    """gpt-oss (a router bias, top-k on logits, sliding windows) and Qwen3-Next (linear attention, a dense
    layer, a shared expert): `lm_eval --model roma` with a router checkpoint equals `--model hf` on the model
    with those routers saved in full, per sample; and the tuned routers change the answers."""
    from transformers import AutoModelForCausalLM

    base_dir = save_tiny_model(arch, tmp_path / "base", seed=5, tokenizer=tokenizer)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    fingerprint = router_fingerprint(model)
    layers = resolve_layers(model, "last:2")
    with torch.no_grad():
        for weight in router_weights(model, layers).values():
            weight.mul_(-2.0)
    ckpt = save_router_checkpoint(model, tmp_path / "ckpt", layers, RouterRecord(str(base_dir), fingerprint))
    full_dir = tmp_path / "tuned_full"
    model.save_pretrained(full_dir)
    tokenizer.save_pretrained(full_dir)
    via_cli = evaluate_cli("roma", f"pretrained={base_dir},router_checkpoint={ckpt}", TASKS, tmp_path / "out")
    assert via_cli == evaluate_api("hf", f"pretrained={full_dir}", TASKS)
    assert via_cli != evaluate_api("hf", f"pretrained={base_dir}", TASKS)

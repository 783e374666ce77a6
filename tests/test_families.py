"""The family registry against the installed transformers, DeepSeekMoE as remote code, and how the methods
meet families that cannot keep a key/value prefix cache.

The per-family parity tests (probe, select, steering, partial forwards, prefix caches, checkpoints) are in
tests/routing and tests/test_checkpoint.py, parametrised over every family (the fast test set's always,
the others under the ``slow`` marker)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from family_helpers import build_family_model

from roma_eval.checkpoint import RouterRecord, apply_router_checkpoint, load_router_checkpoint, save_router_checkpoint
from roma_eval.errors import RomaEvalError
from roma_eval.routing import (
    REFUSED,
    as_positions,
    num_experts,
    probe_routing,
    resolve_layers,
    router_fingerprint,
    router_weights,
    routers,
    spec_for,
    steer_routing,
)
from roma_eval.routing.families import SPECS_LIST
from roma_eval.routing.partial import prefix_cache_problem
from roma_eval.tiny import TINY_CONFIGS

ROUTER_CLASS = re.compile(r"^class (\w+(?:Router|Gate|Gating))\(", re.M)


def installed_moe_families() -> dict[str, list[str]]:
    """transformers' models/<family> directories whose modelling file defines a router/gate class and experts."""
    found = {}
    for directory in sorted(p for p in (Path(transformers.__file__).parent / "models").iterdir() if p.is_dir()):
        for modeling in sorted(directory.glob("modeling_*.py")):
            text = modeling.read_text(encoding="utf-8")
            if ROUTER_CLASS.search(text) and "experts" in text:
                found[directory.name] = ROUTER_CLASS.findall(text)
                break
    return found


def test_every_installed_moe_family_is_supported_or_refused():
    installed = installed_moe_families()
    supported = {spec.family_name for spec in SPECS_LIST}
    unknown = sorted(set(installed) - supported - set(REFUSED))
    assert not unknown, (f"transformers {transformers.__version__} has MoE families roma-eval neither supports nor "
                         f"refuses: {unknown}; add an ArchSpec or a REFUSED line in roma_eval/routing/families.py")
    assert not supported & set(REFUSED)
    assert not set(REFUSED) - set(installed), "a REFUSED family is gone from transformers: drop its line"
    assert all(reason and "\n" not in reason for reason in REFUSED.values())


def test_every_supported_family_has_its_router_class_and_a_tiny_model():
    installed = installed_moe_families()
    transformers_specs = [spec for spec in SPECS_LIST if not spec.family_name.startswith("remote:")]
    assert len(SPECS_LIST) >= 20
    for spec in transformers_specs:
        assert spec.router_class in installed[spec.family_name], spec.model_type
        assert spec.model_type in TINY_CONFIGS, f"{spec.model_type} has no tiny model, so no parity test"
        assert spec.definition, f"{spec.model_type}: say what its routing weights are"


class _Fake(torch.nn.Module):
    def __init__(self, **config):
        super().__init__()
        self.config = type("Config", (), config)()


@pytest.mark.parametrize("model_type, reason", [
    ("jetmoe", REFUSED["jetmoe"]), ("qwen3_vl_moe_text", REFUSED["qwen3_vl_moe"]), ("nllb_moe", REFUSED["nllb_moe"]),
])
def test_a_refused_family_is_one_line_naming_it(model_type, reason):
    with pytest.raises(RomaEvalError) as error:
        routers(_Fake(model_type=model_type))
    assert str(error.value) == f"model_type {model_type!r} is not supported by roma-eval: {reason}"


@pytest.mark.parametrize("config, match", [
    (dict(model_type="hunyuan_v1_moe", num_experts=[8, 8, 16, 16]), "different expert count per layer"),
    (dict(model_type="deepseek", scoring_func="sigmoid"), "scoring_func 'sigmoid' is not supported"),
    (dict(model_type="phimoe", num_experts_per_tok=4), "exactly 2 experts"),
    (dict(model_type="cohere2_moe", expert_selection_fn="sigmoid"), "softmax variant only"),
    (dict(model_type="deepseek_v2", topk_method="noaux_tc"), "topk_method 'noaux_tc'"),
])
def test_an_unsupported_configuration_of_a_supported_family_is_one_line(config, match):
    with pytest.raises(RomaEvalError, match=match) as error:
        routers(_Fake(**config))
    assert "\n" not in str(error.value)


# ---------------------------------------------------------------- DeepSeekMoE (remote code)


@pytest.fixture(scope="module")
def deepseek_dir(tmp_path_factory, tokenizer):
    """A tiny DeepSeekMoE saved as a hub repo would be: config.json with auto_map, our modelling files, weights."""
    model = build_family_model("deepseek", tokenizer, seed=2)
    directory = tmp_path_factory.mktemp("deepseek_moe")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def deepseek(deepseek_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(deepseek_dir, trust_remote_code=True).eval()


def test_deepseek_moe_loads_as_remote_code(deepseek, deepseek_dir):
    assert type(deepseek).__module__.startswith("transformers_modules.")  # our fixture's code, not transformers'
    assert spec_for(deepseek).model_type == "deepseek" and type(routers(deepseek)[1]).__name__ == "MoEGate"
    assert sorted(routers(deepseek)) == list(range(1, 10))  # first_k_dense_replace = 1
    assert resolve_layers(deepseek)[0] == 5  # the tuned last five leave five layers to skip
    assert num_experts(deepseek) == 8 and deepseek.config.num_experts_per_tok == 6


def test_deepseek_moe_layers_follow_first_k_dense_replace_and_moe_layer_freq(tokenizer):
    model = build_family_model("deepseek", tokenizer, num_hidden_layers=6, first_k_dense_replace=1, moe_layer_freq=2)
    assert sorted(routers(model)) == [2, 4]  # layer_idx >= 1 and layer_idx % 2 == 0
    assert resolve_layers(model) == [2, 4] and resolve_layers(model, "last:1") == [4]


def test_deepseek_moe_probe_equals_the_gate_own_scores(deepseek, padded_batch):
    """MoEGate returns no logits: its top-k weights (norm_topk_prob off) are the probed softmax scores of the
    experts it chose, bit for bit, under both paddings."""
    for side, batch in padded_batch[0].items():
        chosen = {}
        handles = [g.register_forward_hook(lambda m, a, out, i=i, into=chosen: into.__setitem__(i, out))
                   for i, g in routers(deepseek).items()]
        with torch.no_grad():
            probed = probe_routing(deepseek, batch["input_ids"], batch["attention_mask"], layers="all")
        for handle in handles:
            handle.remove()
        seq_len = batch["input_ids"].shape[1]
        rows = torch.tensor([b * seq_len + int(t) for b, t in enumerate(batch["attention_mask"].sum(1) - 1)])
        if side == "left":
            rows = torch.tensor([b * seq_len + seq_len - 1 for b in range(2)])
        for slot, layer in enumerate(sorted(chosen)):
            index, weights, aux = chosen[layer]
            assert aux is None
            assert torch.equal(probed[:, slot].gather(1, index[rows]), weights[rows]), (side, layer)
            assert torch.allclose(probed[:, slot].sum(-1), torch.ones(2))


def test_deepseek_moe_steering_is_a_noop_at_zero_and_moves_the_choice(deepseek, padded_batch):
    batch = padded_batch[0]["right"]
    layers = resolve_layers(deepseek, "all")
    positions = as_positions(None, batch["attention_mask"], *batch["input_ids"].shape)
    with torch.no_grad():
        plain = deepseek(**batch).logits
        with steer_routing(deepseek, torch.zeros(2, 1, len(layers), 8), positions, layers=layers):
            assert torch.equal(deepseek(**batch).logits, plain)
        own = probe_routing(deepseek, batch["input_ids"], batch["attention_mask"], layers=layers).unsqueeze(1)
        with steer_routing(deepseek, own, positions, layers=layers, mode="scores"):
            assert torch.equal(deepseek(**batch).logits, plain)
        # the two experts the gate likes least, pushed to the top: top-6 of 8 must now hold them
        least = own[0, 0, -1].argsort()[:2]
        override = torch.zeros(2, 1, len(layers), 8)
        override[..., least] = 50.0
        chosen = {}
        handle = routers(deepseek)[layers[-1]].register_forward_hook(lambda m, a, out: chosen.update(index=out[0]))
        with steer_routing(deepseek, override, positions, layers=layers):
            steered = deepseek(**batch).logits
        handle.remove()
    row = int(positions[0, 0])
    assert set(least.tolist()) <= set(chosen["index"][row].tolist())
    assert (steered - plain).abs().max() > 1e-4


def test_deepseek_moe_router_checkpoint_round_trips(deepseek_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(deepseek_dir, trust_remote_code=True)
    tuned = AutoModelForCausalLM.from_pretrained(deepseek_dir, trust_remote_code=True)
    with torch.no_grad():
        for weight in router_weights(tuned, [2, 3]).values():
            weight.mul_(-2.0)
    path = save_router_checkpoint(tuned, tmp_path / "ckpt", [2, 3],
                                  RouterRecord(str(deepseek_dir), router_fingerprint(base)))
    checkpoint = load_router_checkpoint(path)
    assert sorted(checkpoint.tensors) == [2, 3] and checkpoint.metadata["model_type"] == "deepseek"
    apply_router_checkpoint(base, checkpoint)
    assert all(torch.equal(v, tuned.state_dict()[k]) for k, v in base.state_dict().items())


def test_deepseek_moe_without_trust_remote_code_is_refused_by_transformers(deepseek_dir):
    from transformers import AutoModelForCausalLM

    with pytest.raises(ValueError, match="trust_remote_code=True"):
        AutoModelForCausalLM.from_pretrained(deepseek_dir)


@pytest.mark.slow
def test_load_model_without_trust_remote_code_is_one_line_saying_to_pass_it(deepseek_dir):
    proc = subprocess.run([sys.executable, "-c", (
        "from roma_eval.errors import RomaEvalError\n"
        "from roma_eval.model_loading import load_model\n"
        f"try:\n    load_model({str(deepseek_dir)!r}, device='cpu')\n"
        "except RomaEvalError as e:\n    print(e)\n")], capture_output=True, text=True)
    assert proc.stdout.count("\n") == 1 and "trust_remote_code" in proc.stdout, proc.stdout


# ---------------------------------------------------------------- methods on DeepSeekMoE and on hybrid stacks


@pytest.mark.slow
def test_roma_trains_deepseek_moe_routers_only_with_and_without_the_layer_cache(deepseek_dir, tokenizer, tmp_path):
    """The default last five MoE layers: from the frozen-layer cache (five tuple-returning layers skipped) and
    through every layer, the same routers."""
    from lm_eval_helpers import FIXTURE_TASKS
    from transformers import AutoModelForCausalLM

    from roma_eval.embedding import load_embedder
    from roma_eval.methods.roma.config import RomaConfig
    from roma_eval.methods.roma.train import train_roma
    from roma_eval.samples import load_samples

    samples = load_samples(["tiny_parity"], split="train", include_path=[FIXTURE_TASKS])
    trained = []
    for no_layer_cache in (False, True):
        model = AutoModelForCausalLM.from_pretrained(deepseek_dir, trust_remote_code=True).eval()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        config = RomaConfig(epochs=1, batch_size=8, lr=5e-2, k=2, no_layer_cache=no_layer_cache)
        train_roma(model, tokenizer, samples, tmp_path / f"roma{no_layer_cache}", config,
                   base_model=str(deepseek_dir), embedder=load_embedder(), progress=False)
        changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
        assert changed == {f"model.layers.{i}.mlp.gate.weight" for i in range(5, 10)}
        assert load_router_checkpoint(tmp_path / f"roma{no_layer_cache}").layers == [5, 6, 7, 8, 9]
        trained.append(router_weights(model))
    for layer in range(5, 10):
        torch.testing.assert_close(trained[0][layer], trained[1][layer], rtol=1e-4, atol=1e-5)


def test_c3po_cached_pass_and_its_gradient_equal_the_full_forward_on_deepseek_moe(deepseek, tokenizer):
    from family_helpers import c3po_cached_and_full_scores

    from roma_eval.samples import Sample

    choices = ("mammal", "fish")
    samples = [Sample("t", i, f"Question:{' Think.' * i} What is a {name}?\nAnswer:", "multiple_choice", "",
                      continuations=tuple(f" {c}" for c in choices), choices=choices, gold=0)
               for i, name in enumerate(["whale", "shark", "bat"])]
    _, override, cached, full = c3po_cached_and_full_scores(deepseek, tokenizer, samples, resolve_layers(deepseek))
    torch.testing.assert_close(cached, full, atol=5e-5, rtol=0)
    (g_cached,) = torch.autograd.grad(cached.sum(), override)
    (g_full,) = torch.autograd.grad(full.sum(), override)
    assert g_full.abs().max() > 1e-4  # the routing's gradient reaches ω through the no-grad inference path's mirror
    torch.testing.assert_close(g_cached, g_full, atol=1e-4, rtol=1e-3)


def test_oracle_descends_on_deepseek_moe(deepseek, tokenizer):
    from roma_eval.methods.oracle import OracleConfig, descend
    from roma_eval.samples import Sample
    from roma_eval.scoring import build_choice_batch

    choices = ("mammal", "fish")
    samples = [Sample("t", 0, "Question: What is a whale?\nAnswer:", "multiple_choice", "",
                      continuations=tuple(f" {c}" for c in choices), choices=choices, gold=0)]
    layers = resolve_layers(deepseek)
    outcomes = descend(deepseek, build_choice_batch(tokenizer, samples, 512), OracleConfig(max_steps=2,
                       stable=3), layers)
    assert len(outcomes) == 1 and outcomes[0].steps >= 1
    assert outcomes[0].losses[1] != outcomes[0].losses[0]  # a gradient step moved the routing


# Families that keep more than keys/values between tokens (linear attention, Mamba, convolution, indexer keys):
# routing.partial.prefix_cache_exact is False for them, as for sliding windows longer than the prompt, and both
# methods follow it: the oracle runs uncached, C3PO (which has no uncached path) refuses in one line.
HYBRID = ["gpt_oss", *(pytest.param(a, marks=pytest.mark.slow) for a in ("qwen3_next", "lfm2_moe", "jamba",
                                                                            "deepseek_v32"))]


@pytest.mark.parametrize("arch", HYBRID)
def test_the_oracle_takes_the_uncached_path_where_the_seam_says_so(arch, tokenizer):
    from roma_eval.methods.oracle.descent import prepare_rows
    from roma_eval.routing import token_positions
    from roma_eval.routing.partial import prefix_cache_exact
    from roma_eval.samples import Sample
    from roma_eval.scoring import build_choice_batch

    model = build_family_model(arch, tokenizer, seed=1)
    assert prefix_cache_problem(model) is not None and not prefix_cache_exact(model, 64)
    choices = ("mammal", "fish")
    samples = [Sample("t", i, f"Question:{' Think.' * i} What is a whale?\nAnswer:", "multiple_choice", "",
                      continuations=tuple(f" {c}" for c in choices), choices=choices, gold=0) for i in range(3)]
    batch = build_choice_batch(tokenizer, samples, 512)
    layers = resolve_layers(model, "last:2")
    rows, _ = prepare_rows(model, batch, token_positions("last:1", batch.last_context), layers[0], prefix_cache=True)
    assert rows.prefix is None and rows.input_ids.shape == batch.input_ids.shape


@pytest.mark.parametrize("arch", HYBRID)
def test_c3po_refuses_a_model_without_a_prefix_cache_in_one_line(arch, tokenizer):
    from roma_eval.methods.c3po import freeze
    from roma_eval.methods.c3po.frozen import Problem

    model = build_family_model(arch, tokenizer, seed=1)
    problem = Problem.make([tokenizer.encode("Question: What is a whale?\nAnswer:" * 3)], [tokenizer.encode(" mammal")],
                           512)
    with pytest.raises(RomaEvalError) as error:
        freeze(model, [problem], resolve_layers(model, "last:2"))
    assert "\n" not in str(error.value) and model.config.model_type in str(error.value)


def test_docs_list_every_supported_and_refused_family():
    text = (Path(__file__).parents[1] / "docs" / "families.md").read_text(encoding="utf-8")
    for spec in SPECS_LIST:
        assert f"| `{spec.model_type}`" in text, spec.model_type
    for family, reason in REFUSED.items():
        assert f"| {family} | {reason} |" in text, family

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from roma_eval.errors import RomaEvalError
from roma_eval.routing import last_context_positions, resolve_layers, routers
from roma_eval.tiny import build_tiny_model


def test_dense_model_is_rejected_naming_its_model_type(tokenizer):
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    dense = AutoModelForCausalLM.from_config(config)
    with pytest.raises(RomaEvalError, match=r"model_type 'llama'.*supports olmoe, qwen2_moe, qwen3_moe, mixtral"):
        routers(dense)


def test_all_dense_layers_of_a_moe_family_are_rejected(tokenizer):
    model = build_tiny_model("qwen2_moe", tokenizer, mlp_only_layers=[0, 1, 2, 3])
    with pytest.raises(RomaEvalError, match="no MoE layers"):
        routers(model)


def test_qwen2_shared_expert_gate_is_not_a_router(tiny_models):
    model = tiny_models["qwen2_moe"]
    assert all(type(g).__name__ == "Qwen2MoeTopKRouter" for g in routers(model).values())
    assert all(g.weight.shape[0] == 8 for g in routers(model).values())


def test_deepseek_dense_first_layer_is_skipped(tiny_models):
    assert sorted(routers(tiny_models["deepseek_v3"])) == [1, 2, 3]
    assert resolve_layers(tiny_models["deepseek_v3"], "first:1") == [1]


@pytest.mark.parametrize("spec, expected", [
    ("all", [0, 1, 2, 3]), ("first:2", [0, 1]), ("middle:2", [1, 2]), ("last:2", [2, 3]),
    ("last:4", [0, 1, 2, 3]), ("3,1", [1, 3]), ([-1], [3]),
])
def test_layer_selection(tiny_models, spec, expected):
    assert resolve_layers(tiny_models["olmoe"], spec) == expected


@pytest.mark.parametrize("bad", [[4], [-5], "7", "last:0", "bottom:2", "last:99", "first:5"])
def test_bad_layer_selection_is_one_clear_error(tiny_models, bad):
    with pytest.raises(RomaEvalError, match="layer"):
        resolve_layers(tiny_models["olmoe"], bad)


def test_last_context_position_under_both_paddings():
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert last_context_positions(right).tolist() == [2, 4]
    assert last_context_positions(left).tolist() == [4, 4]


@pytest.mark.xfail(strict=True, raises=RuntimeError,
                   reason="transformers' DBRX attention calls clamp(min=None, max=None) when attn_config.clip_qkv "
                          "is unset, so every DBRX config needs clip_qkv (docs/families.md); drop the note once this "
                          "passes")
def test_dbrx_runs_without_clip_qkv(tokenizer):
    from roma_eval.tiny import TINY_CONFIGS

    attn_config = {**TINY_CONFIGS["dbrx"]["attn_config"], "clip_qkv": None}
    model = build_tiny_model("dbrx", tokenizer, attn_config=attn_config)
    model(input_ids=torch.tensor([[5, 6, 7]]))

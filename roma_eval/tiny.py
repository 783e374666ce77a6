"""Tiny MoE models of every supported architecture, with a tokenizer trained in-process.

Used by the tests (random weights, real transformers classes) and by the toy world (which then
pretrains one).  Nothing here downloads anything: the tokenizer is trained on the text it is given
and the models are built from configs.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]

# Small configs of the real transformers classes, keyed by model_type.  Each exercises what makes its
# family special: Qwen2-MoE's shared expert and its sigmoid shared_expert_gate (not a router), DeepSeek's
# dense first layer, group-limited top-k, routed scaling and (V3) sigmoid scores with a correction bias;
# interleaved dense/MoE and attention/linear-attention/mamba/convolution layers (Qwen3-Next, Jamba,
# Llama 4, LFM2, MiniMax), routers with a bias (gpt-oss), embedding/residual multipliers (Granite),
# sliding-window and chunked attention (gpt-oss, Llama 4).
_COMMON = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False)
_LINEAR_ATTENTION = dict(linear_key_head_dim=8, linear_value_head_dim=8, linear_num_key_heads=2,
                         linear_num_value_heads=4, linear_conv_kernel_dim=2,
                         layer_types=["linear_attention", "full_attention", "linear_attention", "full_attention"])
_V3_TINY = dict(n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1, moe_intermediate_size=32,
                first_k_dense_replace=1, n_group=2, topk_group=1, norm_topk_prob=True, routed_scaling_factor=2.5,
                head_dim=8)
TINY_CONFIGS: dict[str, dict] = {
    "olmoe": dict(num_experts=8, num_experts_per_tok=2, norm_topk_prob=False),
    "qwen2_moe": dict(num_experts=8, num_experts_per_tok=2, norm_topk_prob=False, moe_intermediate_size=32,
                      shared_expert_intermediate_size=32, decoder_sparse_step=1, mlp_only_layers=[]),
    "qwen3_moe": dict(num_experts=8, num_experts_per_tok=2, norm_topk_prob=True, moe_intermediate_size=32,
                      decoder_sparse_step=1, mlp_only_layers=[], head_dim=8),
    "mixtral": dict(num_local_experts=8, num_experts_per_tok=2, head_dim=8),
    "deepseek_v2": dict(n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1, moe_intermediate_size=32,
                        first_k_dense_replace=1, topk_method="group_limited_greedy", n_group=2, topk_group=1,
                        routed_scaling_factor=1.5, kv_lora_rank=16, q_lora_rank=None, qk_rope_head_dim=4,
                        qk_nope_head_dim=4, v_head_dim=8, head_dim=4, num_key_value_heads=4),
    "deepseek_v3": dict(n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1, moe_intermediate_size=32,
                        first_k_dense_replace=1, n_group=2, topk_group=1, norm_topk_prob=True,
                        routed_scaling_factor=2.5, kv_lora_rank=16, q_lora_rank=None, qk_rope_head_dim=4,
                        qk_nope_head_dim=4, v_head_dim=8, num_key_value_heads=4),
    # --- every other family (tests run them under the `slow` marker)
    "gpt_oss": dict(num_local_experts=8, num_experts_per_tok=2, head_dim=8, sliding_window=4),
    "qwen3_next": dict(num_experts=8, num_experts_per_tok=2, norm_topk_prob=True, moe_intermediate_size=32,
                       shared_expert_intermediate_size=32, head_dim=8, decoder_sparse_step=1, mlp_only_layers=[0],
                       **_LINEAR_ATTENTION),
    "qwen3_5_moe_text": dict(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32,
                             shared_expert_intermediate_size=32, head_dim=8, **_LINEAR_ATTENTION),
    "glm4_moe": dict(n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1, moe_intermediate_size=32,
                     first_k_dense_replace=1, n_group=2, topk_group=1, norm_topk_prob=True, routed_scaling_factor=2.5,
                     head_dim=8),
    "deepseek_v32": dict(n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1, moe_intermediate_size=32,
                         first_k_dense_replace=1, n_group=2, topk_group=1, norm_topk_prob=True,
                         routed_scaling_factor=2.5, kv_lora_rank=16, q_lora_rank=16, qk_rope_head_dim=4,
                         qk_nope_head_dim=4, v_head_dim=8, head_dim=4, num_key_value_heads=4, index_topk=4,
                         index_head_dim=8, index_n_heads=2),
    "minimax": dict(num_local_experts=8, num_experts_per_tok=2, head_dim=8, block_size=4,
                    layer_types=["linear_attention", "full_attention", "linear_attention", "full_attention"]),
    "ernie4_5_moe": dict(moe_num_experts=8, moe_k=2, moe_num_shared_experts=1, moe_intermediate_size=32,
                         moe_layer_start_index=1),
    "granitemoe": dict(num_local_experts=8, num_experts_per_tok=2, embedding_multiplier=2.5, residual_multiplier=0.5,
                       logits_scaling=2.0, attention_multiplier=0.3),
    "phimoe": dict(num_local_experts=8, num_experts_per_tok=2),
    "jamba": dict(num_experts=8, num_experts_per_tok=2, expert_layer_period=2, expert_layer_offset=1,
                  attn_layer_period=4, attn_layer_offset=2, mamba_d_state=4, mamba_dt_rank=4, mamba_d_conv=2),
    "llama4_text": dict(num_local_experts=8, num_experts_per_tok=2, interleave_moe_layer_step=2,
                        intermediate_size_mlp=64, head_dim=8, attention_chunk_size=4),
    "dbrx": dict(d_model=32, n_heads=4, n_layers=4, max_seq_len=512,
                 attn_config=dict(kv_n_heads=2, rope_theta=10000.0, clip_qkv=8.0),
                 ffn_config=dict(ffn_hidden_size=64, moe_num_experts=8, moe_top_k=2)),
    "flex_olmo": dict(num_experts=8, num_experts_per_tok=2, norm_topk_prob=False),
    "lfm2_moe": dict(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32, num_dense_layers=1,
                     layer_types=["conv", "full_attention", "conv", "full_attention"], use_expert_bias=True,
                     routed_scaling_factor=1.5),
    "mellum": dict(num_experts=8, num_experts_per_tok=2, norm_topk_prob=True, moe_intermediate_size=32, head_dim=8),
    "hunyuan_v1_moe": dict(num_experts=8, moe_topk=2, head_dim=8, moe_intermediate_size=32),
    "granitemoeshared": dict(num_local_experts=8, num_experts_per_tok=2, shared_intermediate_size=32,
                             embedding_multiplier=2.0),
    "aria_text": dict(moe_num_experts=8, moe_topk=2, moe_intermediate_size=32, head_dim=8),
    "cohere2_moe": dict(num_experts=8, num_experts_per_tok=2, head_dim=8, sliding_window=4),
    "glm4_moe_lite": dict(n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1, moe_intermediate_size=32,
                          first_k_dense_replace=1, n_group=2, topk_group=1, norm_topk_prob=True,
                          routed_scaling_factor=2.5, kv_lora_rank=16, q_lora_rank=16, qk_rope_head_dim=4,
                          qk_nope_head_dim=4, v_head_dim=8, head_dim=4, num_key_value_heads=4),
    "dots1": dict(n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1, moe_intermediate_size=32,
                  first_k_dense_replace=1, n_group=2, topk_group=1, norm_topk_prob=True, routed_scaling_factor=2.5,
                  head_dim=8),
    "solar_open": dict(n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1, moe_intermediate_size=32,
                       n_group=2, topk_group=1, norm_topk_prob=True, routed_scaling_factor=2.5, head_dim=8),
    "exaone_moe": dict(num_experts=8, num_experts_per_tok=2, n_shared_experts=1, moe_intermediate_size=32,
                       first_k_dense_replace=1, n_group=2, topk_group=1, norm_topk_prob=True,
                       routed_scaling_factor=2.5, head_dim=8, sliding_window=4),
    "minimax_m2": dict(num_local_experts=8, num_experts_per_tok=2, head_dim=8),
    "afmoe": dict(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32, head_dim=8, num_dense_layers=1,
                  sliding_window=4),
    "mimo_v2_flash": dict(_V3_TINY),
    "nemotron_h": dict(_V3_TINY, layers_block_type=["mamba", "moe", "attention", "moe"], mamba_num_heads=4,
                       mamba_head_dim=8, ssm_state_size=4, n_groups=1, chunk_size=4),
    "granitemoe_swa": dict(num_local_experts=8, num_experts_per_tok=2, sliding_window=4),
    "flint": dict(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32, head_dim=8),
}
_OWN_LAYOUT = {"dbrx"}  # configs that name their sizes differently: _COMMON does not apply
# The fast test set, run by every parity test without the `slow` marker: one family per routing rule the methods
# must handle -- OLMoE and Qwen3-MoE (the paper's OLMoE and Qwen3), a shared expert (Qwen2-MoE), always-renormalised
# top-k (Mixtral), group-limited top-k with routed scaling (DeepSeek-V2), sigmoid scores with a correction bias
# (DeepSeek-V3).  ALL_ARCHITECTURES: every tiny family.
FAST_ARCHITECTURES = ("olmoe", "qwen2_moe", "qwen3_moe", "mixtral", "deepseek_v2", "deepseek_v3")
ALL_ARCHITECTURES = tuple(TINY_CONFIGS)
DEFAULT_CORPUS = (
    "Question: What is the capital of France?\nAnswer: Paris",
    "The quick brown fox jumps over the lazy dog. 0123456789 +-*/=?!.,;:'\"()[]",
    "Which of these is a mammal? whale, shark, trout, eel. Answer: whale",
)


def train_tokenizer(texts: Iterable[str] = DEFAULT_CORPUS, vocab_size: int = 300):
    """A byte-level BPE tokenizer trained on ``texts`` (every byte is in the alphabet, so nothing is unknown)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")


def tiny_config(arch: str, vocab_size: int, **overrides):
    """The transformers config of a tiny ``arch`` model; ``overrides`` replace any field."""
    from transformers import AutoConfig

    if arch not in TINY_CONFIGS:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {', '.join(ALL_ARCHITECTURES)}")
    common = {} if arch in _OWN_LAYOUT else _COMMON
    fields = {**common, **TINY_CONFIGS[arch], "vocab_size": vocab_size, "pad_token_id": 0,
              "bos_token_id": 1, "eos_token_id": 2, **overrides}
    return AutoConfig.for_model(arch, **fields)


def build_tiny_model(arch: str, tokenizer, seed: int = 0, router_std: float = 0.5, **overrides):
    """A randomly initialised tiny ``arch`` causal LM (float32, eval mode), deterministic for ``seed``.

    Routers are drawn with ``router_std`` (transformers uses 0.02): near-uniform routing makes
    top-k ties and would hide routing bugs in tests.
    """
    import torch
    from transformers import AutoModelForCausalLM

    config = tiny_config(arch, vocab_size=len(tokenizer), **overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    randomise_routers(model, router_std)
    return model.eval()


def randomise_routers(model, router_std: float = 0.5) -> None:
    """Draw every router weight from N(0, router_std), a router bias (gpt-oss) likewise, and the choice-only
    correction biases (DeepSeek-V3, GLM-4.5, Ernie's moe_statics, LFM2's expert_bias) from N(0, 0.05), so that
    tests see them change the expert choice."""
    import torch

    from roma_eval.errors import RomaEvalError
    from roma_eval.routing import router_weights, routers

    try:
        gates = routers(model)
    except RomaEvalError:  # a MoE family configured with dense layers only (a test of that refusal)
        return
    drawn = set()
    with torch.no_grad():
        for layer, gate in gates.items():  # this draw order defines each seed's test model
            router_weights(model, [layer])[layer].normal_(0.0, router_std)
            if isinstance(getattr(gate, "bias", None), torch.nn.Parameter):
                gate.bias.normal_(0.0, router_std)
            if hasattr(gate, "e_score_correction_bias"):
                gate.e_score_correction_bias.normal_(0.0, 0.05)
                drawn.add(id(gate.e_score_correction_bias))
        for name, tensor in [*model.named_buffers(), *model.named_parameters()]:
            if name.endswith(("e_score_correction_bias", "expert_bias")) and id(tensor) not in drawn:
                tensor.normal_(0.0, 0.05)


def save_tiny_model(arch: str, directory: str | Path, seed: int = 0, tokenizer=None, **overrides) -> Path:
    """Build a tiny model and save it with its tokenizer via ``save_pretrained`` (lm-eval loads it by path)."""
    directory = Path(directory)
    tokenizer = tokenizer if tokenizer is not None else train_tokenizer()
    model = build_tiny_model(arch, tokenizer, seed=seed, **overrides)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def build_tiny_remote_model(code_dir: str | Path, tokenizer=None, seed: int = 0, router_std: float = 0.5, **overrides):
    """A randomly initialised tiny causal LM from a directory of remote code (config.json with ``auto_map``
    and its modelling files), loaded with ``trust_remote_code=True``; ``overrides`` replace config fields."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(code_dir), trust_remote_code=True)
    for key, value in overrides.items():
        setattr(config, key, value)
    if tokenizer is not None:
        config.vocab_size = len(tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, trust_remote_code=True, dtype=torch.float32)
    randomise_routers(model, router_std)
    return model.eval()

"""Projected GPU memory per GPU of router training with the frozen weights sharded by FSDP2 (roma_eval/training/
sharding.py), for Qwen3-30B-A3B, Qwen3-235B-A22B and DeepSeek-V3 at 1, 8 and 16 GPUs: the table in docs/reproduce.md.

Projections, not measurements on GPUs.  What is exact and what is measured here:
- parameter counts: each model's transformers skeleton on the meta device, from its hub config.json's sizes (below);
- activations: measured on this CPU by what autograd saves for the backward of one decoder layer at the model's real
  sizes in bf16, routers the only trainable weights (as in training), with the routed experts cut to 16 (what a token
  saves depends on top-k and the expert width, not on how many experts there are), per token;
- the rest follows FSDP2's schedule: 1/N of every frozen weight resident; the unit being computed and the next one
  (implicit prefetch) gathered whole; the tail (final norm, LM head) kept gathered between forward and backward; the
  routers whole with fp32 master weights, gradients and AdamW's two moments; logits of a step in bf16 plus their
  fp32 log-softmax.  Not counted: the CUDA context and allocator slack (~2-4 GB), the layer cache (hidden states
  entering the first tuned layer, placed on the host when it would take more than half the free memory).

    python bench/fsdp_memory.py            # about a minute on 2 CPU cores
"""

from __future__ import annotations

import argparse
import math

import torch

GIB = 2**30
TUNED_LAYERS = 5  # the paper's last 5
BATCH, TOKENS_PER_SAMPLE = 32, 256  # the released trainer's batch; a multiple-choice sample's typical length
GPUS = (1, 8, 16)
MEASURED_EXPERTS = 16

# Sizes from each model's config.json on the hub (Qwen/Qwen3-30B-A3B, Qwen/Qwen3-235B-A22B, deepseek-ai/DeepSeek-V3).
MODELS = {
    "Qwen3-30B-A3B": ("qwen3_moe", dict(hidden_size=2048, intermediate_size=6144, moe_intermediate_size=768,
                                        num_hidden_layers=48, num_attention_heads=32, num_key_value_heads=4,
                                        head_dim=128, num_experts=128, num_experts_per_tok=8, vocab_size=151936,
                                        tie_word_embeddings=False)),
    "Qwen3-235B-A22B": ("qwen3_moe", dict(hidden_size=4096, intermediate_size=12288, moe_intermediate_size=1536,
                                          num_hidden_layers=94, num_attention_heads=64, num_key_value_heads=4,
                                          head_dim=128, num_experts=128, num_experts_per_tok=8, vocab_size=151936,
                                          tie_word_embeddings=False)),
    "DeepSeek-V3": ("deepseek_v3", dict(hidden_size=7168, intermediate_size=18432, moe_intermediate_size=2048,
                                        num_hidden_layers=61, first_k_dense_replace=3, n_routed_experts=256,
                                        n_shared_experts=1, num_experts_per_tok=8, num_attention_heads=128,
                                        num_key_value_heads=128, q_lora_rank=1536, kv_lora_rank=512,
                                        qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128, n_group=8,
                                        topk_group=4, vocab_size=129280, tie_word_embeddings=False)),
}
EXPERTS_KEY = {"qwen3_moe": "num_experts", "deepseek_v3": "n_routed_experts"}


def skeleton(model_type: str, sizes: dict):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(model_type, **sizes)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16), config


def sizes_of(model) -> dict:
    """Parameter counts: all, the largest decoder layer, the tail (final norm and LM head), the routers."""
    from roma_eval.routing import routers
    from roma_eval.routing.arch import decoder_layers, final_norm

    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    router_params = [count(r) for r in routers(model).values()]
    return {"total": count(model), "layer": max(count(layer) for layer in decoder_layers(model)),
            "tail": count(final_norm(model)) + count(model.get_output_embeddings()),
            "tuned_routers": sum(router_params[-TUNED_LAYERS:]), "vocab": model.config.vocab_size}


def saved_bytes_per_token(model_type: str, sizes: dict, tokens: int = 256) -> float:
    """What autograd keeps for the backward of the last decoder layer, per token (bf16, routers trainable only)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from roma_eval.routing import routers

    layers = sizes.get("first_k_dense_replace", 0) + 1  # one MoE layer above any dense ones
    config = AutoConfig.for_model(model_type, **{**sizes, "num_hidden_layers": layers, "vocab_size": 64,
                                                 EXPERTS_KEY[model_type]: MEASURED_EXPERTS, "n_group": 1,
                                                 "topk_group": 1} if model_type == "deepseek_v3" else
                                  {**sizes, "num_hidden_layers": layers, "vocab_size": 64,
                                   EXPERTS_KEY[model_type]: MEASURED_EXPERTS})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()
    model.requires_grad_(False)
    for router in routers(model).values():
        router.weight.requires_grad_(True)
    layer = model.model.layers[-1]
    hidden = torch.randn(1, tokens, config.hidden_size, dtype=torch.bfloat16)
    position_ids = torch.arange(tokens)[None]
    embeddings = model.model.rotary_emb(hidden, position_ids)
    saved: dict[int, int] = {}

    def pack(tensor):
        saved[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(hidden, position_embeddings=embeddings, attention_mask=None, position_ids=position_ids)
    return sum(saved.values()) / tokens


def project(sizes: dict, per_token: float, gpus: int) -> dict:
    """GiB per GPU, by part."""
    sharded = gpus > 1
    tokens = BATCH * TOKENS_PER_SAMPLE / gpus  # each process holds its share of every batch
    parts = {
        "frozen weights (bf16, 1/N each)": 2 * sizes["total"] / gpus,
        "gathered units (2 layers in flight)": 2 * 2 * sizes["layer"] if sharded else 0,
        "tail kept gathered": 2 * sizes["tail"] * (gpus - 1) / gpus if sharded else 0,
        "routers (fp32 master, grad, AdamW)": 16 * sizes["tuned_routers"],
        "activations of the tuned layers": per_token * tokens * TUNED_LAYERS,
        "logits (bf16) and log-softmax (fp32)": 6 * tokens * sizes["vocab"],
    }
    return {name: value / GIB for name, value in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=256, help="tokens of the measured layer forward")
    args = parser.parse_args()
    rows = []
    for name, (model_type, sizes) in MODELS.items():
        counts = sizes_of(skeleton(model_type, sizes)[0])
        per_token = saved_bytes_per_token(model_type, sizes, args.tokens)
        print(f"{name}: {counts['total'] / 1e9:.1f}B parameters, largest layer {counts['layer'] / 1e9:.2f}B, "
              f"tail {counts['tail'] / 1e9:.2f}B, tuned routers {counts['tuned_routers'] / 1e6:.2f}M; "
              f"saved for backward per token per layer: {per_token / 1024:.1f} KiB (measured)")
        for gpus in GPUS:
            parts = project(counts, per_token, gpus)
            rows.append((name, gpus, sum(parts.values()), parts))
    print(f"\nprojected GiB per GPU (batch {BATCH} x {TOKENS_PER_SAMPLE} tokens, {TUNED_LAYERS} tuned layers):")
    print("| model | GPUs | total | " + " | ".join(rows[0][3]) + " |")
    for name, gpus, total, parts in rows:
        print(f"| {name} | {gpus} | **{math.ceil(total)}** | " + " | ".join(f"{v:.1f}" for v in parts.values()) + " |")


if __name__ == "__main__":
    main()

"""The family registry: one entry per supported MoE family, and the families refused with a reason.

Each entry says where the router is, what its parameter is called, what the "routing weights"
(the scores over all experts that RoMA reads and C3PO/the oracle replace) are, and how scores become
the top-k choice (``select``), mirroring the family's own source line for line (the comment above
each ``select`` names the transformers class it mirrors).  ``docs/families.md`` is the reader's
version of this file; ``tests/test_families.py`` checks that every MoE family in the installed
transformers is either here or in ``REFUSED``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from roma_eval.routing.spec import (
    DENSE_SCORES_LOGITS,
    INDEX_WEIGHT_AUX,
    LEGACY_TUPLE_LAYER,
    LOGITS_ONLY,
    SIGMOID,
    SOFTMAX,
    SOFTMAX_SAME_DTYPE,
    ArchSpec,
    ModuleListBlock,
    logit,
    sigmoid_float,
)

# ---------------------------------------------------------------- shared selection rules


def _select_softmax_topk(gate, logits, scores, args):
    # OlmoeTopKRouter, Qwen2MoeTopKRouter, Qwen3MoeTopKRouter, Qwen3NextTopKRouter, FlexOlmoTopKRouter:
    # top-k of softmax(logits, float32), renormalised if norm_topk_prob, cast back to the logits' dtype.
    top_value, top_index = torch.topk(scores, gate.top_k, dim=-1)
    if gate.norm_topk_prob:
        top_value = top_value / top_value.sum(dim=-1, keepdim=True)
    return top_value.to(logits.dtype), top_index


def _select_softmax_topk_normalised(gate, logits, scores, args):
    # Qwen3_5MoeTopKRouter: as Qwen3-MoE, always renormalised (no norm_topk_prob).
    top_value, top_index = torch.topk(scores, gate.top_k, dim=-1)
    top_value = top_value / top_value.sum(dim=-1, keepdim=True)
    return top_value.to(logits.dtype), top_index


def _select_mixtral(gate, logits, scores, args):
    # MixtralTopKRouter, MiniMaxTopKRouter: always renormalised, weights stay float32.
    top_value, top_index = torch.topk(scores, gate.top_k, dim=-1)
    return top_value / top_value.sum(dim=-1, keepdim=True), top_index


def _group_mask(gate, group_scores: torch.Tensor) -> torch.Tensor:
    group_idx = torch.topk(group_scores, k=gate.topk_group, dim=-1, sorted=False)[1]
    group_mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1)
    per_group = gate.num_experts // gate.num_group
    return group_mask.unsqueeze(-1).expand(-1, gate.num_group, per_group).reshape(-1, gate.num_experts).bool()


def _choose_deepseek_v2(gate, logits, scores, args):
    # DeepseekV2TopkRouter's choice: the softmax scores, zero outside the chosen groups (group-limited greedy).
    if gate.topk_method == "group_limited_greedy":
        group_scores = scores.view(-1, gate.num_group, gate.num_experts // gate.num_group).max(dim=-1).values
        scores = scores.masked_fill(~_group_mask(gate, group_scores), 0.0)
    return scores


def _select_deepseek_v2(gate, logits, scores, args):
    # DeepseekV2TopkRouter: greedy or group-limited greedy on softmax scores, times routed_scaling_factor.
    scores = _choose_deepseek_v2(gate, logits, scores, args)
    top_value, top_index = torch.topk(scores, k=gate.top_k, dim=-1, sorted=False)
    return top_value * gate.routed_scaling_factor, top_index


def _check_deepseek_v2(config):
    if getattr(config, "topk_method", "greedy") not in ("greedy", "group_limited_greedy"):
        return (f"DeepSeek-V2 topk_method {config.topk_method!r} is not supported; "
                "use 'greedy' or 'group_limited_greedy'")
    return None


def _choose_deepseek_v3(gate, logits, scores, args):
    # DeepseekV3TopkRouter's choice: the scores plus the correction bias, -inf outside the groups ranked first by
    # the sum of their top-2 biased scores.
    for_choice = scores + gate.e_score_correction_bias
    per_group = for_choice.view(-1, gate.num_group, gate.num_experts // gate.num_group)
    group_scores = per_group.topk(2, dim=-1)[0].sum(dim=-1)
    return for_choice.masked_fill(~_group_mask(gate, group_scores), float("-inf"))


def _select_deepseek_v3(gate, logits, scores, args):
    # DeepseekV3TopkRouter (and the identical Glm4MoeTopkRouter, DeepseekV32TopkRouter): sigmoid scores of
    # float32 logits; the correction bias steers the choice but not the weights; groups ranked by the sum
    # of their top-2 biased scores; weights renormalised (norm_topk_prob) and scaled.
    for_choice = _choose_deepseek_v3(gate, logits, scores, args)
    top_index = torch.topk(for_choice, k=gate.top_k, dim=-1, sorted=False)[1]
    top_value = scores.gather(1, top_index)
    if gate.norm_topk_prob:
        top_value = top_value / (top_value.sum(dim=-1, keepdim=True) + 1e-20)
    return top_value * gate.routed_scaling_factor, top_index


# ---------------------------------------------------------------- families with their own rule


def _select_gpt_oss(gate, logits, scores, args):
    # GptOssTopKRouter: top-k of the logits (with the router bias), softmax over the k chosen only.
    top_value, top_index = torch.topk(logits, gate.top_k, dim=-1)
    return F.softmax(top_value, dim=1, dtype=top_value.dtype), top_index


def _select_granitemoe(gate, logits, scores, args):
    # GraniteMoeTopKRouter: float32 logits, top-k of the logits, softmax over the k, cast to the input's dtype.
    top_value, top_index = logits.topk(gate.top_k, dim=-1)
    return torch.softmax(top_value, dim=-1).type_as(args[0]), top_index


def _select_phimoe(gate, logits, scores, args):
    # PhimoeTopKRouter: the family's own sparsemixer on the logits (top-2; in eval mode the argmax, then the
    # argmax of the rest, each weighted by a softmax over the experts within the jitter threshold of it).
    from transformers.models.phimoe.modeling_phimoe import sparsemixer

    return sparsemixer(logits, jitter_eps=gate.router_jitter_noise, training=gate.training, top_k=gate.top_k)


def _check_phimoe(config):
    if config.num_experts_per_tok != 2:
        return f"PhiMoE's sparsemixer routes to exactly 2 experts; this config asks for {config.num_experts_per_tok}"
    return None


def _select_jamba(gate, logits, scores, args):
    # JambaTopKRouter: top-k of softmax(logits, float32), not renormalised, cast to the input's dtype.
    top_value, top_index = torch.topk(scores, gate.top_k, dim=-1)
    return top_value.to(args[0].dtype), top_index


def _select_llama4(gate, logits, scores, args):
    # Llama4Router: top-k of the logits; the dense (tokens, experts) weights are sigmoid of the chosen logits
    # and sigmoid(-inf) = 0 elsewhere, in float32, cast back (returned dense, as the router returns them).
    top_value, top_index = torch.topk(logits, gate.top_k, dim=1)
    dense = torch.full_like(logits, float("-inf")).scatter_(1, top_index, top_value)
    return torch.sigmoid(dense.float()).to(dense.dtype), top_index


def _select_dbrx(ffn, logits, scores, args):
    # DbrxFFN.route_tokens_to_experts (the DbrxRouter returns logits only): softmax in the logits' dtype,
    # top-k, divided by the p-norm of the k weights (moe_normalize_expert_weights = p).
    top_value, top_index = torch.topk(scores, ffn.top_k, dim=-1)
    if ffn.moe_normalize_expert_weights is not None:
        top_value = top_value / torch.norm(top_value, p=ffn.moe_normalize_expert_weights, dim=-1, keepdim=True)
    return top_value, top_index


def _choose_ernie(gate, logits, scores, args):
    # Ernie4_5_MoeTopKRouter's choice: the scores with the moe_statics correction bias.
    return gate.moe_statics(scores)


def _select_ernie(gate, logits, scores, args):
    # Ernie4_5_MoeTopKRouter: softmax(float32 logits); the choice is the top-k of scores + the moe_statics
    # correction bias, the weights the chosen scores renormalised (sum clamped at moe_norm_min), cast to the
    # input's dtype.
    selected = torch.topk(_choose_ernie(gate, logits, scores, args), gate.top_k, dim=-1)[1]
    weights = torch.gather(scores, dim=-1, index=selected)
    weights = weights / torch.clamp(weights.sum(dim=-1, keepdim=True), min=gate.norm_min)
    return weights.to(args[0].dtype), selected


def _choose_lfm2(gate, logits, scores, args):
    # Lfm2MoeTopKRouter's choice: the scores, plus the block's expert_bias (the router's second argument) if used.
    return scores + args[1] if gate.use_expert_bias else scores


def _select_lfm2(gate, logits, scores, args):
    # Lfm2MoeTopKRouter: sigmoid scores; with use_expert_bias the choice is the top-k of scores + the block's
    # expert_bias (the router's second argument), the weights the chosen scores; renormalised (+1e-6) and scaled.
    if gate.use_expert_bias:
        selected = torch.topk(_choose_lfm2(gate, logits, scores, args), k=gate.top_k, dim=-1)[1]
        weights = torch.gather(scores, dim=1, index=selected).type_as(logits)
    else:
        weights, selected = torch.topk(scores, k=gate.top_k, dim=-1)
    if gate.norm_topk_prob:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-6)
    return weights * gate.routed_scaling_factor, selected


def _select_aria(gate, logits, scores, args):
    # AriaTextTopKRouter: top-k of the logits, softmax over the k chosen (in the logits' dtype).
    top_value, top_index = torch.topk(logits, gate.top_k, dim=-1)
    return F.softmax(top_value, dim=-1), top_index


def _select_cohere2_moe(gate, logits, scores, args):
    # Cohere2MoeTopKRouter (expert_selection_fn "softmax"): top-k of the logits, softmax (float32) over the k,
    # cast to the input's dtype.
    top_value, top_index = torch.topk(logits, gate.top_k, dim=-1)
    return F.softmax(top_value, dim=1, dtype=torch.float).to(args[0].dtype), top_index


def _check_cohere2_moe(config):
    if getattr(config, "expert_selection_fn", "softmax") != "softmax":
        return (f"Cohere2-MoE with expert_selection_fn {config.expert_selection_fn!r} is not supported: roma-eval "
                "registers its softmax variant only")
    return None


def _choose_with_bias_argument(gate, logits, scores, args):
    # MiniMaxM2TopKRouter's and AfmoeTokenChoiceRouter's choice: the scores plus the block's bias, passed to the router
    # as its second argument.
    return scores + args[1]


def _select_sigmoid_bias_arg(gate, logits, scores, args):
    # MiniMaxM2TopKRouter: sigmoid(float32 logits); the choice is the top-k of scores + the block's
    # e_score_correction_bias (the router's second argument), the weights the chosen scores renormalised.
    top_index = torch.topk(_choose_with_bias_argument(gate, logits, scores, args), gate.top_k, dim=-1,
                           sorted=False)[1]
    top_value = scores.gather(1, top_index)
    return top_value / top_value.sum(dim=-1, keepdim=True), top_index


def _select_afmoe(gate, logits, scores, args):
    # AfmoeTokenChoiceRouter: sigmoid(float32 logits); the choice is the top-k of scores + the block's
    # expert_bias (the router's second argument); the chosen scores renormalised (+1e-20) times route_scale.
    top_index = torch.topk(_choose_with_bias_argument(gate, logits, scores, args), k=gate.top_k, dim=1)[1]
    top_value = scores.gather(dim=1, index=top_index)
    top_value = top_value / (top_value.sum(dim=-1, keepdim=True) + 1e-20)
    return top_value * gate.route_scale, top_index


def _select_flint(gate, logits, scores, args):
    # FlintTopKRouter: top-k of sigmoid(float32 logits), no bias, renormalised if norm_topk_prob.
    top_value, top_index = torch.topk(scores, gate.top_k, dim=-1)
    if gate.norm_topk_prob:
        top_value = top_value / top_value.sum(dim=-1, keepdim=True)
    return top_value, top_index


def _check_hunyuan(config):
    if not isinstance(config.num_experts, int):
        return ("HunYuan-MoE with a different expert count per layer is not supported: routing vectors of every "
                "layer must have the same length")
    return None


def _select_deepseek_moe(gate, logits, scores, args):
    # MoEGate of DeepSeekMoE (remote code, deepseek-ai/deepseek-moe-16b-*): softmax in the logits' dtype,
    # top-k unsorted, renormalised (+1e-20) only when top_k > 1 and norm_topk_prob; no scaling.
    top_value, top_index = torch.topk(scores, k=gate.top_k, dim=-1, sorted=False)
    if gate.top_k > 1 and gate.norm_topk_prob:
        top_value = top_value / (top_value.sum(dim=-1, keepdim=True) + 1e-20)
    return top_value, top_index


def _deepseek_moe_infer(block, x, flat_expert_indices, flat_expert_weights):
    # DeepseekMoE.moe_infer (remote code), without its @torch.no_grad(): the (token, slot) pairs sorted by expert,
    # each expert run once on its tokens in that order, weighted, and summed into the tokens' rows expert by
    # expert.  Out of place (``*``, ``index_add``) so that autograd can differentiate it; each token meets an
    # expert at most once, so every row receives the same additions in the same order as the published in-place
    # mul_ / scatter_reduce_(sum): the same bits.
    out = torch.zeros_like(x)
    order = flat_expert_indices.argsort()
    ends = flat_expert_indices.bincount().cpu().numpy().cumsum(0)
    token_of = order // block.num_experts_per_tok
    for i, end in enumerate(ends):
        start = 0 if i == 0 else ends[i - 1]
        if start == end:
            continue
        tokens = token_of[start:end]
        expert_out = block.experts[i](x[tokens]) * flat_expert_weights[order[start:end]]
        out = out.index_add(0, tokens, expert_out)
    return out


def _check_deepseek_moe(config):
    if getattr(config, "scoring_func", "softmax") != "softmax":
        return (f"DeepSeekMoE scoring_func {config.scoring_func!r} is not supported "
                "(its MoEGate only implements softmax)")
    return None


def _choose_logits(gate, logits, scores, args):
    # Routers whose top-k ranks the logits (gpt-oss with its router bias, Granite, Aria, Cohere2-MoE, Llama 4, and
    # PhiMoE's sparsemixer, which takes the argmax, then the argmax of the rest).
    return logits


# ---------------------------------------------------------------- the registry

_SOFTMAX_ALL = "softmax(router logits) over all experts, float32"
_ON_LOGITS = ("softmax(router logits) over all experts, float32 — top-k chooses on the logits and its weights are "
              "this softmax renormalised over the chosen k")
_V3_DEF = ("sigmoid(router logits) per expert, float32 — the affinities top-k chooses from before the "
           "correction bias is added; not a distribution")
_V3_RULE = dict(select=_select_deepseek_v3, choice=_choose_deepseek_v3, definition=_V3_DEF, **SIGMOID)

SPECS_LIST: tuple[ArchSpec, ...] = (
    # --- the fast test set's families (roma_eval.tiny.FAST_ARCHITECTURES)
    ArchSpec("olmoe", "OlmoeTopKRouter", select=_select_softmax_topk, definition=_SOFTMAX_ALL, **SOFTMAX),
    ArchSpec("qwen2_moe", "Qwen2MoeTopKRouter", select=_select_softmax_topk, definition=_SOFTMAX_ALL, **SOFTMAX),
    ArchSpec("qwen3_moe", "Qwen3MoeTopKRouter", select=_select_softmax_topk, definition=_SOFTMAX_ALL, **SOFTMAX),
    ArchSpec("mixtral", "MixtralTopKRouter", select=_select_mixtral, definition=_SOFTMAX_ALL, **SOFTMAX),
    ArchSpec("deepseek_v2", "DeepseekV2TopkRouter", select=_select_deepseek_v2, choice=_choose_deepseek_v2,
             check=_check_deepseek_v2,
             definition=_SOFTMAX_ALL + " (before the group mask and routed_scaling_factor)", **SOFTMAX),
    ArchSpec("deepseek_v3", "DeepseekV3TopkRouter", **_V3_RULE),
    # --- softmax top-k routers
    ArchSpec("flex_olmo", "FlexOlmoTopKRouter", select=_select_softmax_topk, definition=_SOFTMAX_ALL, **SOFTMAX),
    ArchSpec("qwen3_next", "Qwen3NextTopKRouter", select=_select_softmax_topk, definition=_SOFTMAX_ALL, **SOFTMAX),
    ArchSpec("qwen3_5_moe_text", "Qwen3_5MoeTopKRouter", family="qwen3_5_moe", aliases=("qwen3_5_moe",),
             select=_select_softmax_topk_normalised, definition=_SOFTMAX_ALL, **SOFTMAX),
    ArchSpec("minimax", "MiniMaxTopKRouter", select=_select_mixtral, definition=_SOFTMAX_ALL, **SOFTMAX),
    ArchSpec("jamba", "JambaTopKRouter", router_path="feed_forward.router", final_norm_path="model.final_layernorm",
             select=_select_jamba, definition=_SOFTMAX_ALL, **SOFTMAX),
    ArchSpec("ernie4_5_moe", "Ernie4_5_MoeTopKRouter", select=_select_ernie, choice=_choose_ernie,
             definition=_SOFTMAX_ALL + " (before the moe_statics correction bias, which steers only the choice)",
             **SOFTMAX),
    ArchSpec("dbrx", "DbrxRouter", router_path="ffn.router", weight_name="layer.weight", output=LOGITS_ONLY,
             selector_path="ffn", layers_path="transformer.blocks", final_norm_path="transformer.norm_f",
             select=_select_dbrx, definition="softmax(router logits) over all experts, in the logits' dtype",
             **SOFTMAX_SAME_DTYPE),
    # --- routers choosing on logits, weighting the chosen ones only
    ArchSpec("gpt_oss", "GptOssTopKRouter", router_path="mlp.router", select=_select_gpt_oss, choice=_choose_logits,
             definition="softmax(router logits + router bias) over all experts, float32 — top-k chooses on the "
                        "logits and its weights are this softmax renormalised over the chosen k", **SOFTMAX),
    ArchSpec("granitemoe", "GraniteMoeTopKRouter", router_path="block_sparse_moe.router", select=_select_granitemoe,
             choice=_choose_logits, definition=_ON_LOGITS, **SOFTMAX),
    ArchSpec("phimoe", "PhimoeTopKRouter", router_path="mlp.router", select=_select_phimoe, choice=_choose_logits,
             check=_check_phimoe,
             definition="softmax(router logits) over all experts, float32 — sparsemixer takes the argmax, then "
                        "the argmax of the rest, each weighted by a softmax over the experts near it", **SOFTMAX),
    ArchSpec("llama4_text", "Llama4Router", family="llama4", aliases=("llama4",), router_path="feed_forward.router",
             output=DENSE_SCORES_LOGITS, select=_select_llama4, choice=_choose_logits, scores=sigmoid_float,
             scores_to_logits=logit, score_kind="sigmoid",
             definition="sigmoid(router logits) per expert, float32 — the chosen experts' weights; top-k "
                        "chooses on the logits (the same order)"),
    # --- sigmoid routers
    ArchSpec("glm4_moe", "Glm4MoeTopkRouter", **_V3_RULE),
    ArchSpec("deepseek_v32", "DeepseekV32TopkRouter", **_V3_RULE),
    ArchSpec("lfm2_moe", "Lfm2MoeTopKRouter", router_path="feed_forward.gate", final_norm_path="model.embedding_norm",
             select=_select_lfm2, choice=_choose_lfm2,
             definition="sigmoid(router logits) per expert, in the logits' dtype — before the block's expert_bias, "
                        "which steers only the choice", **SIGMOID),
    # --- more families with one of the rules above
    ArchSpec("mellum", "MellumTopKRouter", select=_select_softmax_topk, definition=_SOFTMAX_ALL, **SOFTMAX),
    ArchSpec("hunyuan_v1_moe", "HunYuanMoEV1Gate", weight_name="wg.weight", select=_select_softmax_topk_normalised,
             check=_check_hunyuan, definition=_SOFTMAX_ALL, **SOFTMAX),
    ArchSpec("granitemoeshared", "GraniteMoeSharedTopKRouter", router_path="block_sparse_moe.router",
             select=_select_granitemoe, choice=_choose_logits, definition=_ON_LOGITS, **SOFTMAX),
    ArchSpec("aria_text", "AriaTextTopKRouter", family="aria", router_path="mlp.router", select=_select_aria,
             choice=_choose_logits, definition=_ON_LOGITS, **SOFTMAX),
    ArchSpec("cohere2_moe", "Cohere2MoeTopKRouter", select=_select_cohere2_moe, choice=_choose_logits,
             check=_check_cohere2_moe, definition=_ON_LOGITS, **SOFTMAX),
    ArchSpec("glm4_moe_lite", "Glm4MoeLiteTopkRouter", **_V3_RULE),
    ArchSpec("dots1", "Dots1TopkRouter", **_V3_RULE),
    ArchSpec("solar_open", "SolarOpenTopkRouter", **_V3_RULE),
    ArchSpec("exaone_moe", "ExaoneMoeTopkRouter", **_V3_RULE),
    ArchSpec("minimax_m2", "MiniMaxM2TopKRouter", select=_select_sigmoid_bias_arg, choice=_choose_with_bias_argument,
             scores=sigmoid_float, scores_to_logits=logit, score_kind="sigmoid",
             definition="sigmoid(router logits) per expert, float32 — before the block's e_score_correction_bias, "
                        "which steers only the choice"),
    ArchSpec("afmoe", "AfmoeTokenChoiceRouter", router_path="mlp.router", weight_name="gate.weight",
             select=_select_afmoe, choice=_choose_with_bias_argument,
             definition="sigmoid(router logits) per expert, float32 — before the block's expert_bias, which steers "
                        "only the choice", **SIGMOID),
    ArchSpec("mimo_v2_flash", "MiMoV2FlashTopkRouter", **_V3_RULE),
    ArchSpec("nemotron_h", "NemotronHTopkRouter", router_path="mixer.gate", final_norm_path="model.norm_f",
             **_V3_RULE),
    ArchSpec("granitemoe_swa", "GraniteMoeSWATopKRouter", router_path="block_sparse_moe.router",
             select=_select_granitemoe, choice=_choose_logits, definition=_ON_LOGITS, **SOFTMAX),
    ArchSpec("flint", "FlintTopKRouter", select=_select_flint,
             definition="sigmoid(router logits) per expert, float32 (no correction bias)", **SIGMOID),
    # --- remote code
    ArchSpec("deepseek", "MoEGate", family="remote:deepseek-moe", output=INDEX_WEIGHT_AUX, select=_select_deepseek_moe,
             check=_check_deepseek_moe, layer_output=LEGACY_TUPLE_LAYER,
             block=ModuleListBlock("moe_infer", _deepseek_moe_infer),
             definition="softmax(gate logits) over all n_routed_experts, in the logits' dtype (MoEGate's `scores`)",
             **SOFTMAX_SAME_DTYPE),
)

# Families in the installed transformers (models/<family>) with a router-and-experts block that roma-eval does
# not drive, each with the reason in one line.  A model_type "<family>" or "<family>_<variant>" (e.g. a text
# config "<family>_text") is refused with this line; tests/test_families.py keeps the list complete.
_VL = "vision-language model: no text-only causal LM class for lm-eval's hf path"
_UNREGISTERED = "not yet registered (no tiny-model parity test yet): "
REFUSED: dict[str, str] = {
    "axk1": _UNREGISTERED + "DeepSeek-V3-rule router; a small config of its attention did not build",
    "axk2": _UNREGISTERED + "DeepSeek-V3-rule router whose group scoring is optional (n_group None)",
    "bailing_hybrid": _UNREGISTERED + "linear-attention hybrid with a DeepSeek-V3-rule router",
    "beam": _UNREGISTERED + "sorted group top-k, routed_scaling_factor applied after the experts",
    "deepseek_ocr2": _VL,
    "deepseek_v4": "some layers route by a hash of the token id (DeepseekV4HashRouter), not by a learned gate, "
                   "and layers pass several residual streams",
    "diffusion_gemma": "a block-diffusion model, not a causal LM; its router returns probabilities, not logits",
    "dots3_note": _VL,
    "ernie4_5_vl_moe": _VL,
    "gemma4": "its router normalises and rescales its input and returns probabilities times a per-expert scale, "
              "not logits",
    "glm4v_moe": _VL,
    "glm5_next": _VL,
    "glm_moe_dsa": "its decoder layers pass the sparse-attention indexer's top-k to the next layer, so it cannot "
                   "run from a cached layer",
    "granitemoehybrid": _UNREGISTERED + "Mamba-2 hybrid with Granite's router",
    "hy_v3": _UNREGISTERED + "sigmoid router taking the block's correction bias, with its own scaling factor",
    "hy_v4": "its layers pass several residual streams (hyper-connections), so it cannot run from a cached layer",
    "inkling": "its router scores the always-on shared experts too and weights a log-sigmoid softmax over chosen "
               "and shared ones: no per-expert scores over the routed experts alone",
    "inkling2": _UNREGISTERED + "configurable sigmoid/softmax router with a correction bias",
    "jetmoe": "its gate returns expert-sorted token batches, not per-token top-k, and its attention is a "
              "mixture of experts too",
    "kimi_linear": _UNREGISTERED + "linear-attention hybrid with a DeepSeek-V3-rule router",
    "kolibri1": _UNREGISTERED + "chooses on logits + bias and weights by the sigmoid of the chosen logits",
    "laguna": _UNREGISTERED + "soft-capped sigmoid router with a correction bias",
    "longcat_flash": "some routed experts are zero-computation (identity) experts, so a routing over the real "
                     "experts alone is not defined the same way",
    "minimax_m3_vl": _VL,
    "mistral4": _UNREGISTERED + "loaded through Mistral 3's multimodal class, not AutoModelForCausalLM",
    "mistral_large4": _VL,
    "muse_spark": _VL,
    "nllb_moe": "an encoder-decoder translation model",
    "openai_privacy_filter": "a token classifier, not a causal LM",
    "qwen3_omni_moe": "an omni (audio/vision/text) model: no text-only causal LM class for lm-eval's hf path",
    "qwen3_vl_moe": _VL,
    "qwen4_exp": _UNREGISTERED + "hybrid with gated residuals; a small config did not build",
    "step3p7": _VL,
    "switch_transformers": "an encoder-decoder (T5-style) model",
    "unlimited_ocr": _VL,
    "zaya": "its router is an MLP over a state carried between layers, not a linear gate",
}


def refusal(model_type: str | None) -> str | None:
    """The reason a model_type is refused: its family's line, for "<family>" and "<family>_<variant>"."""
    if not model_type:
        return None
    for family, reason in REFUSED.items():
        if model_type == family or model_type.startswith(family + "_"):
            return reason
    return None

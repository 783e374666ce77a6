"""Run a model from decoder layer k upward, on hidden states computed once.

When only routers at layers >= k change (RoMA's tuned layers, the oracle's and C3PO's steered
layers), the hidden states entering layer k cannot change: compute them once
(``capture_layer_input``) and run only layers k.. plus the final norm and head
(``run_from_layer``).  ``run_from_layer`` runs the model's own forward, so that it still builds the
causal and recurrent masks, rotary embeddings and cache exactly as usual, with two changes for that
one call: the decoder layers below k return their input unchanged (nothing runs in them), and the
cached hidden states are handed to layer k itself (a forward pre-hook), so whatever the model does
to its input embeddings first (Granite's ``embedding_multiplier``) does not touch them.  Every layer
keeps its absolute index, so per-layer attention types (sliding, chunked, linear attention, mamba,
short convolution) and cache slots line up as in the full forward.  A skipped layer returns its input in
the form the family's layers return (``ArchSpec.layer_output``): the hidden states themselves, or the
transformers 4.x tuple whose first element the model loop reads (DeepSeekMoE's remote code).

The same reasoning for positions: a causal prefix does not change when routing at a later token
changes, so its keys and values are computed once (``prefix_keys_values``) and later forwards attend
to them (``attend_to_prefix``).  That is exact only if the cache keeps every prefix token as attention
keys and values: a sliding-window (or chunked) layer keeps the last W, and linear-attention, Mamba and
short-convolution layers keep a recurrent or convolution state, DeepSeek-V3.2 indexer keys besides.
``prefix_cache_exact`` is the one policy both the oracle (which then runs uncached) and C3PO (which then
refuses) follow; ``prefix_cache_problem`` says, in a sentence, which layers stand in the way.
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager

import torch

from roma_eval.routing.arch import _unwrap, decoder_layers, final_norm, spec_for


class _Stop(Exception):
    pass


def _entry(model, layer_index: int) -> torch.nn.Module:
    """The module the hidden states entering decoder layer ``layer_index`` go into (the final norm past the end)."""
    layers = decoder_layers(model)
    return layers[layer_index] if layer_index < len(layers) else final_norm(model)


@contextmanager
def capture_layer_input(model, layer_index: int, stop: bool = False):
    """Record the hidden states entering decoder layer ``layer_index`` (the final norm when the index
    is past the last layer) during the next forward(s): ``captured["hidden_states"]`` is
    (batch, seq, hidden).  With ``stop`` the forward ends there and the ``with`` block goes on."""
    module = _entry(model, layer_index)
    captured: dict[str, torch.Tensor] = {}

    def hook(module, args, kwargs):
        captured["hidden_states"] = args[0] if args else kwargs["hidden_states"]
        if stop:
            raise _Stop

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield captured
    except _Stop:
        pass
    finally:
        handle.remove()


def cache_holding(kv: list[tuple[torch.Tensor, torch.Tensor]], first_layer: int = 0):
    """A transformers cache whose decoder layers ``first_layer``.. hold ``kv`` (keys, values per layer)
    as they are, not copied; layers below hold nothing (``run_from_layer`` skips them).  Build a fresh
    one for every forward: the forward's own update appends to it.  Only for models where
    ``prefix_cache_supported`` holds."""
    from transformers.cache_utils import Cache, DummyLayer, DynamicLayer

    layers = [DummyLayer() for _ in range(first_layer)]
    for keys, values in kv:
        layer = DynamicLayer()
        layer.lazy_initialization(keys, values)
        layer.keys, layer.values = keys, values
        layers.append(layer)
    return Cache(layers=layers)


def prefix_keys_values(model, **forward_kwargs) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One forward with a cache; per decoder layer, its keys and values (batch, heads, tokens, head_dim)."""
    cache = model(use_cache=True, **forward_kwargs).past_key_values
    return [(layer.keys, layer.values) for layer in cache.layers]


def attend_to_prefix(kv: list[tuple[torch.Tensor, torch.Tensor]], first_layer: int = 0) -> dict:
    """Forward arguments under which decoder layers ``first_layer``.. attend to the prefix ``kv`` first.
    A fresh cache each call, holding the prefix tensors themselves: the forward's own update concatenates
    (copies) them once; ``DynamicCache(data)`` would copy them a second time first."""
    return {"past_key_values": cache_holding(kv, first_layer), "use_cache": True}


def run_from_layer(model, layer_index: int, hidden_states: torch.Tensor, attention_mask=None, **forward_kwargs):
    """The model's output when ``hidden_states`` enter decoder layer ``layer_index`` (layers below are skipped)."""
    layers = list(decoder_layers(model))
    entry = _entry(model, layer_index)

    def inject(module, args, kwargs):
        if args:
            return (hidden_states, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden_states}

    handle = entry.register_forward_pre_hook(inject, with_kwargs=True, prepend=True)
    skipped = layers[:layer_index]
    passthrough = spec_for(model).layer_output.passthrough
    # An instance attribute shadows the class's forward; one already there (accelerate's device hooks) is put back.
    saved = [layer.__dict__.get("forward") for layer in skipped]
    # A skipped layer sharded by FSDP2 (training.sharding) would still gather its weights in its forward hooks, for
    # a pass-through: its hooks are set aside while it is skipped (every process skips the same layers).
    hooks = [(layer._forward_pre_hooks, layer._forward_hooks) if _is_fsdp(layer) else None for layer in skipped]
    for layer, held in zip(skipped, hooks):
        layer.forward = passthrough
        if held is not None:
            layer._forward_pre_hooks, layer._forward_hooks = OrderedDict(), OrderedDict()
    try:
        return model(inputs_embeds=hidden_states, attention_mask=attention_mask, **forward_kwargs)
    finally:
        handle.remove()
        for layer, forward, held in zip(skipped, saved, hooks):
            if forward is None:
                del layer.forward
            else:
                layer.forward = forward
            if held is not None:
                layer._forward_pre_hooks, layer._forward_hooks = held


def _is_fsdp(module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def _cache_layer_kinds(model) -> tuple[list[type] | None, str | None]:
    """The transformers cache layer class of every decoder layer (None and a sentence when there is none)."""
    from transformers import DynamicCache

    config = _unwrap(model).config
    try:
        kinds = [type(layer) for layer in DynamicCache(config=config).layers]
    except Exception as exc:  # a family whose layers need their own cache class
        return None, f"{config.model_type} layers need their own cache ({type(exc).__name__}); prefix caching is off"
    if len(kinds) != len(decoder_layers(model)):
        return None, f"{config.model_type} keeps a cache of its own layout; prefix caching is off"
    return kinds, None


def prefix_cache_problem(model) -> str | None:
    """None when attention keys/values of a prefix (``attend_to_prefix``) reproduce the uncached forward for any
    prompt length; otherwise one sentence naming the layers that prevent it."""
    from transformers.cache_utils import DummyLayer, DynamicLayer

    config = _unwrap(model).config
    spec_for(model)
    kinds, problem = _cache_layer_kinds(model)
    if problem:
        return problem
    types = getattr(config, "layer_types", None) or [kind.__name__ for kind in kinds]
    other = [i for i, kind in enumerate(kinds) if kind not in (DynamicLayer, DummyLayer)]
    if other:
        named = ", ".join(f"{i} ({types[i]})" for i in other)
        return (f"{config.model_type} layers {named} keep more than attention keys/values (a window, a recurrent "
                "or convolution state, indexer keys), which a key/value prefix cache cannot reproduce; "
                "prefix caching is off")
    return None


def prefix_cache_exact(model, length: int | None = None) -> bool:
    """Whether a reused prefix cache reproduces the full forward: always when every layer keeps plain attention
    keys/values; with sliding-window layers only for sequences of at most the window (``length``; unknown length:
    not exact); never with a recurrent, convolution or indexer state (linear attention, Mamba, LFM2's short
    convolutions, DeepSeek-V3.2)."""
    from transformers.cache_utils import DummyLayer, DynamicLayer, DynamicSlidingWindowLayer

    kinds, problem = _cache_layer_kinds(model)
    if problem:
        return False
    if any(kind not in (DynamicLayer, DummyLayer, DynamicSlidingWindowLayer) for kind in kinds):
        return False
    window = getattr(_unwrap(model).config, "sliding_window", None)
    sliding = DynamicSlidingWindowLayer in kinds
    return not sliding or (length is not None and window is not None and length <= window)

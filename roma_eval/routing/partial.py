"""Run a model from decoder layer k upward, on hidden states computed once.

When only routers at layers >= k change (RoMA's tuned layers, the oracle's and C3PO's steered
layers), the hidden states entering layer k cannot change: compute them once
(``capture_layer_input``) and run only layers k.. plus the final norm and head
(``run_from_layer``).  ``run_from_layer`` temporarily swaps the model's decoder-layer list for
its tail and feeds the cached states as ``inputs_embeds``, so the model's own forward still builds
the causal mask, rotary embeddings and cache; attention modules keep their absolute ``layer_idx``.
This holds for every supported family because none rescales ``inputs_embeds``.

The same reasoning for positions: a causal prefix does not change when routing at a later token
changes, so its keys and values are computed once (``prefix_keys_values``) and later forwards attend
to them (``attend_to_prefix``).  That is exact only if the cache keeps every prefix token: a
sliding-window layer keeps the last W, so ``prefix_cache_exact`` is the one policy both the oracle
(which then runs uncached) and C3PO (which then refuses) follow.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from roma_eval.routing.arch import _unwrap, decoder_layers


class _Stop(Exception):
    pass


@contextmanager
def capture_layer_input(model, layer_index: int, stop: bool = False):
    """Record the hidden states entering decoder layer ``layer_index`` (the final norm when the index
    is past the last layer) during the next forward(s): ``captured["hidden_states"]`` is
    (batch, seq, hidden).  With ``stop`` the forward ends there and the ``with`` block goes on."""
    inner = getattr(_unwrap(model), "model", _unwrap(model))
    layers = decoder_layers(model)
    module = layers[layer_index] if layer_index < len(layers) else inner.norm
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
    one for every forward: the forward's own update appends to it."""
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


def prefix_cache_exact(model, length: int | None = None) -> bool:
    """Whether a reused prefix cache reproduces the full forward: always without sliding-window layers, and
    with them only for sequences of at most the window (``length``; unknown length: not exact)."""
    from transformers import DynamicCache

    window = getattr(model.config, "sliding_window", None)
    sliding = any(getattr(layer, "is_sliding", False) for layer in DynamicCache(config=model.config).layers)
    return not sliding or (length is not None and window is not None and length <= window)


def run_from_layer(model, layer_index: int, hidden_states: torch.Tensor, attention_mask=None, **forward_kwargs):
    """The model's output when ``hidden_states`` enter decoder layer ``layer_index`` (layers below are skipped)."""
    inner = getattr(_unwrap(model), "model", _unwrap(model))
    layers, config = inner.layers, inner.config
    layer_types = getattr(config, "layer_types", None)
    inner.layers = torch.nn.ModuleList(list(layers)[layer_index:])
    if layer_types is not None:
        # Qwen2-MoE picks each layer's mask type by its position in the list, while caches are sized
        # by the list's length: rotate it, so position i names layer k+i and the length is kept.
        config.layer_types = list(layer_types)[layer_index:] + list(layer_types)[:layer_index]
    try:
        return model(inputs_embeds=hidden_states, attention_mask=attention_mask, **forward_kwargs)
    finally:
        inner.layers = layers
        if layer_types is not None:
            config.layer_types = layer_types

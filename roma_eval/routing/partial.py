"""Run a model from decoder layer k upward, on hidden states computed once.

When only routers at layers >= k change (RoMA's tuned layers, the oracle's and C3PO's steered
layers), the hidden states entering layer k cannot change: compute them once
(``capture_layer_input``) and run only layers k.. plus the final norm and head
(``run_from_layer``).  ``run_from_layer`` temporarily swaps the model's decoder-layer list for
its tail and feeds the cached states as ``inputs_embeds``, so the model's own forward still builds
the causal mask, rotary embeddings and cache; attention modules keep their absolute ``layer_idx``.
This holds for every supported family because none rescales ``inputs_embeds``.
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

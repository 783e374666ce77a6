"""Where tensors go when a model may be split across devices (``device_map="auto"``, lm-eval's ``parallelize=True``).

A model on one device has one answer; a split model has three: token ids and hidden states fed to the model
go to its input embedding's device (accelerate moves activations between layers itself), logits come back on
its output head's device, and a key/value cache of decoder layer i must live on layer i's device.  The
methods ask these, never ``next(model.parameters()).device`` (the first parameter can sit anywhere).
"""

from __future__ import annotations

import torch


def input_device(model) -> torch.device:
    """The device of the input embedding: token ids and cached hidden states go there."""
    return model.get_input_embeddings().weight.device


def input_dtype(model) -> torch.dtype:
    """The dtype of the model's activations (its input embedding's)."""
    return model.get_input_embeddings().weight.dtype


def layer_device(model, index: int) -> torch.device:
    """The device of decoder layer ``index`` (where its cached keys and values must be)."""
    from roma_eval.routing.arch import decoder_layers

    return next(decoder_layers(model)[index].parameters()).device


def accelerator_present(device) -> bool:
    return torch.device(device).type != "cpu"

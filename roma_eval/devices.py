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


def process_state():
    """accelerate's ``PartialState`` of this process.  On a machine without an accelerator, processes started by
    ``torchrun --nproc_per_node N`` (or ``accelerate launch --multi_gpu``) form one CPU group (gloo): a plain
    ``PartialState()`` would leave each of them alone, running everything (``accelerate launch --cpu`` starts
    one process unless mpirun is set up).  The first call in a process decides; later ones return the same."""
    import os

    from accelerate import PartialState

    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return PartialState(cpu=use_cpu or not torch.accelerator.is_available())


def data_parallel(lm) -> None:
    """Under ``accelerate launch``, let lm-eval hand each process its share of the requests and gather the answers on
    the main process.  lm-eval's HFLM arranges that itself only when it sees more than one GPU; with CPU processes
    it would evaluate every request in every process.  ``lm`` is an HFLM after its ``__init__``."""
    accelerator = getattr(lm, "accelerator", None)
    if accelerator is not None and accelerator.num_processes > 1 and lm.world_size == 1:
        lm._rank, lm._world_size = accelerator.process_index, accelerator.num_processes


def from_main_process(value, state):
    """``value`` of the main process, in every process of ``state`` (``process_state()``)."""
    if state.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value])[0]


def sum_across_processes(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each tensor summed over the processes, in one all-reduce of a flat buffer (same shapes and order everywhere)."""
    from accelerate.utils import reduce

    flat = reduce(torch.cat([t.flatten() for t in tensors]), reduction="sum")
    return [part.view_as(t) for t, part in zip(tensors, flat.split([t.numel() for t in tensors]))]

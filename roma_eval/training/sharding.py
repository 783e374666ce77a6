"""Router training with the frozen weights sharded across processes: PyTorch FSDP2 (``fully_shard``), configured the
way accelerate users configure it.

`accelerate config` (FSDP, ``fsdp_version: 2``) then `accelerate launch -m roma_eval.cli train ...` sets
``ACCELERATE_USE_FSDP=true`` in every process; torchrun users set it themselves.  Each process then holds 1/N of every
frozen weight: every decoder layer, the input embeddings and the tail (final norm, LM head) are FSDP units whose
weights are gathered for their forward (and for the backward through them) and freed after.  The routers are left
out of sharding (``ignored_params``): every process holds them whole, as the optimiser updates them, and their
gradients are summed across processes as in data-parallel training (``recipe._sum_gradients``).  Everything else in
the recipe is unchanged: each process holds every N-th sample, the base pass and the layer cache are computed once,
and the layers below the first tuned layer never run during training (with ``no_layer_cache`` they run without
gradients: nothing below the first tuned router requires one).

accelerate's own ``prepare`` shards a model together with an optimiser over its parameters, and only on GPUs; the
router recipe keeps fp32 master copies of the routers outside the model, so the units are made here, with
accelerate's plugin settings (``reshard_after_forward``, CPU offload) read from the same configuration.

FSDP's collectives need every process to run the same units the same number of times: a process that holds none of
a batch (or fewer base-pass batches) runs an idle forward on a stand-in input (``RouterTraining.idle_forward``).
"""

from __future__ import annotations

import os

from roma_eval import registry
from roma_eval.errors import RomaEvalError

FSDP_ENV = "ACCELERATE_USE_FSDP"  # what `accelerate launch` sets from an FSDP configuration
# The verbs that shard: the router-training ones.  The oracle and C3PO change each sample's routing inside one
# forward and keep device_map (`--parallelize`, lm-eval's parallelize=True) for a model larger than one GPU.
SHARDED_VERBS = tuple(dict.fromkeys(m.verb for m in registry.METHODS
                                    if m.trains and m.artefact == registry.ROUTER_CHECKPOINT))


def sharding_requested() -> bool:
    """Whether this run was launched with an FSDP configuration (``ACCELERATE_USE_FSDP=true``)."""
    return os.environ.get(FSDP_ENV, "false").lower() == "true"


def _plugin():
    """accelerate's FSDP settings for this launch (its environment: `accelerate config`, `accelerate launch` flags)."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    return FullyShardedDataParallelPlugin()


def shard_frozen_weights(model, dist) -> None:
    """Shard ``model``'s weights across the ``dist.num_processes`` processes (FSDP2 units: each decoder layer, the
    input embeddings, the final norm with the LM head, the rest at the root), the routers excepted: they stay whole
    on every process, on its device.  In place; the model may be on the CPU (each shard moves to the process's
    device, so a model larger than one GPU never has to fit on one)."""
    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from roma_eval.routing import routers
    from roma_eval.routing.arch import decoder_layers, final_norm

    plugin = _plugin()
    device = torch.device(dist.device)
    router_modules = list(routers(model).values())
    units = {"mesh": init_device_mesh(device.type, (dist.num_processes,)),
             "ignored_params": {p for module in router_modules for p in module.parameters()},
             "offload_policy": plugin.cpu_offload}
    for layer in decoder_layers(model):
        fully_shard(layer, reshard_after_forward=plugin.reshard_after_forward, **units)
    embeddings, head = model.get_input_embeddings(), model.get_output_embeddings()
    tail = [module for module in (final_norm(model), head) if module is not None]
    if head is not None and embeddings.weight is head.weight:  # tied: one unit holds the shared weight
        tail.insert(0, embeddings)
    else:
        fully_shard(embeddings, reshard_after_forward=plugin.reshard_after_forward, **units)
    if tail:  # used last in the forward and first in the backward: kept gathered between them
        fully_shard(tail, reshard_after_forward=False, **units)
    fully_shard(model, **units)
    for module in router_modules:
        module.to(device)


def lockstep(count: int, dist) -> int:
    """The largest ``count`` over the processes: how many times each must run a unit so that all run it alike."""
    if dist.num_processes == 1:
        return count
    import torch
    import torch.distributed as torch_dist

    value = torch.tensor([count], device=dist.device)
    torch_dist.all_reduce(value, op=torch_dist.ReduceOp.MAX)
    return int(value.item())


def check_sharding(verb: str) -> None:
    """One line for a verb started with an FSDP configuration it cannot use: a verb that does not shard, or FSDP1."""
    if not sharding_requested():
        return
    if verb not in SHARDED_VERBS:
        raise RomaEvalError(f"{verb} does not shard a model with FSDP ({FSDP_ENV}=true: `accelerate launch` with an "
                            f"FSDP configuration); only {', '.join(SHARDED_VERBS)} do. For a model larger than one "
                            "GPU run it in one process with device_map (`roma-eval oracle --parallelize`, lm-eval's "
                            "parallelize=True), or launch it without FSDP")
    if (version := os.environ.get("FSDP_VERSION", "1")) != "2":  # accelerate's default is FSDP1
        raise RomaEvalError(f"the FSDP configuration asks for FSDP version {version}; router training shards with "
                            "FSDP2: set fsdp_version: 2 in `accelerate config` (FSDP_VERSION=2 under torchrun)")


def is_sharded(model) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)

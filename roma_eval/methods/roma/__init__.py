"""RoMA: Routing Manifold Alignment router post-training (arXiv 2511.07419; docs/roma.md).

    from roma_eval.methods.roma import RomaConfig, train_roma

lm-eval: ``--model roma --model_args pretrained=M,router_checkpoint=DIR``.  Submodules load on first use.
"""

from roma_eval._lazy import lazy_exports

_EXPORTS = {"RomaConfig": "config", "train_roma": "train", "TrainResult": "train", "RomaLM": "lm_eval"}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)

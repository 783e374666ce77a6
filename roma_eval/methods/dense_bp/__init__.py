"""Dense BP: router post-training with a dense router gradient (Dense BP's Default MoE, arXiv 2504.12463;
docs/baselines.md).

    from roma_eval.methods.dense_bp import DenseBPConfig, train_dense_bp

lm-eval: ``--model roma --model_args pretrained=M,router_checkpoint=DIR`` (a router checkpoint like RoMA's).
"""

from roma_eval._lazy import lazy_exports

_EXPORTS = {"DenseBPConfig": "config", "train_dense_bp": "train"}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)

"""Oracle Tuning: routers trained to reproduce the oracle's per-sample routing on the training mixture
(docs/baselines.md).

    from roma_eval.methods.oracle_tuning import OracleTuningConfig, train_oracle_tuning

The targets come from `roma-eval oracle --split train --save_routing`; lm-eval:
``--model roma --model_args pretrained=M,router_checkpoint=DIR``.
"""

from roma_eval._lazy import lazy_exports

_EXPORTS = {"OracleTuningConfig": "config", "train_oracle_tuning": "train", "OracleTargets": "train",
            "load_oracle_targets": "train"}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)

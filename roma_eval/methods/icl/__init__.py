"""ICL: each evaluation document gets the k nearest *successful* training-mixture samples as in-context examples,
in lm-eval's own few-shot format, and lm-eval evaluates it (docs/baselines.md).

    from roma_eval.methods.icl import IclConfig, build_demonstrations, run_icl

`roma-eval icl --pretrained M --tasks roma_paper --train_tasks roma_paper_train --output_path OUT` writes what
`lm_eval --output_path OUT --log_samples` writes (config.model "icl") and the demonstrations chosen.
"""

from roma_eval._lazy import lazy_exports

_EXPORTS = {"IclConfig": "config", "Demonstrations": "demonstrations", "build_demonstrations": "demonstrations",
            "demonstration": "demonstrations", "RetrievedSampler": "lm_eval",
            "install_demonstrations": "lm_eval", "run_icl": "lm_eval", "IclRun": "lm_eval", "RunSettings": "lm_eval"}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)

"""The methods behind the rows of the paper's Table 1, one package each; ``roma_eval/registry.py`` lists every
row with the verb, settings class, artefact and lm-eval model that produce it.

Each package has the same shape: ``config.py`` (a dataclass of the method's settings, the verb's flags; each
default says whether it is the paper's, the released code's or ours, docs/paper.md), the algorithm, and, where
lm-eval needs one, ``lm_eval.py`` (its lm-eval model or adapter).

  roma/           RoMA router post-training (arXiv 2511.07419) and Router Tuning -> a router checkpoint -> ``roma``
  c3po/           C3PO test-time re-mixing (arXiv 2504.07964) -> a reference set -> lm-eval model ``c3po``
  oracle/         per-sample routing descent with the gold label (the upper bound) -> lm-eval results
  icl/            retrieved in-context examples -> lm-eval's few-shot sampler -> lm-eval results
  oracle_tuning/  routers trained towards the oracle's routing -> a router checkpoint -> ``roma``
  dense_bp/       router training with a dense router gradient (routing/dense.py) -> a router checkpoint -> ``roma``
  peft_tuning/    prefix / prompt tuning (peft) -> a peft adapter -> lm-eval model ``hf-peft``

The trained rows share RoMA's training budget and schedules (``roma_eval/training/``).
"""

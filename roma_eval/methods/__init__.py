"""The three routing methods, one package each with the same shape: ``config.py`` (a dataclass of the
method's settings, defaults from its paper), the algorithm, and ``lm_eval.py`` (its lm-eval adapter).

  roma/    RoMA router post-training (arXiv 2511.07419) -> a router checkpoint -> lm-eval model ``roma``
  c3po/    C3PO test-time re-mixing (arXiv 2504.07964) -> a reference set -> lm-eval model ``c3po``
  oracle/  per-sample routing descent with the gold label (the upper bound) -> lm-eval results

The rest of Table 1 (docs/baselines.md), the same shape:
  icl/            retrieved in-context examples -> lm-eval's few-shot sampler -> lm-eval results ("icl")
  oracle_tuning/  routers trained towards the oracle's routing (RoMA's loop) -> a router checkpoint -> ``roma``
  dense_bp/       router training with a dense router gradient (routing/dense.py) -> a router checkpoint -> ``roma``
  peft_tuning/    prefix / prompt tuning (peft) -> a peft adapter -> lm-eval model ``hf-peft``
  budget.py       the training budget they share with RoMA
"""

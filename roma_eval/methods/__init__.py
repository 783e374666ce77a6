"""The three routing methods, one package each with the same shape: ``config.py`` (a dataclass of the
method's settings, defaults from its paper), the algorithm, and ``lm_eval.py`` (its lm-eval adapter).

  roma/    RoMA router post-training (arXiv 2511.07419) -> a router checkpoint -> lm-eval model ``roma``
  c3po/    C3PO test-time re-mixing (arXiv 2504.07964) -> a reference set -> lm-eval model ``c3po``
  oracle/  per-sample routing descent with the gold label (the upper bound) -> lm-eval results
"""

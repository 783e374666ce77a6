"""roma-eval: RoMA, C3PO and oracle routing for Mixture-of-Experts LLMs, on lm-evaluation-harness.

Kept import-light on purpose: ``import roma_eval`` runs at interpreter start-up through the
lm-eval registration shim, so nothing heavy (torch, transformers, lm_eval) is imported here.
"""

__version__ = "0.1.0"

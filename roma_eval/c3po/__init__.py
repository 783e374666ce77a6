"""C3PO: test-time expert re-mixing from a reference set (arXiv 2504.07964), the baseline RoMA is compared to.

    reference = build_reference(model, tokenizer, train_samples, "ref/", base_model="M")
    c3po = C3PO(model, load_reference("ref/"), C3POConfig(method="ngd"))
    results = c3po.score_samples(tokenizer, test_samples)

lm-eval: ``--model c3po --model_args pretrained=M,reference=ref/,method=ngd``.  docs/c3po.md has the details.
"""

from roma_eval.c3po.config import METHODS, C3POConfig
from roma_eval.c3po.engine import C3PO, steer_generation
from roma_eval.c3po.frozen import Frozen, Problem, TailBatch, freeze
from roma_eval.c3po.reference import Reference, build_reference, check_reference, load_reference

__all__ = ["C3PO", "C3POConfig", "Frozen", "METHODS", "Problem", "Reference", "TailBatch", "build_reference",
           "check_reference", "freeze", "load_reference", "steer_generation"]

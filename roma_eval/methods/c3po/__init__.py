"""C3PO: test-time expert re-mixing from a reference set (arXiv 2504.07964; docs/c3po.md), the baseline RoMA
is compared to.

    reference = build_reference(model, tokenizer, train_samples, "ref/", ReferenceBuild(base_model="M"))
    c3po = C3PO(model, load_reference("ref/"), C3POConfig(method="ngd"))
    results = c3po.score_samples(tokenizer, test_samples)

lm-eval: ``--model c3po --model_args pretrained=M,reference=ref/``.  Submodules load on first use.
"""

from roma_eval._lazy import lazy_exports

_EXPORTS = {
    "C3POConfig": "config", "ReferenceBuild": "config", "C3PO": "engine", "steer_generation": "engine",
    "Frozen": "frozen", "Problem": "frozen", "TailBatch": "frozen", "freeze": "frozen",
    "Reference": "reference", "build_reference": "reference", "check_reference": "reference",
    "load_reference": "reference", "C3POLM": "lm_eval",
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)

"""roma-eval: RoMA, C3PO and oracle routing for Mixture-of-Experts LLMs, on lm-evaluation-harness.

    from roma_eval import RomaConfig, load_model, load_samples, train_roma
    model, tokenizer = load_model("allenai/OLMoE-1B-7B-0125-Instruct", dtype="bfloat16")
    train_roma(model, tokenizer, load_samples(["roma_paper_train"], split="train"), "runs/roma", RomaConfig(),
               base_model="allenai/OLMoE-1B-7B-0125-Instruct")

Names load on first use: ``import roma_eval`` runs at interpreter start-up through the lm-eval
registration shim, so nothing heavy (torch, transformers, lm_eval) may be imported here.
"""

from roma_eval._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    # the methods
    "RomaConfig": "roma_eval.methods.roma.config", "train_roma": "roma_eval.methods.roma.train",
    "C3POConfig": "roma_eval.methods.c3po.config", "C3PO": "roma_eval.methods.c3po.engine",
    "build_reference": "roma_eval.methods.c3po.reference", "load_reference": "roma_eval.methods.c3po.reference",
    "ReferenceBuild": "roma_eval.methods.c3po.config",
    "OracleConfig": "roma_eval.methods.oracle.config", "run_oracle": "roma_eval.methods.oracle.run",
    "load_oracle_tasks": "roma_eval.methods.oracle.tasks",
    # their artefacts, data and model
    "load_router_checkpoint": "roma_eval.checkpoint", "apply_router_checkpoint": "roma_eval.checkpoint",
    "save_router_checkpoint": "roma_eval.checkpoint", "RouterRecord": "roma_eval.checkpoint",
    "load_samples": "roma_eval.samples",
    "score_samples": "roma_eval.scoring", "load_model": "roma_eval.model_loading",
    # the routing seam
    "probe_routing": "roma_eval.routing", "steer_routing": "roma_eval.routing", "resolve_layers": "roma_eval.routing",
    # results
    "load_runs": "roma_eval.results", "build_report": "roma_eval.report.build",
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)

"""The routing analysis: what each run's routers do on its own lm-eval samples (docs/analysis.md).

    from roma_eval.analysis import AnalysisConfig, analyse_runs, find_runs

Expert load, dead and overloaded experts, routing entropy and top-k margin per layer; how far a run moved the routing
from its base model's; and the manifold hypothesis of RoMA (arXiv 2511.07419) as numbers: how far samples that are
neighbours in the embedding space are neighbours in the routing space.  `roma-eval analyze` writes it as
``routing_analysis.json`` and a routing dump beside each run's lm-eval results.  Submodules load on first use: the
report reads dumps (``dump``) without torch.
"""

from roma_eval._lazy import lazy_exports

_EXPORTS = {
    "AnalysisConfig": "config", "RoutingDump": "dump", "read_routing_dump": "dump", "write_routing_dump": "dump",
    "DUMP_NAME": "dump", "ANALYSIS_FILE": "runs", "RunToAnalyse": "runs", "find_runs": "runs", "read_run": "runs",
    "analyse_runs": "analyse", "Where": "analyse", "collect_routing": "collect", "Routing": "collect",
    "NotAnalysable": "runs", "dump_bytes": "dump",
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)

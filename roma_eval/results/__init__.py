"""lm-eval's result files, read into runs and scores: ``runs`` (the files), ``provenance`` (which method a run
evaluates and what its training cost), ``columns`` (the paper's benchmark columns and metrics), ``routing`` (the
routing analysis `roma-eval analyze` writes beside a run).  The names other modules use are importable from here."""

from roma_eval.results.columns import (
    DEFAULT_METRICS,
    PAPER_COLUMNS,
    TOY_PREFIX,
    choose_metric,
    column_of,
    metric_preferences,
    parse_metric_overrides,
    wanted_metrics,
)
from roma_eval.results.provenance import (
    ARTEFACT_ARGS,
    TrainingCost,
    adapter_method,
    checkpoint_method,
    find_artefact,
    method_of,
    parse_model_args,
    router_method,
    same_model_args,
    training_cost,
)
from roma_eval.results.routing import (
    ANALYSIS_FILE,
    Alignment,
    LayerRouting,
    RoutingAnalysis,
    find_routing_analysis,
    read_routing_analysis,
)
from roma_eval.results.runs import (
    Benchmark,
    Run,
    SampleScore,
    Score,
    Variant,
    find_results_files,
    latest_cells,
    load_run,
    load_runs,
    results_files,
    split_label,
    tidy,
)

__all__ = [
    "ANALYSIS_FILE", "ARTEFACT_ARGS", "DEFAULT_METRICS", "PAPER_COLUMNS", "TOY_PREFIX", "Alignment", "Benchmark",
    "LayerRouting", "RoutingAnalysis", "Run", "SampleScore", "Score", "TrainingCost", "Variant", "adapter_method",
    "checkpoint_method", "choose_metric", "column_of", "find_artefact", "find_results_files", "find_routing_analysis",
    "latest_cells", "load_run", "load_runs", "method_of", "metric_preferences", "parse_metric_overrides",
    "parse_model_args", "read_routing_analysis", "results_files", "router_method", "same_model_args", "split_label",
    "tidy", "training_cost", "wanted_metrics",
]

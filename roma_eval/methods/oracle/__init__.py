"""The oracle routing upper bound: per-sample routing gradient descent with the gold label (docs/oracle.md).

    from roma_eval.methods.oracle import OracleConfig, load_oracle_tasks, run_oracle, descend

Submodules load on first use, so importing the package (e.g. for `roma-eval --help`) stays light.
"""

from roma_eval._lazy import lazy_exports

_EXPORTS = {
    "OracleConfig": "config", "descend": "descent", "Outcome": "descent", "Iterate": "descent",
    "load_oracle_tasks": "tasks", "OracleTasks": "tasks", "run_oracle": "run", "gap_table": "gap",
    "OracleStore": "store", "load_oracle_routing": "store", "OracleLM": "lm_eval", "OracleSolver": "solver",
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)

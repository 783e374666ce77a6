"""The oracle routing upper bound: per-sample routing gradient descent with the gold label (docs/oracle.md).

    from roma_eval.oracle import OracleConfig, load_oracle_tasks, run_oracle, descend

Submodules load on first use, so importing the package (e.g. for `roma-eval --help`) stays light.
"""

from importlib import import_module

_EXPORTS = {
    "OracleConfig": "config", "descend": "descent", "Outcome": "descent", "Iterate": "descent",
    "load_oracle_tasks": "tasks", "OracleTasks": "tasks", "run_oracle": "run", "gap_table": "run",
    "OracleStore": "store", "load_oracle_routing": "store", "OracleLM": "lm_eval",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)

"""Where roma-eval's bundled files live, in a source checkout and in an installed wheel."""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def tasks_dir() -> Path:
    """The lm-eval task YAMLs: ``roma_eval/tasks`` in a wheel, ``tasks/`` at the top of a checkout."""
    for candidate in (_PACKAGE / "tasks", _PACKAGE.parent / "tasks"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"roma-eval's tasks/ directory is missing next to {_PACKAGE}; reinstall roma-eval")

"""``python -m roma_eval.lm_eval_cli ARGS``: exactly ``lm_eval ARGS``, with ``--model roma`` / ``c3po`` registered.

Python reads ``roma_eval_lm_eval.pth`` (the registration shim) only from site directories, so after
``pip install --target DIR`` with ``PYTHONPATH=DIR`` plain ``lm_eval`` does not know those models.  This entry point
registers them itself, then runs lm-eval's own command line (``roma-eval eval`` runs it too).  Several processes:
``accelerate launch -m roma_eval.lm_eval_cli ARGS``.
"""

from __future__ import annotations

import os
import sys

UNKNOWN_TASKS = "Tasks not found:"  # the start of lm-eval's error for task names it does not know


def main() -> None:
    import lm_eval.models  # noqa: F401  (lm-eval's own models first; an active shim has registered ours already)
    from lm_eval.__main__ import cli_evaluate
    from lm_eval.api.registry import model_registry

    from roma_eval._registration.hook import register

    register(model_registry)
    try:
        cli_evaluate()
    except ValueError as exc:
        # lm-eval checks the task names before it loads the model, and raises this for unknown ones: one line, as
        # every roma-eval verb refuses unknown tasks.
        if not str(exc).startswith(UNKNOWN_TASKS):
            raise
        print(f"{os.environ.get('ROMA_EVAL_PROG', 'lm_eval')}: error: unknown task(s) "
              f"{str(exc)[len(UNKNOWN_TASKS):].strip()}; check the names with `lm_eval ls tasks` or pass "
              "--include_path DIR holding their YAMLs", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

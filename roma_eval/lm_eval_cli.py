"""``python -m roma_eval.lm_eval_cli ARGS``: exactly ``lm_eval ARGS``, with ``--model roma`` / ``c3po`` registered.

Python reads ``roma_eval_lm_eval.pth`` (the registration shim) only from site directories, so after
``pip install --target DIR`` with ``PYTHONPATH=DIR`` plain ``lm_eval`` does not know those models.  This entry point
registers them itself, then runs lm-eval's own command line (``roma-eval eval`` runs it too).  Several processes:
``accelerate launch -m roma_eval.lm_eval_cli ARGS``.
"""

from __future__ import annotations


def main() -> None:
    import lm_eval.models  # noqa: F401  (lm-eval's own models first; an active shim has registered ours already)
    from lm_eval.__main__ import cli_evaluate
    from lm_eval.api.registry import model_registry

    from roma_eval._registration.hook import register

    register(model_registry)
    cli_evaluate()


if __name__ == "__main__":
    main()

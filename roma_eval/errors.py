"""User-facing errors: one sentence naming the bad input and the fix, never a deep traceback."""

import sys


class RomaEvalError(ValueError):
    """A mistake in what the user gave us (a path, a model, a flag).  The message says how to fix it."""


def _one_line_excepthook(exc_type, exc, tb, _previous=sys.excepthook):
    if issubclass(exc_type, RomaEvalError):
        print(f"error: {exc}", file=sys.stderr)
        return
    _previous(exc_type, exc, tb)


def report_in_one_line() -> None:
    """Inside lm-eval's own CLI (`lm_eval --model roma ...`) our mistakes would end in lm-eval's 40-line
    traceback: the lm-eval adapters call this when lm-eval loads them, so an uncaught RomaEvalError prints
    one line instead.  Other exceptions keep the default hook; roma-eval's CLI catches its own."""
    sys.excepthook = _one_line_excepthook

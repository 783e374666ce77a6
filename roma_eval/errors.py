"""User-facing errors: one sentence naming the bad input and the fix, never a deep traceback."""

import sys


class RomaEvalError(ValueError):
    """A mistake in what the user gave us (a path, a model, a flag).  The message says how to fix it."""


def _one_line_excepthook(exc_type, exc, tb, _previous=sys.excepthook):
    # Plain `lm_eval --model roma ...` runs our code inside lm-eval's CLI; without this a bad
    # checkpoint path would end in a 40-line traceback.  Other exceptions keep the default hook.
    if issubclass(exc_type, RomaEvalError):
        print(f"error: {exc}", file=sys.stderr)
        return
    _previous(exc_type, exc, tb)


sys.excepthook = _one_line_excepthook

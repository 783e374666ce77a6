"""Our keys in lm-eval's ``--model_args``: refused when misspelt, instead of reaching transformers.

The ``roma`` and ``c3po`` models take lm-eval's ``hf`` model_args and their own in one namespace; ``hf`` hands every
key it does not know to transformers' ``from_pretrained`` (``attn_implementation=``, a config field such as
``output_router_logits=``), so a misspelt key of ours (``router_checkpont=``, ``c3po_metod=``) would end in a
TypeError deep inside transformers, or be silently dropped.  A key is ours to refuse when it starts with one of
our prefixes or is a close match (difflib, ratio >= 0.8) of one of our names, unless the ``hf`` model itself takes it;
every other key passes through to transformers, as with ``hf``.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable, Mapping

from roma_eval.errors import RomaEvalError

SIMILARITY = 0.8  # difflib's ratio above which a key is taken for a misspelling of ours


def base_model_args(model_class) -> set[str]:
    """The keyword arguments ``model_class.__init__`` takes by name (lm-eval's HFLM: pretrained=, dtype=, ...)."""
    parameters = inspect.signature(model_class.__init__).parameters.values()
    return {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self"}


def refuse_unknown_keys(model_args: Mapping, model: str, ours: Iterable[str], prefixes: tuple[str, ...],
                        base: set[str]) -> None:
    """Refuse a key of ``model_args`` that is neither one of ``ours`` nor in ``base`` (the ``hf`` model's own) and
    starts with one of ``prefixes`` or looks like one of ``ours``; name the closest of ours and list them."""
    ours = sorted(ours)
    for key in model_args:
        if key in ours or key in base:
            continue
        close = difflib.get_close_matches(key, ours, n=1, cutoff=SIMILARITY)
        if close or key.startswith(prefixes):
            hint = f"did you mean {close[0]}=? " if close else ""
            raise RomaEvalError(f"model_args {key}= is not a {model} setting; {hint}{model}'s own are "
                                f"{', '.join(name + '=' for name in ours)} (and every hf model_arg)")

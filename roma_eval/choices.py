"""``Literal`` fields of the methods' config dataclasses: the command line offers them as choices
(HfArgumentParser); ``check_choices`` refuses anything else from Python callers, in one line."""

from __future__ import annotations

from dataclasses import fields
from typing import Literal, get_args, get_origin, get_type_hints

from roma_eval.errors import RomaEvalError


def choices(config_cls, name: str) -> tuple:
    return get_args(get_type_hints(config_cls)[name])


def check_choices(config) -> None:
    hints = get_type_hints(type(config))
    for f in fields(config):
        allowed = get_args(hints[f.name]) if get_origin(hints[f.name]) is Literal else None
        if allowed and getattr(config, f.name) not in allowed:
            raise RomaEvalError(f"{f.name}={getattr(config, f.name)!r} is unknown; use one of {', '.join(allowed)}")

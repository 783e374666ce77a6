"""Numbers as the report's tables and the regression gate print them (half-up rounding, signed differences,
intervals); the lowest floor of ``report``, importing nothing of it."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

MISSING = "—"


def fmt(value: float | None, digits: int = 1, sign: bool = False, suffix: str = "") -> str:
    """Round half up, the convention of published tables (Python's round() is half-even on binary floats:
    round(2.675, 2) == 2.67); float noise is cut first, so a mean computed as 2.67499999 counts as 2.675."""
    if value is None:
        return MISSING
    quantum = Decimal(1).scaleb(-digits)
    text = str(Decimal(repr(round(value, 9))).quantize(quantum, rounding=ROUND_HALF_UP))
    if text.startswith("-") and Decimal(text) == 0:
        text = text[1:]  # no "-0.0"
    if sign and not text.startswith("-"):
        text = "+" + text
    return text + suffix


def interval_text(low: float, high: float, digits: int = 1, sign: bool = True) -> str:
    """An interval: a difference's in points, both ends signed ("[-1.2, +3.4]"), or with ``digits`` and without
    signs, e.g. a fraction's ("[0.412, 0.538]")."""
    return f"[{fmt(low, digits, sign)}, {fmt(high, digits, sign)}]"

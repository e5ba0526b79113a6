"""Numbers rounded to what they mean, for notes, tables and verdict lines. No I/O.

``format_duration`` writes a length of time in the unit a person reads it in (``60 s``,
``1.5 min``, ``2.0 h``); ``bound_text`` writes a criterion's bound with its direction
(``≤ 12.5``, ``≥ 5``, ``= 0``, ``> 200``, ``< 1``, ``≠ 0``).
"""
from __future__ import annotations

import math
from typing import Any, Literal

SECONDS_PER_MINUTE = 60.0
SECONDS_PER_HOUR = 3600.0
#: below this many seconds a duration reads in seconds, below ``HOURS_FROM_S`` in minutes
MINUTES_FROM_S = 100.0
HOURS_FROM_S = 2.0 * SECONDS_PER_HOUR

MIB = 2**20  # bytes per MiB: the meaning of every *_mb name in soaklib


def format_duration(seconds: float | None) -> str:
    """A duration as a person reads it: ``0.089 s``, ``1.8 s``, ``60 s``, ``1.7 min``, ``45.0 min``, ``2.0 h``.

    Under 10 s two significant digits, under 100 s whole seconds, under 2 h minutes with
    one decimal, from 2 h hours with one decimal. None or NaN reads ``–``; a negative
    duration keeps its sign.
    """
    if seconds is None or not isinstance(seconds, (int, float)) or math.isnan(seconds):
        return "–"
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds == 0:
        return "0 s"
    if seconds < 10:
        return f"{seconds:.2g} s"
    if seconds < MINUTES_FROM_S:
        return f"{seconds:.0f} s"
    if seconds < HOURS_FROM_S:
        return f"{seconds / SECONDS_PER_MINUTE:.1f} min"
    return f"{seconds / SECONDS_PER_HOUR:.1f} h"


def format_number(value: Any) -> str:
    """A value for a table cell: floats to 3 significant digits, lists joined, None as ``–``."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)


def finite_or_none(value: Any) -> float | None:
    """``value`` as a finite float; None when it is missing, not a number, NaN or infinite."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def format_value(value: Any, fmt: str = "{:.3g}") -> str:
    """A value inside a sentence: floats through ``fmt``, ints as they are, None as ``–``."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return "–" if math.isnan(value) else fmt.format(value)
    return str(value)


Direction = Literal["max", "min", "eq", "in"]
_PASS_SIGN = {"max": "≤", "min": "≥", "eq": "="}
_FAIL_SIGN = {"max": ">", "min": "<", "eq": "≠"}


def bound_text(bound: Any, direction: str | None, *, kind: Literal["pass", "fail"]) -> str:
    """A criterion's bound with its direction, as the status rules apply it.

    ``max``: PASS if ≤ pass bound, FAIL if > fail bound; ``min``: PASS if ≥ pass bound,
    FAIL if < fail bound; ``eq``: PASS if = pass bound, FAIL if ≠ it; ``in``: one of the
    listed states. An unknown direction gives the bare value.
    """
    if bound is None:
        return "–"
    value = format_number(bound)
    if direction == "in":
        return f"one of {value}" if isinstance(bound, (list, tuple)) and len(bound) > 1 else value
    sign = (_PASS_SIGN if kind == "pass" else _FAIL_SIGN).get(direction or "")
    return f"{sign} {value}" if sign else value

"""Durations and bounds written as a person reads them (known values)."""
from __future__ import annotations

import pytest

from soaklib.analysis.units import bound_text, format_duration, format_number


@pytest.mark.parametrize("seconds, text", [
    (0.0890668, "0.089 s"), (1.8, "1.8 s"), (5.0, "5 s"), (59.8, "60 s"), (60.0, "60 s"), (99.0, "99 s"),
    (90.0, "90 s"), (100.0, "1.7 min"), (1800.0, "30.0 min"), (7199.0, "120.0 min"), (7200.0, "2.0 h"),
    (14400.0, "4.0 h"), (0.0, "0 s"), (None, "–"), (float("nan"), "–"), (-3.0, "-3 s"),
])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("bound, direction, kind, text", [
    (12.5, "max", "pass", "≤ 12.5"), (50.0, "max", "fail", "> 50"), (5, "min", "pass", "≥ 5"),
    (1, "min", "fail", "< 1"), (0, "eq", "pass", "= 0"), (0, "eq", "fail", "≠ 0"), (True, "eq", "pass", "= True"),
    (["never_down", "recovered"], "in", "pass", "one of never_down, recovered"), (["lost"], "in", "fail", "lost"),
    (None, "max", "pass", "–"), (0.041555, "min", "pass", "≥ 0.0416"), (7, None, "pass", "7"),
])
def test_bound_text_carries_the_direction(bound, direction, kind, text):
    assert bound_text(bound, direction, kind=kind) == text


def test_format_number():
    assert (format_number(0.0334), format_number(None), format_number([1, 2]), format_number(True)) == \
        ("0.0334", "–", "1, 2", "True")


def test_finite_or_none_keeps_only_finite_numbers() -> None:
    from soaklib.analysis.units import finite_or_none

    assert finite_or_none(3) == 3.0 and finite_or_none("2.5") == 2.5
    assert [finite_or_none(x) for x in (None, "x", float("nan"), float("inf"), [])] == [None] * 5

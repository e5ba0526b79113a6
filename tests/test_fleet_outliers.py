"""Robust z-scores of per-host values: known values, the MAD = 0 fallback, too few hosts."""
from __future__ import annotations

import math

import pytest

from soaklib.analysis.outliers import MAD_SCALE, Z_CUT, outliers, robust_z


def test_modified_z_score_known_values() -> None:
    z = robust_z({"a": 1, "b": 2, "c": 3, "d": 4, "e": 100})  # median 3, MAD 1
    assert z["c"] == 0 and z["e"] == pytest.approx(MAD_SCALE * 97) and z["a"] == pytest.approx(-2 * MAD_SCALE)
    found = outliers({"a": 1, "b": 2, "c": 3, "d": 4, "e": 100}, "slope")
    assert [(o.host, o.direction, o.median) for o in found] == [("e", "high", 3.0)]


def test_when_most_hosts_are_equal_the_floor_of_the_scale_decides() -> None:
    values = {"a": 5, "b": 5, "c": 5, "d": 5, "e": 9}  # MAD 0
    assert robust_z(values) == {"a": 0.0, "b": 0.0, "c": 0.0, "d": 0.0, "e": math.inf}
    assert robust_z(values, min_scale=2.0)["e"] == pytest.approx(2.0)
    assert [o.host for o in outliers(values, "slope")] == ["e"]
    assert [o.z for o in outliers(values, "slope", min_diff=1.0)] == [pytest.approx(4 * Z_CUT)]
    assert outliers(values, "slope", min_diff=5.0) == []  # 4 from the rest is less than 5
    flat_two = {"h1": 0.0, "h2": 0.0, "h3": 36000.0}  # two flat hosts and a leak: the leak is named
    assert [o.host for o in outliers(flat_two, "memory_slope_mb_per_h", min_diff=1.0)] == ["h3"]
    assert robust_z({"a": 2, "b": 2, "c": 2}) == {"a": 0.0, "b": 0.0, "c": 0.0}
    assert outliers({"a": 2, "b": 2, "c": 2}, "slope") == []


def test_too_few_hosts_non_finite_values_min_diff_and_high_only() -> None:
    assert outliers({"a": 0.0, "b": 1000.0}, "slope") == []  # two hosts: nothing to stand out against
    assert robust_z({"a": 1.0, "b": math.nan, "c": 2.0}).keys() == {"a", "c"}
    quiet = {"a": 0.01, "b": 0.02, "c": 0.015, "d": 0.012, "e": 0.5}  # many MADs, but 0.5 MB/h is no finding
    assert [o.host for o in outliers(quiet, "slope")] == ["e"]
    assert outliers(quiet, "slope", min_diff=1.0) == []
    low = {"a": 10, "b": 11, "c": 10.5, "d": 10.2, "e": -50}
    assert [o.direction for o in outliers(low, "slope")] == ["low"]
    assert outliers(low, "slope", high_only=True) == []

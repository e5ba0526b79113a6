"""Robust z-scores of per-host values: known values, the MAD = 0 fallback, too few hosts."""
from __future__ import annotations

import math

import pytest

from soaklib.analysis.outliers import MAD_SCALE, MEANAD_SCALE, outliers, robust_z


def test_modified_z_score_known_values() -> None:
    z = robust_z({"a": 1, "b": 2, "c": 3, "d": 4, "e": 100})  # median 3, MAD 1
    assert z["c"] == 0 and z["e"] == pytest.approx(MAD_SCALE * 97) and z["a"] == pytest.approx(-2 * MAD_SCALE)
    found = outliers({"a": 1, "b": 2, "c": 3, "d": 4, "e": 100}, "slope")
    assert [(o.host, o.direction, o.median) for o in found] == [("e", "high", 3.0)]


def test_when_most_hosts_are_equal_the_mean_absolute_deviation_stands_in() -> None:
    values = {"a": 5, "b": 5, "c": 5, "d": 5, "e": 9}  # MAD 0, mean absolute deviation 0.8
    assert robust_z(values)["e"] == pytest.approx(4 / (MEANAD_SCALE * 0.8))
    assert [o.host for o in outliers(values, "slope")] == ["e"]
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

"""Convergence trend: improving, flat, worsening, targets, and short inputs."""
from __future__ import annotations

import math

import numpy as np
import pytest

from soaklib.analysis.convergence import convergence_trend


def test_rising_to_one_is_improving_and_converged():
    x = np.arange(20)
    y = np.minimum(1.0, 0.1 + 0.06 * x)  # reaches 1.0 at x = 15 and holds
    r = convergence_trend(x, y, target=1.0, hold=3)
    assert r["trend"] == "improving" and r["kendall_tau"] > 0.8 and r["p_value"] < 0.05
    assert r["converged"] is True
    assert r["x_to_target"] == 15.0
    assert r["slope"] > 0 and r["slope_low"] <= r["slope"] <= r["slope_high"]
    assert (r["n"], r["first"], r["last"]) == (20, pytest.approx(0.1), 1.0)
    assert "Theil-Sen" in r["method"] and "Kendall" in r["method"]


def test_known_slope():
    x = np.arange(10.0)
    r = convergence_trend(x, 0.25 * x + 3.0)
    assert r["slope"] == pytest.approx(0.25) and r["kendall_tau"] == pytest.approx(1.0)


def test_flat_noise_is_flat():
    rng = np.random.default_rng(2)
    r = convergence_trend(np.arange(40), 0.3 + rng.normal(0, 0.05, 40), target=0.9)
    assert r["trend"] == "flat" and r["p_value"] >= 0.05
    assert r["converged"] is False and r["x_to_target"] is None


def test_worsening_detected_and_lower_is_better_flips_the_sign():
    x = np.arange(15)
    y = 0.9 - 0.04 * x
    assert convergence_trend(x, y)["trend"] == "worsening"
    r = convergence_trend(x, y, target=0.5, higher_is_better=False)
    assert r["trend"] == "improving"
    assert r["x_to_target"] == 10.0 and r["converged"] is True


def test_reached_but_not_held_is_not_converged():
    r = convergence_trend([0, 1, 2, 3, 4], [0.2, 0.5, 1.0, 0.6, 0.7], target=1.0)
    assert r["x_to_target"] == 2.0 and r["converged"] is False


@pytest.mark.parametrize("n", [0, 1, 2])
def test_short_inputs_are_safe(n):
    r = convergence_trend(list(range(n)), [0.5 + 0.1 * i for i in range(n)], target=0.5)
    assert r["n"] == n and r["trend"] == "insufficient"
    assert math.isnan(r["kendall_tau"]) and math.isnan(r["p_value"])
    if n < 2:
        assert math.isnan(r["slope"])
    else:
        assert r["slope"] == pytest.approx(0.1)
    assert r["converged"] is (n > 0)
    if n == 0:
        assert math.isnan(r["first"]) and r["x_to_target"] is None


def test_missing_values_dropped_and_unsorted_x_sorted():
    r = convergence_trend([3, 1, 2, 0, 4], [0.4, 0.2, None, 0.1, 0.5])
    assert r["n"] == 4 and r["first"] == 0.1 and r["last"] == 0.5


# --------------------------------------------------------------------------- isotonic fit (the curve drawn)


def test_isotonic_fit_of_a_step_is_the_step_where_theil_sen_is_flat():
    from soaklib.analysis.convergence import isotonic_fit

    x = np.arange(1.0, 25.0)
    y = np.where(x >= 8, 1.0, 0.0)  # hit rate 0 until cycle 7, then 1
    assert convergence_trend(x, y)["slope"] == 0.0  # the straight line misdescribes the step
    fx, fy = isotonic_fit(x, y)
    assert list(fx) == list(x) and list(fy) == list(y)


def test_isotonic_fit_pools_violators_to_their_mean():
    from soaklib.analysis.convergence import isotonic_fit

    fx, fy = isotonic_fit([1, 2, 3, 4], [1.0, 3.0, 2.0, 4.0])
    assert list(fx) == [1.0, 2.0, 3.0, 4.0] and list(fy) == [1.0, 2.5, 2.5, 4.0]
    _, down = isotonic_fit([1, 2, 3], [3.0, 2.0, 1.0])
    assert list(down) == [2.0, 2.0, 2.0]  # decreasing data: the best non-decreasing fit is the mean
    _, kept = isotonic_fit([1, 2, 3], [3.0, 2.0, 1.0], increasing=False)
    assert list(kept) == [3.0, 2.0, 1.0]


def test_isotonic_fit_ties_missing_values_and_empty_input():
    from soaklib.analysis.convergence import isotonic_fit

    fx, fy = isotonic_fit([1, 1, 2], [0.0, 2.0, 0.0])  # equal x: one value, weighted by its points
    assert list(fx) == [1.0, 2.0] and fy == pytest.approx([2 / 3, 2 / 3])
    fx, fy = isotonic_fit([1, 2, 3], [0.0, float("nan"), 1.0])
    assert list(fx) == [1.0, 3.0] and list(fy) == [0.0, 1.0]
    fx, fy = isotonic_fit([], [])
    assert fx.size == 0 and fy.size == 0
    fx, fy = isotonic_fit([5], [0.3])
    assert list(fy) == [0.3]

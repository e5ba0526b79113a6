"""Known values of the comparison statistics: MOVER slope differences, bootstrap shifts, Newcombe intervals."""
from __future__ import annotations

import math

import numpy as np
import pytest

from soaklib.analysis.compare import (
    RegressionRule,
    bootstrap_shift,
    interval_difference,
    plain_difference,
    rate_difference,
    wilson_interval,
)
from soaklib.errors import ParameterError


def test_mover_combines_symmetric_half_widths_in_quadrature() -> None:
    d = interval_difference("memory_slope_mb_per_h", (0.0, -4.0, 4.0), (10.0, 7.0, 13.0), unit="MiB/h")
    assert (d.delta, d.low, d.high) == (10.0, 5.0, 15.0)


def test_mover_keeps_asymmetric_intervals_asymmetric() -> None:
    # base 2 in [1, 6], new 5 in [4, 5]: low = 3 - sqrt(1 + 16), high = 3 + sqrt(0 + 1)
    d = interval_difference("m", (2.0, 1.0, 6.0), (5.0, 4.0, 5.0))
    assert d.delta == 3.0
    assert d.low == pytest.approx(3.0 - math.sqrt(17.0)) and d.high == pytest.approx(4.0)


def test_mover_of_two_point_estimates_is_the_point() -> None:
    d = interval_difference("m", (1.0, 1.0, 1.0), (1.0, 1.0, 1.0))
    assert (d.delta, d.low, d.high) == (0.0, 0.0, 0.0)
    assert RegressionRule("m").judge(d) == "same"


def test_missing_interval_is_not_judged() -> None:
    d = interval_difference("m", (1.0, None, None), (2.0, 1.5, 2.5))  # type: ignore[arg-type]
    assert math.isnan(d.low) and RegressionRule("m").judge(d) == "n/a"
    assert d.as_dict()["low"] is None and d.as_dict()["delta"] == 1.0


def test_newcombe_hybrid_score_interval_matches_the_paper() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873, table II example (a): 56/70 vs 48/80, method 10
    d = rate_difference("success_rate", 48, 80, 56, 70)
    assert d.delta == pytest.approx(0.2)
    assert d.low == pytest.approx(0.0524, abs=5e-5) and d.high == pytest.approx(0.3339, abs=5e-5)


def test_wilson_interval_known_value_and_edges() -> None:
    lo, hi = wilson_interval(81, 263)
    assert lo == pytest.approx(0.2553, abs=5e-5) and hi == pytest.approx(0.3662, abs=5e-5)
    lo0, hi0 = wilson_interval(0, 10)
    assert lo0 == pytest.approx(0.0, abs=1e-12) and 0.25 < hi0 < 0.35
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    with pytest.raises(ParameterError, match="0 <= k <= n"):
        wilson_interval(11, 10)


def test_equal_success_rates_are_the_same_and_a_drop_is_worse() -> None:
    same = rate_difference("success_rate", 12, 12, 12, 12)
    assert same.delta == 0.0 and same.low < 0 < same.high
    rule = RegressionRule("success_rate", worse="lower")
    assert rule.judge(same) == "same"
    drop = rate_difference("success_rate", 200, 200, 100, 200)
    assert rule.judge(drop) == "worse" and drop.high < 0
    assert math.isnan(rate_difference("success_rate", 0, 0, 1, 2).delta)


def test_bootstrap_shift_of_a_constant_is_exact_and_significant() -> None:
    base = np.random.default_rng(1).lognormal(np.log(1000.0), 0.1, 200)
    d = bootstrap_shift("latency_ms_p50", base, base + 500.0, q=50)
    assert d.delta == pytest.approx(500.0)
    assert d.low < 500.0 < d.high and d.low > 0
    assert RegressionRule("latency_ms_p50", min_relative=0.1).judge(d) == "worse"
    back = bootstrap_shift("latency_ms_p50", base + 500.0, base, q=50)
    assert RegressionRule("latency_ms_p50").judge(back) == "better"


def test_bootstrap_shift_of_the_same_sample_straddles_zero_and_is_reproducible() -> None:
    base = np.random.default_rng(2).normal(1000.0, 100.0, 40)
    d = bootstrap_shift("latency_ms_p95", base, base, q=95)
    assert d.delta == 0.0 and d.low < 0 < d.high
    assert d == bootstrap_shift("latency_ms_p95", base, base, q=95)
    assert d.high != bootstrap_shift("latency_ms_p95", base, base, q=95, seed=7).high


def test_bootstrap_drops_nan_and_gives_nan_for_empty() -> None:
    d = bootstrap_shift("p50", [1.0, float("nan"), 3.0], [2.0, 4.0], q=50)
    assert d.base == 2.0 and d.new == 3.0
    assert math.isnan(bootstrap_shift("p50", [], [1.0]).delta)
    with pytest.raises(ParameterError, match="percentile"):
        bootstrap_shift("p50", [1.0], [1.0], q=150)


def test_min_effect_keeps_small_significant_changes_the_same() -> None:
    d = interval_difference("memory_slope_mb_per_h", (0.0, 0.0, 0.0), (3.0, 2.9, 3.1))
    assert RegressionRule("memory_slope_mb_per_h", min_effect=10.0).judge(d) == "same"
    assert RegressionRule("memory_slope_mb_per_h", min_effect=1.0).judge(d) == "worse"
    assert RegressionRule("memory_slope_mb_per_h", worse="lower").judge(d) == "better"


def test_plain_difference_has_no_interval() -> None:
    d = plain_difference("fd_range", 3, 7, unit="FDs")
    assert d.delta == 4.0 and math.isnan(d.low) and RegressionRule("fd_range").judge(d) == "n/a"

"""Known values of the φ-marginalised slope interval (``soaklib.analysis.ar1``) and of the verdict's TOST rule."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import signal, stats

from soaklib.analysis.ar1 import Mixture, marginal, prais_winsten
from soaklib.analysis.leak import leak_fit

MIB = 2**20


def ar1_noise(n: int, phi: float, sd: float, rng: np.random.Generator) -> np.ndarray:
    w = rng.normal(0.0, sd * math.sqrt(1 - phi * phi), n)
    w[0] = rng.normal(0.0, sd)
    return signal.lfilter([1.0], [1.0, -phi], w)


def test_a_single_component_mixture_is_students_t():
    m = Mixture(np.array([1.0]), np.array([3.0]), np.array([2.0]), np.array([0.5]), df=7)
    assert m.quantile(0.975) == pytest.approx(3.0 + 2.0 * stats.t.ppf(0.975, 7), rel=1e-9)
    lo, hi = m.interval(0.90)
    assert lo == pytest.approx(3.0 - 2.0 * stats.t.ppf(0.95, 7), rel=1e-9) and hi == pytest.approx(
        3.0 + 2.0 * stats.t.ppf(0.95, 7), rel=1e-9)
    assert m.mean == 3.0 and m.sd == pytest.approx(2.0 * math.sqrt(7 / 5)) and m.phi == 0.5


def test_two_equal_components_meet_in_the_middle():
    m = Mixture(np.array([0.5, 0.5]), np.array([-1.0, 1.0]), np.array([0.1, 0.1]), np.array([0.2, 0.9]), df=50)
    assert m.quantile(0.5) == pytest.approx(0.0, abs=1e-9)  # symmetric: the median is the middle
    assert m.cdf(-1.0) == pytest.approx(0.25, abs=1e-6)  # half of the left component's mass
    assert m.phi == pytest.approx(0.55)


def test_each_phi_is_the_prais_winsten_fit_of_that_phi():
    rng = np.random.default_rng(3)
    x = np.linspace(0.0, 2.0, 80)
    X = np.column_stack([np.ones_like(x), x])
    y = 1e9 + 5e6 * x + ar1_noise(x.size, 0.9, 2e6, rng)  # bytes: the centring keeps the digits
    (mix,) = marginal(X, y, np.array([[0.0, 1.0]]))
    for phi, centre, scale in zip(mix.phis, mix.centres, mix.scales):
        beta, sse, inv = prais_winsten(X, y, float(phi))
        assert centre == pytest.approx(beta[1], rel=1e-6)
        assert scale == pytest.approx(math.sqrt(inv[1, 1] * sse / (x.size - 2)), rel=1e-5)
    assert 0.6 < mix.phi < 1.0  # the weight sits where the noise's φ is


def test_the_interval_holds_a_planted_slope_about_as_often_as_it_says():
    """200 AR(1) curves (φ 0.9 per 30 s, 2 MiB, 1 h): the 95% interval holds the planted 5 MiB/h on 90–99%."""
    rng = np.random.default_rng(20261202)
    t = np.arange(0.0, 3600.0 + 15, 30.0)
    held = 0
    for _ in range(200):
        y = (700.0 + 5.0 * t / 3600.0 + ar1_noise(t.size, 0.9, 2.0, rng)) * MIB
        fit = leak_fit(t, y, max_breaks=0)
        held += fit.low_per_h / MIB <= 5.0 <= fit.high_per_h / MIB
    assert 180 <= held <= 198


def test_pass_is_tested_on_the_one_sided_bound_fail_on_the_interval():
    rng = np.random.default_rng(5)
    t = np.arange(0.0, 3600.0 + 15, 30.0)
    fit = leak_fit(t, (500.0 + ar1_noise(t.size, 0.85, 1.5, rng)) * MIB)
    low, high = fit.low_per_h, fit.high_per_h
    assert low < fit.slope_per_h < fit.upper_per_h < high  # the one-sided 95% bound lies inside the 95% interval
    assert fit.upper_per_h == pytest.approx(fit.bounds(0.90)[1], rel=1e-6)
    between = (fit.upper_per_h + high) / 2  # a pass bound the interval's top crosses but the one-sided bound does not
    assert fit.status(between, 100 * MIB) == "PASS"
    assert fit.status(fit.upper_per_h * 0.99, 100 * MIB) == "WARN"
    assert fit.status(-1e12, low - 1.0) == "FAIL"  # the interval's low end above the fail bound
    assert fit.status(-1e12, (low + fit.slope_per_h) / 2) == "WARN"
    assert "one-sided" in fit.method and "restricted likelihood" in fit.method


def test_bounds_at_any_level_nest():
    rng = np.random.default_rng(8)
    t = np.arange(0.0, 7200.0 + 15, 30.0)
    fit = leak_fit(t, (500.0 + 80.0 * t / 3600.0 + ar1_noise(t.size, 0.9, 2.0, rng)) * MIB)
    lo90, hi90 = fit.bounds(0.90)
    lo999, hi999 = fit.bounds(0.999)
    assert lo999 < fit.low_per_h < lo90 < fit.slope_per_h < hi90 < fit.high_per_h < hi999

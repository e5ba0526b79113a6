"""Known values of the time-to-exhaustion projection (``soaklib.analysis.exhaustion``)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import signal

from soaklib.analysis.exhaustion import time_to_exhaustion

MIB = 2**20
H = 3600.0


def noisy(t: np.ndarray, mb: np.ndarray, seed: int, phi: float = 0.9, sd_mb: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.normal(0.0, sd_mb * math.sqrt(1 - phi * phi), t.size)
    w[0] = rng.normal(0.0, sd_mb)
    return (mb + signal.lfilter([1.0], [1.0, -phi], w)) * MIB


def test_planted_leak_reaches_a_cgroup_like_limit_within_its_80_percent_interval():
    limit_mb = 1024.0  # a cgroup memory.max set for the test
    t = np.arange(0.0, 2 * H + 1, 30.0)
    rate = 100.0  # MiB/h from 500 MiB: 700 MiB at the end, the limit 3.24 h later
    truth_h = (limit_mb - (500.0 + rate * 2.0)) / rate
    held = 0
    for seed in range(40):
        e = time_to_exhaustion("tree RSS", t, noisy(t, 500.0 + rate * t / H, seed), limit_mb * MIB,
                               limit_source="cgroup memory.max")
        assert e.status == "projected" and e.hours_low is not None and e.hours_high is not None
        assert e.hours == pytest.approx(truth_h, rel=0.1)
        held += e.hours_low <= truth_h <= e.hours_high
    assert 0.75 * 40 <= held <= 40  # an 80% interval: most runs, not all by construction
    assert "cgroup memory.max" in e.text() and "(80%)" in e.text()


def test_flat_series_and_sawtooth_have_no_projection():
    t = np.arange(0.0, 2 * H + 1, 30.0)
    flat = time_to_exhaustion("RSS", t, noisy(t, 500.0 + 0 * t, 3), 1024 * MIB)
    assert flat.status == "flat" and flat.hours is None and "no projection" in flat.text()
    saw = 500.0 + 40.0 * ((t % 600.0) / 600.0)  # a GC every 10 min
    e = time_to_exhaustion("RSS", t, noisy(t, saw, 4, sd_mb=1.0), 1024 * MIB)
    assert e.status == "flat" and e.hours is None


def test_reached_no_limit_and_too_few_samples():
    t = np.arange(0.0, H + 1, 30.0)
    fds = 100.0 + 200.0 * t / H  # an FD leak already past a soft limit of 256
    assert time_to_exhaustion("FDs", t, fds, 256.0, unit="FDs").status == "reached"
    e = time_to_exhaustion("FDs", t, fds, 1024.0, unit="FDs", limit_source="RLIMIT_NOFILE soft")
    assert e.status == "projected" and e.hours == pytest.approx((1024 - 300) / 200.0, rel=1e-6)
    assert time_to_exhaustion("FDs", t, fds, None).status == "no_limit"
    assert time_to_exhaustion("FDs", [0.0], [1.0], 10.0).status == "unknown"
    assert time_to_exhaustion("FDs", t, fds, 1024.0).to_json()["hours_high"] is not None

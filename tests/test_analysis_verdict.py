"""Known values of the memory verdict (``soaklib.analysis.leak``): planted warm-ups, onsets, steps, staircases."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import signal

from soaklib.analysis.growth import memory_growth
from soaklib.analysis.leak import leak_fit, sawtooth_period

MIB = 2**20
H = 3600.0
PASS_B, FAIL_B = 12.5 * MIB, 50.0 * MIB


def curve(hours: float, shape, *, seed: int = 1, phi: float = 0.9, sd_mb: float = 2.0, dt: float = 30.0):
    """(t_s, bytes): 500 MiB + shape(t) MiB + AR(1) noise (φ per sample, marginal SD ``sd_mb``)."""
    rng = np.random.default_rng(seed)
    t = np.arange(0.0, hours * H + dt / 2, dt)
    w = rng.normal(0.0, sd_mb * math.sqrt(1 - phi * phi), t.size)
    w[0] = rng.normal(0.0, sd_mb)
    noise = signal.lfilter([1.0], [1.0, -phi], w)
    return t, (500.0 + shape(t) + noise) * MIB


def test_exact_line_gives_its_slope_and_a_tight_interval():
    t = np.arange(0.0, 2 * H, 30.0)
    fit = leak_fit(t, (100.0 + 30.0 * t / H) * MIB)
    assert fit.slope_per_h / MIB == pytest.approx(30.0)
    assert fit.low_per_h / MIB == pytest.approx(30.0, abs=1e-6) and fit.high_per_h / MIB == pytest.approx(30.0, abs=1e-6)
    assert fit.breaks == () and fit.judged_from_s == 0.0


def test_flat_noisy_run_passes_and_its_interval_holds_zero():
    t, v = curve(2.0, lambda t: 0.0 * t, seed=4)
    fit = leak_fit(t, v)
    assert fit.low_per_h <= 0.0 <= fit.high_per_h
    assert fit.status(PASS_B, FAIL_B) == "PASS"
    assert "AR(1)" in fit.method and "n_eff" in fit.method


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_planted_warmup_is_cut_where_it_ends_and_the_run_passes(seed):
    end_s = 20 * 60.0  # a cache filled in 20 minutes (+150 MiB), then flat, in a 1 h run
    t, v = curve(1.0, lambda t: 150.0 * np.minimum(1.0, t / end_s), seed=seed)
    fit = leak_fit(t, v)
    assert fit.warmup_end_s is not None and abs(fit.warmup_end_s - end_s) <= 0.10 * end_s
    assert fit.status(PASS_B, FAIL_B) != "FAIL" and fit.high_per_h < 25 * MIB
    assert "warm-up found" in fit.method


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_late_leak_onset_found_within_ten_percent_of_the_run_and_failed(seed):
    onset_s = 0.5 * 2 * H  # 120 MiB/h from the middle of a 2 h run
    t, v = curve(2.0, lambda t: 120.0 / H * np.maximum(0.0, t - onset_s), seed=seed)
    fit = leak_fit(t, v)
    assert fit.onset_s is not None and abs(fit.onset_s - onset_s) <= 0.10 * 2 * H
    assert fit.slope_per_h / MIB == pytest.approx(120.0, rel=0.15)
    assert fit.status(PASS_B, FAIL_B) == "FAIL"
    whole = leak_fit(t, v, max_breaks=0)  # one line over the window dilutes the leak
    assert whole.slope_per_h < 0.7 * fit.slope_per_h


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_one_time_step_is_not_a_leak(seed):
    t, v = curve(2.0, lambda t: np.where(t >= 0.4 * 2 * H, 60.0, 0.0), seed=seed)
    fit = leak_fit(t, v)
    assert len(fit.steps) >= 1 and not fit.staircase
    assert abs(fit.steps[0].t_s - 0.4 * 2 * H) <= 120.0 and fit.steps[0].size / MIB == pytest.approx(60.0, abs=6.0)
    assert fit.status(PASS_B, FAIL_B) == "PASS"
    assert "one-time step" in fit.method


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_staircase_is_a_leak(seed):
    period_s = 5 * 60.0  # +10 MiB every 5 minutes: 120 MiB/h in steps
    t, v = curve(1.0, lambda t: 10.0 * np.floor(t / period_s), seed=seed)
    fit = leak_fit(t, v)
    assert fit.status(PASS_B, FAIL_B) == "FAIL"
    assert fit.slope_per_h / MIB == pytest.approx(120.0, rel=0.2)
    assert fit.staircase or not fit.steps


def test_gc_sawtooth_period_found_and_not_judged_a_leak():
    period = 300.0
    saw = lambda t: 30.0 * ((t % period) / period)  # noqa: E731 - +30 MiB then a GC, every 5 min
    t, v = curve(2.0, saw, sd_mb=1.0)
    assert sawtooth_period(t, v) == pytest.approx(period, rel=0.05)
    fit = leak_fit(t, v)
    assert fit.status(PASS_B, FAIL_B) == "PASS" and "sawtooth" in fit.method
    t2, v2 = curve(2.0, lambda t: saw(t) + 100.0 * t / H, sd_mb=1.0)  # a leak under the sawtooth
    fit2 = leak_fit(t2, v2)
    assert fit2.slope_per_h / MIB == pytest.approx(100.0, rel=0.1) and fit2.status(PASS_B, FAIL_B) == "FAIL"


@pytest.mark.parametrize("n", [0, 1, 2])
def test_too_few_samples_give_nan_and_warn(n):
    fit = leak_fit(np.arange(n, dtype=float), np.full(n, 1e8))
    assert math.isnan(fit.slope_per_h) and fit.status(PASS_B, FAIL_B) == "WARN"
    with pytest.raises(ValueError, match="confidence"):
        leak_fit([0, 1, 2], [1, 2, 3], confidence=1.5)


def test_memory_growth_reports_the_segmented_verdict_and_keeps_the_previous_one():
    end_s = 15 * 60.0
    t, v = curve(1.0, lambda t: 120.0 * np.minimum(1.0, t / end_s), seed=7)
    df = pd.DataFrame({"t_s": t, "rss_bytes": v})
    new = memory_growth(df, warmup_s=180.0, verdict="segmented")  # the fixed 5% cut of a 1 h run
    old = memory_growth(df, warmup_s=180.0)
    assert new["verdict"] == "segmented" and old["verdict"] == "theil-sen"
    assert new["warmup_end_s"] == pytest.approx(end_s, rel=0.1) and new["onset_s"] is None
    assert new["slope_low_mb_per_h"] <= 0.0 <= new["slope_high_mb_per_h"]
    assert old["slope_low_mb_per_h"] > 0.0  # the fixed cut claims growth after the cache is full
    assert "warm-up found" in new["method"] and "Theil-Sen" in old["method"]
    with pytest.raises(Exception, match="verdict"):
        memory_growth(df, verdict="median")


def test_fd_trend_needs_growth_that_survives_one_time_steps():
    from soaklib.analysis.growth import fd_stability

    t = np.arange(0.0, 2 * H, 30.0)
    rng = np.random.default_rng(5)
    jitter = rng.integers(-1, 2, t.size)
    step = pd.DataFrame({"t_s": t, "num_fds": 40 + np.where(t >= 0.5 * 2 * H, 20, 0) + jitter})  # a pool opened once
    leak = pd.DataFrame({"t_s": t, "num_fds": 40 + (t // 300) + jitter})  # one more FD every 5 minutes
    s, lk = fd_stability(step), fd_stability(leak)
    assert s["fd_range"] > 5 and s["kendall_tau"] > 0.5 and s["p_value"] < 0.01  # Kendall alone would call it a trend
    assert s["monotonic_increasing"] is False
    assert lk["monotonic_increasing"] is True and lk["segmented_low_per_h"] > 0
    assert "segmented verdict" in lk["method"]

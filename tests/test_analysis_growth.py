"""Growth statistics: planted leaks measured, flat and plateau series judged, tiny inputs safe."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from soaklib.analysis.growth import (
    MAX_BINS,
    MIB,
    bin_series,
    disk_growth,
    fd_stability,
    growth_slope,
    memory_growth,
    trend_test,
)
from soaklib.errors import ParameterError

H = 3600.0


def _leak(rate_mb_per_h: float, *, hours: float = 4.0, interval_s: float = 30.0, noise_mb: float = 2.0,
          spike_mb: float = 0.0, spike_s: float = 0.0, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = np.arange(0.0, hours * H, interval_s)
    mb = 150.0 + rate_mb_per_h * t / H + rng.normal(0.0, noise_mb, t.size)
    mb[t < spike_s] += spike_mb
    return pd.DataFrame({"t_s": t, "rss_bytes": mb * MIB})


def test_bin_series_known_medians_and_mean_times():
    t = np.arange(9.0)
    v = np.array([1, 9, 2, 10, 30, 20, 5, 5, 100], dtype=float)
    tm, med = bin_series(t, v, 3.0)
    assert list(tm) == [1.0, 4.0, 7.0]
    assert list(med) == [2.0, 20.0, 5.0]
    tm, med = bin_series([0.0, 1.0, 10.0, np.nan], [1.0, 3.0, 7.0, 8.0], 5.0)  # empty bin skipped
    assert list(tm) == [0.5, 10.0] and list(med) == [2.0, 7.0]
    tm, med = bin_series([], [], 5.0)
    assert tm.size == 0 and med.size == 0
    with pytest.raises(ValueError):
        bin_series([0, 1], [1, 2], 0)


def test_planted_leak_measured_within_5_percent_despite_warmup_spike():
    df = _leak(20.0, spike_mb=80.0, spike_s=300.0)
    r = memory_growth(df, warmup_s=600.0)
    assert r["slope_mb_per_h"] == pytest.approx(20.0, rel=0.05)
    assert r["slope_low_mb_per_h"] <= 20.0 <= r["slope_high_mb_per_h"]
    analysed_h = (df.t_s.iloc[-1] - 600.0) / H
    assert r["duration_h"] == pytest.approx(analysed_h)
    assert r["growth_mb"] == pytest.approx(20.0 * analysed_h, rel=0.05)
    assert r["raw_growth_mb"] == pytest.approx(20.0 * analysed_h, rel=0.1)
    assert r["kendall_tau"] > 0.8 and r["p_value"] < 1e-6
    assert r["trend"] == "growing" and r["plateau"] is False
    assert "Theil-Sen" in r["method"] and "Kendall" in r["method"]


def test_slope_result_units_and_binning_of_many_samples():
    df = _leak(5.0, hours=2.0, interval_s=0.5, noise_mb=4.0)  # 14,400 samples
    r = growth_slope(df.t_s, df.rss_bytes)
    assert r.n_samples == len(df) and r.n_bins <= MAX_BINS
    assert r.slope_mb_per_h == pytest.approx(5.0, rel=0.05)
    assert r.slope_per_h == pytest.approx(r.slope_per_s * 3600.0)
    assert r.slope_mb_per_h == pytest.approx(r.slope_per_h / 2**20)
    assert r.growth_total == pytest.approx(r.slope_per_s * r.duration_s)
    assert r.raw_growth == pytest.approx(r.last - r.first)


def test_flat_noisy_series_ci_contains_zero():
    df = _leak(0.0, noise_mb=5.0)
    r = memory_growth(df)
    assert r["slope_low_mb_per_h"] <= 0.0 <= r["slope_high_mb_per_h"]
    assert abs(r["slope_mb_per_h"]) < 1.0
    assert r["trend"] == "flat" and r["plateau"] is False
    assert growth_slope(df.t_s, df.rss_bytes).ci_contains_zero


def test_step_then_flat_is_a_plateau():
    rng = np.random.default_rng(3)
    t = np.arange(0.0, 4 * H, 30.0)
    mb = 100.0 + np.clip(t / (40 * 60), 0, 1) * 100.0 + rng.normal(0, 2.0, t.size)  # +100 MiB in 40 min
    r = memory_growth(pd.DataFrame({"t_s": t, "rss_bytes": mb * MIB}))
    assert r["plateau"] is True and r["trend"] == "plateau"
    assert r["raw_growth_mb"] == pytest.approx(100.0, abs=12.0)  # two unbinned samples, noise sd 2


@pytest.mark.parametrize("n", [0, 1])
def test_zero_or_one_sample_gives_nan_without_exceptions(n):
    df = pd.DataFrame({"t_s": np.arange(n, dtype=float), "rss_bytes": np.full(n, 1e8), "num_fds": np.full(n, 12)})
    r = growth_slope(df.t_s, df.rss_bytes)
    assert math.isnan(r.slope_per_s) and math.isnan(r.growth_total) and r.n_bins == n and r.n_samples == n
    assert not r.ci_contains_zero
    m = memory_growth(df, limit_bytes=2e9)
    assert math.isnan(m["slope_mb_per_h"]) and m["trend"] == "unknown" and m["plateau"] is False
    assert m["projected_h_to_limit"] is None
    assert all(math.isnan(x) for x in trend_test(df.t_s, df.rss_bytes))
    fd = fd_stability(df)
    assert fd["monotonic_increasing"] is False
    assert (fd["fd_range"] == 0) if n else (fd["fd_range"] is None)
    assert math.isnan(disk_growth(df, "rss_bytes")["slope_mb_per_h"])


def test_all_null_column_is_nan_not_an_error():
    df = pd.DataFrame({"t_s": [0.0, 30.0, 60.0], "vram_bytes": [None, None, None]})
    r = memory_growth(df, column="vram_bytes")
    assert r["n_samples"] == 0 and math.isnan(r["slope_mb_per_h"])


def test_million_samples_are_binned_before_the_estimator():
    n = 1_000_000
    t = np.arange(n, dtype=float)
    v = 1e8 + t * 10.0 + np.random.default_rng(0).normal(0, 1e5, n)
    r = growth_slope(t, v)
    assert r.n_samples == n and 2 <= r.n_bins <= MAX_BINS
    assert r.slope_per_s == pytest.approx(10.0, rel=0.01)


def test_explicit_bins_and_guard_against_quadratic_blow_up():
    t = np.arange(0.0, 3600.0, 1.0)
    r = growth_slope(t, t * 2.0, bin_s=60.0)
    assert r.n_bins == 60 and r.slope_per_s == pytest.approx(2.0)
    with pytest.raises(ValueError, match="O\\(n\\^2\\)"):
        growth_slope(t, t, bin_s=0.5)


def test_projected_hours_to_limit_known_value():
    t = np.arange(0.0, 4 * H + 1, 60.0)
    df = pd.DataFrame({"t_s": t, "rss_bytes": (100.0 + 10.0 * t / H) * MIB})  # exact 10 MiB/h, ends at 140
    r = memory_growth(df, limit_bytes=240 * MIB)
    assert r["slope_mb_per_h"] == pytest.approx(10.0)
    assert r["projected_h_to_limit"] == pytest.approx(10.0)
    assert memory_growth(df, limit_bytes=120 * MIB)["projected_h_to_limit"] == 0.0
    flat = df.assign(rss_bytes=100.0 * MIB)
    assert memory_growth(flat, limit_bytes=240 * MIB)["projected_h_to_limit"] is None


def test_datetime_time_column_and_missing_column():
    ts = pd.date_range("2026-02-03", periods=241, freq="60s", tz="UTC")
    df = pd.DataFrame({"ts": ts, "rss_bytes": (100.0 + np.arange(241) / 60.0 * 6.0) * MIB})  # 6 MiB/h
    assert memory_growth(df, time_col="ts")["slope_mb_per_h"] == pytest.approx(6.0)
    with pytest.raises(ParameterError, match="rss_bytes"):
        memory_growth(pd.DataFrame({"t_s": [0.0]}))


def test_trend_test_rising_and_flat():
    t = np.arange(100.0)
    tau, p = trend_test(t, t)
    assert tau == pytest.approx(1.0) and p < 1e-10
    tau, p = trend_test(t, np.random.default_rng(5).normal(size=100))
    assert p > 0.05


def test_fd_stability_flat_jitter_leak_and_small_step():
    rng = np.random.default_rng(11)
    t = np.arange(0.0, 4 * H, 60.0)
    flat = pd.DataFrame({"t_s": t, "num_fds": 40 + rng.integers(-2, 3, t.size)})
    r = fd_stability(flat)
    assert r["fd_range"] <= 5 and r["monotonic_increasing"] is False
    assert isinstance(r["fd_min"], int)
    leak = pd.DataFrame({"t_s": t, "num_fds": 40 + (t // 600).astype(int)})  # one FD per 10 min
    r = fd_stability(leak)
    assert r["monotonic_increasing"] is True and r["fd_range"] == 23
    assert r["slope_per_h"] == pytest.approx(6.0, rel=0.05)
    step = pd.DataFrame({"t_s": t, "num_fds": 40 + 3 * (t > H)})  # three FDs opened once
    r = fd_stability(step)
    assert r["fd_range"] == 3 and r["monotonic_increasing"] is False


def test_disk_growth_used_and_free():
    t = np.arange(0.0, 2 * H + 1, 60.0)
    used = (1000.0 + 15.0 * t / H) * MIB
    r = disk_growth(pd.DataFrame({"t_s": t, "log_bytes": used}), "log_bytes")
    assert r["growth_mb"] == pytest.approx(30.0) and r["slope_mb_per_h"] == pytest.approx(15.0)
    assert r["fitted_growth_mb"] == pytest.approx(30.0) and r["duration_h"] == pytest.approx(2.0)
    free = pd.DataFrame({"t_s": t, "disk_free_bytes": 5e10 - used})
    r = disk_growth(free, "disk_free_bytes", free=True)
    assert r["growth_mb"] == pytest.approx(30.0, rel=1e-6)

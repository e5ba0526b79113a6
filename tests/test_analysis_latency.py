"""Latency statistics: known values, None/NaN handling, grouping per provider and round."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from soaklib.analysis.latency import ecdf, percentiles, summarize


def test_percentiles_known_values_linear_interpolation():
    s = percentiles([10, 20, 30, 40, 50, 60, 70, 80, 90, 100])
    assert s["count"] == 10
    assert s["mean"] == 55.0
    assert s["min"] == 10.0 and s["max"] == 100.0
    # linear: position q/100 * (n - 1) between sorted values
    assert s["p50"] == pytest.approx(55.0)
    assert s["p90"] == pytest.approx(91.0)
    assert s["p95"] == pytest.approx(95.5)
    assert s["p99"] == pytest.approx(99.1)
    arr = np.arange(1, 1001, dtype=float)
    s = percentiles(arr)
    for q in (50, 90, 95, 99):
        assert s[f"p{q}"] == pytest.approx(np.percentile(arr, q))


def test_percentiles_drops_none_and_nan():
    s = percentiles([None, 1.0, float("nan"), 3.0])
    assert s["count"] == 2 and s["mean"] == 2.0 and s["p50"] == 2.0


@pytest.mark.parametrize("empty", [[], None, [None, float("nan")], np.array([])])
def test_percentiles_empty_gives_none(empty):
    s = percentiles(empty)
    assert s["count"] == 0
    assert all(s[k] is None for k in ("mean", "p50", "p90", "p95", "p99", "max", "min"))


def test_percentiles_single_value():
    s = percentiles([42])
    assert s["count"] == 1 and s["p99"] == 42.0 and s["min"] == 42.0


def _jobs() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "round_num": [1, 1, 1, 1, 2, 2, 2, 2],
            "provider": ["opencode", "opencode", "gemini", "gemini"] * 2,
            "success": [True, True, True, False, True, False, None, True],
            "latency_ms": [100.0, 200.0, 1000.0, None, 300.0, 400.0, None, 2000.0],
        }
    )


def test_summarize_per_provider_counts_all_rows_latency_from_rows_with_one():
    out = summarize(_jobs()).set_index("provider")
    assert list(out.index) == ["gemini", "opencode"]
    oc = out.loc["opencode"]
    assert (oc["total"], oc["passed"], oc["failed"]) == (4, 3, 1)
    assert oc["latency_ms_mean"] == pytest.approx(250.0)
    assert oc["latency_ms_p50"] == pytest.approx(250.0)
    assert oc["latency_ms_max"] == 400.0
    gm = out.loc["gemini"]
    assert (gm["total"], gm["passed"], gm["failed"]) == (4, 2, 2)  # None success is a failure
    assert gm["latency_ms_mean"] == pytest.approx(1500.0)  # two rows without latency ignored
    assert set(out.columns) >= {"latency_ms_p90", "latency_ms_p95", "latency_ms_p99"}


def test_summarize_per_round_and_provider():
    out = summarize(_jobs(), by=["round_num", "provider"])
    assert len(out) == 4
    r2 = out[(out.round_num == 2) & (out.provider == "gemini")].iloc[0]
    assert r2["total"] == 2 and r2["passed"] == 1 and r2["latency_ms_p50"] == 2000.0


def test_summarize_group_without_latency_and_empty_frame():
    jobs = pd.DataFrame({"provider": ["cc-glm"], "success": [False], "latency_ms": [None]})
    row = summarize(jobs).iloc[0]
    assert row["total"] == 1 and row["failed"] == 1 and math.isnan(row["latency_ms_p50"])
    empty = summarize(jobs.iloc[:0])
    assert empty.empty and "latency_ms_p99" in empty.columns


def test_summarize_missing_column_is_named():
    with pytest.raises(KeyError, match="latency_ms"):
        summarize(pd.DataFrame({"provider": ["a"], "success": [True]}))


def test_ecdf():
    x, y = ecdf([3.0, None, 1.0, 2.0, 2.0])
    assert list(x) == [1.0, 2.0, 2.0, 3.0]
    assert list(y) == [0.25, 0.5, 0.75, 1.0]
    x, y = ecdf([])
    assert x.size == 0 and y.size == 0

"""Latency percentiles per provider and per round: pure functions, no I/O.

Percentiles use numpy's ``linear`` method (type 7 of Hyndman & Fan, the numpy and pandas
default), so a value here matches ``numpy.percentile`` and ``Series.quantile`` exactly.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

PERCENTILES = (50, 90, 95, 99)
STAT_KEYS = ("count", "mean", "p50", "p90", "p95", "p99", "max", "min")


def _finite(values: Iterable[Any] | np.ndarray | pd.Series | None) -> np.ndarray:
    """Values as a float array with None, NaN and infinities dropped."""
    if values is None:
        return np.empty(0)
    if isinstance(values, pd.Series):
        series = values
    elif isinstance(values, np.ndarray):
        series = pd.Series(values.ravel())
    else:
        series = pd.Series(list(values), dtype=object)
    arr = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    finite: np.ndarray = arr[np.isfinite(arr)]
    return finite


def percentiles(values_ms: Iterable[Any] | np.ndarray | pd.Series | None) -> dict[str, float | int | None]:
    """Count, mean, min, max and the p50/p90/p95/p99 of ``values_ms`` (numpy 'linear').

    None and NaN values are dropped first. An empty input gives ``count`` 0 and None for
    every statistic, so a provider that never produced a latency still has a row.
    """
    arr = _finite(values_ms)
    out: dict[str, float | int | None] = {k: None for k in STAT_KEYS}
    out["count"] = int(arr.size)
    if arr.size == 0:
        return out
    qs = np.percentile(arr, PERCENTILES, method="linear")
    out["mean"] = float(arr.mean())
    for p, q in zip(PERCENTILES, qs):
        out[f"p{p}"] = float(q)
    out["max"] = float(arr.max())
    out["min"] = float(arr.min())
    return out


def summarize(
    jobs: pd.DataFrame,
    by: Sequence[str] = ("provider",),
    value: str = "latency_ms",
    success_col: str = "success",
) -> pd.DataFrame:
    """One row per group of ``jobs``: ``total passed failed`` and latency statistics.

    ``total``/``passed``/``failed`` count every row of the group (``success`` true or not);
    the ``{value}_mean/_p50/_p90/_p95/_p99/_max`` columns use only rows that have a latency
    (numpy 'linear' percentiles; NaN where a group has none). Group per provider with the
    default ``by``, or per round with ``by=["round_num", "provider"]``.
    """
    by = list(by)
    stat_cols = [f"{value}_{k}" for k in ("mean", "p50", "p90", "p95", "p99", "max")]
    columns = [*by, "total", "passed", "failed", *stat_cols]
    missing = [c for c in [*by, value, success_col] if c not in jobs.columns]
    if missing:
        raise KeyError(f"summarize: jobs has no column(s) {missing}; it has {list(jobs.columns)}")
    if jobs.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for key, group in jobs.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        ok = group[success_col].map(lambda v: (not pd.isna(v)) and bool(v)).astype(bool)
        stats = percentiles(group[value])
        row = dict(zip(by, key))
        row.update(total=int(len(group)), passed=int(ok.sum()), failed=int(len(group) - ok.sum()))
        for k in ("mean", "p50", "p90", "p95", "p99", "max"):
            row[f"{value}_{k}"] = stats[k]
        rows.append(row)
    out = pd.DataFrame(rows, columns=columns)
    out[stat_cols] = out[stat_cols].astype(float)
    return out


def ecdf(values: Iterable[Any] | np.ndarray | pd.Series | None) -> tuple[np.ndarray, np.ndarray]:
    """Empirical CDF: sorted finite ``x`` and ``y = i / n`` (1/n … 1), for a step plot."""
    x = np.sort(_finite(values))
    y = np.arange(1, x.size + 1, dtype=float) / x.size if x.size else np.empty(0)
    return x, y

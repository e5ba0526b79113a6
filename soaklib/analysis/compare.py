"""Statistics of a comparison of two runs (BASE and NEW): differences with intervals. No I/O.

Three kinds of difference, each a :class:`Difference` (``delta = new − base`` with a
``confidence`` interval ``[low, high]`` and the ``method`` that gave it):

- ``interval_difference``: two estimates that each come with their own interval (the
  Theil–Sen memory slopes of two soaks). The interval of the difference is built by
  MOVER, the method of variance estimates recovery (Zou & Donner 2008): each side's
  distance to its bound is recovered from the single intervals and combined in
  quadrature, ``low = d − √((n − n_lo)² + (b_hi − b)²)``, ``high = d + √((n_hi − n)² +
  (b − b_lo)²)``. Two symmetric ±3 and ±4 intervals give ±5.
- ``bootstrap_shift``: a percentile (p50, p95, ...) of two samples of latencies. The two
  samples are resampled independently (percentile bootstrap, ``n_boot`` resamples, a
  seeded generator: the same inputs give the same interval); percentiles are numpy's
  ``linear`` method, as in :mod:`soaklib.analysis.latency`.
- ``rate_difference``: two success rates (k of n). Newcombe's hybrid score interval
  (Newcombe 1998, method 10) from the two Wilson score intervals; 56/70 − 48/80 gives
  0.2 in [0.0524, 0.3339].

A difference is judged by a :class:`RegressionRule` (data: metric, which direction is
worse, the smallest change that counts): ``worse`` only when the whole interval lies on
the worse side of 0 and the change is at least ``min_effect``; ``better`` the same way
round; else ``same``; ``too_few`` below the rule's ``min_n`` observations a side (a
percentile bootstrap of a handful of jobs gives intervals far narrower than the truth). Too little data gives NaN and ``n/a``, never an exception.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats

from soaklib.errors import ParameterError

Judgement = Literal["worse", "better", "same", "too_few", "n/a"]
N_BOOT = 2000  # bootstrap resamples: the interval's bounds move by well under 1% between seeds
SEED = 20260220  # the default generator seed (a fixed seed: a comparison is reproducible)


@dataclass(frozen=True)
class Difference:
    """``new − base`` of one metric, with its interval and how it was computed."""

    metric: str
    base: float
    new: float
    delta: float
    low: float
    high: float
    unit: str
    method: str
    confidence: float = 0.95
    group: str = ""  # what the metric is of, e.g. a provider; "" for the run as a whole
    n_base: int = 0  # observations behind each side (jobs, bins); 0 = not a sample
    n_new: int = 0

    @property
    def relative(self) -> float:
        """``delta / |base|`` (NaN when base is 0 or NaN)."""
        return self.delta / abs(self.base) if self.base and math.isfinite(self.base) else math.nan

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "group": self.group, "base": _num(self.base), "new": _num(self.new), "delta": _num(self.delta),
                "low": _num(self.low), "high": _num(self.high), "relative": _num(self.relative), "unit": self.unit,
                "confidence": self.confidence, "method": self.method,
                "n_base": self.n_base, "n_new": self.n_new}


@dataclass(frozen=True)
class RegressionRule:
    """When a difference in ``metric`` is a regression: ``higher`` or ``lower`` is worse, by at least ``min_effect``."""

    metric: str
    worse: Literal["higher", "lower"] = "higher"
    min_effect: float = 0.0  # in the metric's unit; smaller significant changes are "same"
    min_relative: float = 0.0  # or a fraction of |base|: the larger of the two applies
    min_n: int = 0  # fewer observations a side than this: ``too_few`` (a bootstrap of 4 jobs is no evidence)

    def judge(self, d: Difference) -> Judgement:
        """``worse`` / ``better`` when the whole interval is past 0 on that side and the change is large enough."""
        if not all(math.isfinite(x) for x in (d.delta, d.low, d.high)):
            return "n/a"
        if min(d.n_base, d.n_new) < self.min_n:
            return "too_few"
        threshold = max(self.min_effect, self.min_relative * abs(d.base) if math.isfinite(d.base) else 0.0)
        sign = 1.0 if self.worse == "higher" else -1.0
        lo, hi = sorted((sign * d.low, sign * d.high))
        if lo > 0 and sign * d.delta >= threshold:
            return "worse"
        if hi < 0 and -sign * d.delta >= threshold:
            return "better"
        return "same"


def _num(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _finite(values: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel() if values is not None else np.empty(0)
    return arr[np.isfinite(arr)]


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ParameterError(f"confidence = {confidence!r}: expected a fraction between 0 and 1", key="confidence")


def interval_difference(
    metric: str, base: tuple[float, float, float], new: tuple[float, float, float], *, unit: str = "",
    confidence: float = 0.95,
) -> Difference:
    """``new − base`` of two estimates given as ``(estimate, low, high)``, interval by MOVER (Zou & Donner 2008)."""
    _check_confidence(confidence)
    b, b_lo, b_hi = (float(x) if x is not None else math.nan for x in base)
    n, n_lo, n_hi = (float(x) if x is not None else math.nan for x in new)
    d = n - b
    low = d - math.sqrt((n - n_lo) ** 2 + (b_hi - b) ** 2)
    high = d + math.sqrt((n_hi - n) ** 2 + (b - b_lo) ** 2)
    return Difference(metric, b, n, d, low, high, unit,
                      "difference of two estimates; interval by MOVER (Zou & Donner 2008) from their intervals",
                      confidence)


def bootstrap_shift(
    metric: str, base_values: Any, new_values: Any, *, q: float = 50.0, unit: str = "ms", n_boot: int = N_BOOT,
    seed: int = SEED, confidence: float = 0.95,
) -> Difference:
    """Shift of the ``q``-th percentile (numpy 'linear'), ``new − base``, with a percentile-bootstrap interval.

    Each sample is resampled with replacement ``n_boot`` times, independently; the interval
    is the ``(1 − confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the resampled
    shifts. An empty sample gives NaN."""
    _check_confidence(confidence)
    if not 0 <= q <= 100:
        raise ParameterError(f"q = {q!r}: expected a percentile between 0 and 100", key="q")
    if n_boot < 100:
        raise ParameterError(f"n_boot = {n_boot!r}: expected at least 100 resamples", key="n_boot")
    b, n = _finite(base_values), _finite(new_values)
    method = (f"shift of p{q:g} (numpy linear); {confidence:.0%} percentile-bootstrap interval, "
              f"{n_boot} resamples of each run (seed {seed})")
    if b.size == 0 or n.size == 0:
        return Difference(metric, math.nan, math.nan, math.nan, math.nan, math.nan, unit, method, confidence)
    pb, pn = float(np.percentile(b, q)), float(np.percentile(n, q))
    rng = np.random.default_rng(seed)
    boot_b = np.percentile(b[rng.integers(0, b.size, size=(n_boot, b.size))], q, axis=1)
    boot_n = np.percentile(n[rng.integers(0, n.size, size=(n_boot, n.size))], q, axis=1)
    alpha = 1.0 - confidence
    low, high = np.quantile(boot_n - boot_b, [alpha / 2, 1 - alpha / 2])
    return Difference(metric, pb, pn, pn - pb, float(low), float(high), unit, method, confidence, "", b.size, n.size)


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (NaN for n = 0)."""
    _check_confidence(confidence)
    if n <= 0:
        return math.nan, math.nan
    if not 0 <= k <= n:
        raise ParameterError(f"k = {k} successes of n = {n}: expected 0 <= k <= n", key="k")
    z = float(stats.norm.ppf(1 - (1 - confidence) / 2))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def rate_difference(
    metric: str, base_k: int, base_n: int, new_k: int, new_n: int, *, confidence: float = 0.95
) -> Difference:
    """``new_k/new_n − base_k/base_n`` with Newcombe's hybrid score interval (method 10)."""
    method = f"difference of proportions; {confidence:.0%} Newcombe hybrid score interval (Wilson)"
    if base_n <= 0 or new_n <= 0:
        return Difference(metric, math.nan, math.nan, math.nan, math.nan, math.nan, "fraction", method, confidence)
    p1, p2 = new_k / new_n, base_k / base_n
    l1, u1 = wilson_interval(new_k, new_n, confidence)
    l2, u2 = wilson_interval(base_k, base_n, confidence)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return Difference(metric, p2, p1, d, low, high, "fraction", method, confidence, "", base_n, new_n)


def plain_difference(metric: str, base: float | None, new: float | None, *, unit: str = "") -> Difference:
    """``new − base`` of two observations that come without an interval (FD range, thread count)."""
    b = float(base) if base is not None else math.nan
    n = float(new) if new is not None else math.nan
    return Difference(metric, b, n, n - b, math.nan, math.nan, unit, "difference of two observations (no interval)")


def judge(d: Difference, rules: Sequence[RegressionRule]) -> Judgement:
    """The judgement of the rule for ``d.metric`` (``n/a`` when no rule names it)."""
    return next((r.judge(d) for r in rules if r.metric == d.metric), "n/a")

"""Convergence of a metric over cycles (e.g. the hit rate toward a known seed). No I/O.

Method: Theil–Sen slope with a confidence interval (``scipy.stats.theilslopes``) and
Kendall's tau with its two-sided p-value (``scipy.stats.kendalltau``) of ``y`` against
``x``; a target, when given, decides ``converged`` and ``x_to_target``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from soaklib.analysis.growth import _clean, _kendall, _theil_sen

TRENDS = ("improving", "flat", "worsening", "insufficient")
MIN_POINTS = 3  # fewer points cannot show a significant trend


def convergence_trend(
    x: Any,
    y: Any,
    *,
    target: float | None = None,
    higher_is_better: bool = True,
    hold: int = 1,
    alpha: float = 0.05,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Trend of ``y`` over ``x`` (cycles, hours) and whether it reached ``target``.

    ``slope`` (Theil–Sen, per unit of x) with ``slope_low``/``slope_high`` at
    ``confidence``; ``kendall_tau``/``p_value``; ``trend`` is ``improving`` or
    ``worsening`` when p < ``alpha`` (sign read with ``higher_is_better``), ``flat``
    otherwise, and ``insufficient`` below ``MIN_POINTS`` points. ``converged``: the last
    ``hold`` values are all on the right side of ``target`` (>= when higher is better);
    ``x_to_target``: the first x where the target was reached, else None. Pairs with a
    missing value are dropped; any length, including 0, is safe.
    """
    if hold < 1:
        raise ValueError(f"hold = {hold!r}: expected an integer >= 1")
    xs, ys = _clean(x, y)
    n = int(xs.size)
    slope, _, low, high = _theil_sen(xs, ys, confidence)
    tau, p = _kendall(xs, ys)
    if n < MIN_POINTS:
        trend = "insufficient"
    elif not (p < alpha) or tau == 0:
        trend = "flat"
    else:
        trend = "improving" if (tau > 0) == higher_is_better else "worsening"
    converged = False
    x_to_target = None
    if target is not None and n:
        tol = 1e-9 * max(1.0, abs(target))  # float round-off must not miss an exact hit
        reached = ys >= target - tol if higher_is_better else ys <= target + tol
        converged = bool(n >= hold and reached[-hold:].all())
        hits = np.flatnonzero(reached)
        x_to_target = float(xs[hits[0]]) if hits.size else None
    return {
        "slope": slope,
        "slope_low": low,
        "slope_high": high,
        "kendall_tau": tau,
        "p_value": p,
        "n": n,
        "first": float(ys[0]) if n else math.nan,
        "last": float(ys[-1]) if n else math.nan,
        "target": target,
        "converged": converged,
        "x_to_target": x_to_target,
        "trend": trend,
        "method": (
            f"Theil-Sen slope (scipy.stats.theilslopes, {confidence:.0%} CI) and Kendall tau "
            f"(scipy.stats.kendalltau, two-sided, trend when p < {alpha:g})"
        ),
    }

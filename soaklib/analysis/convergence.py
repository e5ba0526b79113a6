"""Convergence of a metric over cycles (e.g. the hit rate toward a known seed). No I/O.

Method: Theil–Sen slope with a confidence interval (``scipy.stats.theilslopes``) and
Kendall's tau with its two-sided p-value (``scipy.stats.kendalltau``) of ``y`` against
``x``; a target, when given, decides ``converged`` and ``x_to_target``.

A straight line does not describe a hit rate that steps from 0 to 1 (the Theil–Sen slope
of a step is 0: most pairs of points lie on the same side of it), so the curve to draw is
``isotonic_fit``: the least-squares monotone fit (pool-adjacent-violators), which follows
a step as a step and a ramp as a ramp.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from soaklib.analysis.growth import _kendall, _theil_sen
from soaklib.analysis.leak import clean_series as _clean

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


ISOTONIC_METHOD = "isotonic fit (least-squares monotone, pool-adjacent-violators)"


def isotonic_fit(x: Any, y: Any, *, increasing: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The least-squares monotone fit of ``y`` over ``x`` (pool-adjacent-violators).

    Returns ``(x, fitted)`` with the distinct x values in order: ``fitted`` is non-decreasing (``increasing``) or
    non-increasing, and minimises the squared error among such sequences; a monotone
    input is returned unchanged, a step stays a step, and a violating pair is pooled to
    its mean. Points with equal x are fitted to one value. Pairs with a missing value are
    dropped; no points give two empty arrays.
    """
    xs, ys = _clean(x, y)
    if xs.size == 0:
        return xs, ys
    sign = 1.0 if increasing else -1.0
    ux, first = np.unique(xs, return_index=True)
    counts = np.diff(np.append(first, xs.size)).astype(float)
    sums = np.add.reduceat(ys * sign, first)
    blocks: list[list[float]] = []  # [sum, weight, n_unique_x]
    for total, weight in zip(sums, counts):
        blocks.append([float(total), float(weight), 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            t, w, n = blocks.pop()
            blocks[-1][0] += t
            blocks[-1][1] += w
            blocks[-1][2] += n
    fitted_unique = np.concatenate([np.full(int(n), t / w) for t, w, n in blocks]) * sign
    return ux, fitted_unique


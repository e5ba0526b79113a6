"""The memory verdict's statistics: which part of a byte series to judge, and its growth rate. No I/O.

A fixed warm-up (5% of the run) fails a daemon that fills a cache for 20 minutes, one
slope over the whole window dilutes a leak that starts halfway, and an ordinary
least-squares interval over autocorrelated samples is far too narrow. ``leak_fit`` does
four things, each named in its ``method``:

1. **GC sawtooth.** Sharp drops (a first difference below ``-DROP_Z`` robust standard
   deviations of the differences, and at least ``DROP_MIN_FRACTION`` of the series' range)
   that recur at least twice mark a sawtooth; the samples are then binned by its period
   (the median spacing of the drops). The median over one full period of a periodic curve
   does not depend on the phase, so the sawtooth is removed and a trend under it is kept.
   Otherwise the bins are at least the sampling interval, at most ``MAX_BINS`` of them.
2. **Breaks.** On the binned medians, up to ``MAX_BREAKS`` times: the best continuous
   two-segment line (a hinge: the slope changes at τ) and the best line with one upward
   level shift at τ are fitted over a grid of τ (then at every bin near the best); the
   better one is kept when its F statistic against the model without it, both fitted by
   generalised least squares under AR(1) noise (Prais–Winsten), passes ``F_CRIT`` (a sup-F
   test: τ was searched). A hinge whose slope
   falls is a **warm-up** (the window is cut at its end), one whose slope rises is a **leak
   onset** (the hinge stays in the model and the slope after it is judged: the level before
   the onset pins the line); an upward level shift is a **step** (a dummy term: the slope is
   judged with the step removed). Two or more steps of comparable size (the smallest at
   least ``STAIR_RATIO`` of the largest) are a **staircase**, which is growth: the step terms
   are dropped again and the staircase is judged as a slope.
3. **Interval.** The judged slope (the slope at the end of the window) is fitted by
   generalised least squares under AR(1) noise with φ integrated out by its restricted
   likelihood (:func:`soaklib.analysis.ar1.marginal`): a φ the data pin down gives a narrow
   interval, a few strongly correlated minutes a wide one (WARN), never a conclusive
   verdict. ``status`` tests each claim on its own side: **PASS** when the one-sided
   ``confidence`` upper bound (``upper_per_h``, 95%) is within the pass bound, the
   equivalence test of TOST (Schuirmann 1987); **FAIL** when the central interval's low
   end (a one-sided 97.5% bound) is above the fail bound, stricter because a false FAIL
   stops a release. On the benchmark corpus (bench/RESULTS.md) the 95% interval holds the
   planted rate on 95–97% of 1 h curves without a break and 85–90% of those with one found
   (the search itself is not in the interval); false FAILs stay at most 1% per class and a
   curve growing 15–25 MiB/h PASSes at most 2% of the time from 30 min.
   The break search's F tests (2.) use one φ per candidate instead
   (:func:`soaklib.analysis.ar1.phi_estimate`, erring high), which keeps spurious breaks rare.
4. **Report.** The warm-up end, the onset and the steps are times in seconds from the
   first sample; ``judged_from_s`` is where the judged window starts.

Every function takes seconds and values in any unit (bytes for memory) and returns slopes
per hour in the values' unit. Too few points give NaN, never an exception.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from soaklib.analysis.ar1 import Mixture, marginal, phi_estimate, prais_winsten, sse
from soaklib.analysis.units import SECONDS_PER_HOUR, format_duration

MAX_BINS = 240  # binned medians the break search runs on (O(bins × grid))
GRID = 48  # candidate break times per search
MIN_SEGMENT_BINS = 5  # a break leaves at least this many bins on each side
MAX_BREAKS = 3  # at most this many breaks (warm-up, onset, steps) are found
F_CRIT = 16.0  # sup-F critical value after the autocorrelation correction (Andrews 1993: 12.4 at 1% for
#                one restriction with 15% trimming; higher because φ is itself estimated)
DROP_Z = 6.0  # a GC drop: a first difference below -DROP_Z robust SDs of the differences
DROP_MIN_FRACTION = 0.1  # ... and at least this fraction of the series' range
STAIR_RATIO = 1 / 3  # two steps or more, the smallest at least this fraction of the largest: a staircase


@dataclass(frozen=True)
class Break:
    """One change found in a series: ``kind`` is warm-up, onset or step, at ``t_s`` from the first sample."""

    kind: str
    t_s: float
    size: float = math.nan  # a step's height; a hinge's change of slope per hour
    f_stat: float = math.nan


@dataclass(frozen=True)
class LeakFit:
    """The judged growth rate of a series (per hour, in the values' unit) and how it was found."""

    slope_per_h: float
    low_per_h: float  # the central ``confidence`` interval (the FAIL test: its low end above the fail bound)
    high_per_h: float
    intercept: float  # fitted value at ``judged_from_s`` (step terms removed)
    judged_from_s: float  # start of the judged window, seconds from the first sample
    duration_s: float  # length of the judged window
    span_s: float  # length of the whole series
    t0_s: float  # the first sample's time (the caller's clock)
    n_samples: int
    n_bins: int
    bin_s: float
    phi: float  # the noise's lag-1 autocorrelation (its posterior mean; the interval integrates over it)
    n_eff: float  # effective sample size of the judged window
    level_end: float = math.nan  # the fitted value at the last point (steps, onsets, sawtooth phase included)
    level_end_se: float = math.nan  # its standard error
    breaks: tuple[Break, ...] = field(default_factory=tuple)
    staircase: bool = False
    sawtooth_period_s: float | None = None
    confidence: float = 0.95
    upper_per_h: float = math.nan  # the one-sided ``confidence`` upper bound (the PASS test)
    slope_mixture: Mixture | None = field(default=None, compare=False, repr=False)
    method: str = ""

    @property
    def warmup_end_s(self) -> float | None:
        """The end of a warm-up found in the data (seconds from the first sample), else None."""
        w = [b.t_s for b in self.breaks if b.kind == "warm-up"]
        return max(w) if w else None

    @property
    def onset_s(self) -> float | None:
        """Where a leak started (seconds from the first sample), else None."""
        o = [b.t_s for b in self.breaks if b.kind == "onset"]
        return max(o) if o else None

    @property
    def steps(self) -> tuple[Break, ...]:
        return tuple(b for b in self.breaks if b.kind == "step")

    def bounds(self, confidence: float) -> tuple[float, float]:
        """The judged slope's central ``confidence`` interval (per hour), any level, without refitting."""
        if self.slope_mixture is None:
            return math.nan, math.nan
        return self.slope_mixture.interval(confidence)

    def status(self, pass_per_h: float, fail_per_h: float) -> str:
        """PASS when the one-sided upper bound is at most ``pass_per_h``, FAIL when the interval's low end is
        above ``fail_per_h``, else WARN (see the module: each claim at its own level)."""
        if not (math.isfinite(self.low_per_h) and math.isfinite(self.upper_per_h)):
            return "WARN"
        if self.upper_per_h <= pass_per_h:
            return "PASS"
        if self.low_per_h > fail_per_h:
            return "FAIL"
        return "WARN"


def _nan_fit(t0: float, span: float, n: int, confidence: float, why: str) -> LeakFit:
    return LeakFit(math.nan, math.nan, math.nan, math.nan, 0.0, 0.0, span, t0, n, 0, 0.0, math.nan, 0.0,
                   confidence=confidence, method=why)


def clean_series(t_s: Any, values: Any) -> tuple[np.ndarray, np.ndarray]:
    """Float arrays with non-finite pairs dropped, sorted by time."""
    t = np.asarray(pd.to_numeric(pd.Series(np.asarray(t_s).ravel()), errors="coerce"), dtype=float)
    v = np.asarray(pd.to_numeric(pd.Series(np.asarray(values).ravel()), errors="coerce"), dtype=float)
    if t.shape != v.shape:
        raise ValueError(f"t_s has {t.size} values but values has {v.size}")
    keep = np.isfinite(t) & np.isfinite(v)
    t, v = t[keep], v[keep]
    if t.size > 1 and np.any(np.diff(t) < 0):
        order = np.argsort(t, kind="stable")
        t, v = t[order], v[order]
    return t, v


def sawtooth_period(t: np.ndarray, v: np.ndarray) -> float | None:
    """The period of a GC sawtooth (median spacing of recurring sharp drops), None without one."""
    if t.size < 8:
        return None
    d = np.diff(v)
    mad = float(np.median(np.abs(d - np.median(d)))) * 1.4826
    span_v = float(np.ptp(v))
    if span_v <= 0:
        return None
    thr = -max(DROP_Z * mad, DROP_MIN_FRACTION * span_v)
    idx = np.flatnonzero(d < thr)
    if idx.size < 2:
        return None
    starts = idx[np.concatenate(([True], np.diff(idx) > 1))]  # a drop over consecutive samples counts once
    if starts.size < 2:
        return None
    return float(np.median(np.diff(t[starts + 1])))


def _bin(t: np.ndarray, v: np.ndarray, u: np.ndarray | None, bin_s: float
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Mean time, median value (and mean regressor ``u``) per bin of ``bin_s`` seconds."""
    k = np.floor((t - t[0]) / bin_s).astype(np.int64)
    _, start = np.unique(k, return_index=True)
    counts = np.diff(np.append(start, k.size)).astype(float)
    tb = np.add.reduceat(t, start) / counts
    vb = np.array([np.median(v[a:a + int(c)]) for a, c in zip(start, counts)])
    ub = np.add.reduceat(u, start) / counts if u is not None else None
    return tb, vb, ub


def _design(x: np.ndarray, steps: list[float], hinges: list[float], extra: np.ndarray | None = None
            ) -> np.ndarray:
    """Columns: 1, x, one (x − τ)+ per hinge, one 1[x ≥ τ] per step, the sawtooth clock."""
    cols = ([np.ones_like(x), x] + [np.maximum(0.0, x - h) for h in hinges]
            + [(x >= s).astype(float) for s in steps])
    if extra is not None:
        cols.append(extra)
    return np.column_stack(cols)


def _try(X0: np.ndarray, x: np.ndarray, y: np.ndarray, i: int, kind: str) -> tuple[float, float, np.ndarray]:
    tau = float(x[i])
    col = np.maximum(0.0, x - tau) if kind == "hinge" else (x >= tau).astype(float)
    X1 = np.column_stack([X0, col])
    sse1, beta = sse(X1, y)
    return sse1, float(beta[-1]), y - X1 @ beta


def _best_break(x: np.ndarray, y: np.ndarray, steps: list[float], hinges: list[float], extra: np.ndarray | None
                ) -> tuple[str, float, float, float] | None:
    """The best hinge or upward step (grid, then every bin near the best): (kind, τ, size, F corrected for φ)."""
    n = x.size
    if n < 2 * MIN_SEGMENT_BINS + 2:
        return None
    X0 = _design(x, steps, hinges, extra)
    taken = np.searchsorted(x, steps + hinges) if steps or hinges else np.empty(0, dtype=int)

    def allowed(i: int, kind: str) -> bool:
        return not taken.size or bool(np.min(np.abs(taken - i)) >= MIN_SEGMENT_BINS)

    cand = np.unique(np.linspace(MIN_SEGMENT_BINS, n - MIN_SEGMENT_BINS, GRID).astype(int))
    spacing = int(max(1, np.max(np.diff(cand)))) if cand.size > 1 else 1
    best: tuple[float, str, int, float, np.ndarray] | None = None

    def scan(indices: Any, kinds: tuple[str, ...]) -> None:
        nonlocal best
        for i in indices:
            for kind in kinds:
                if not allowed(int(i), kind):
                    continue
                sse1, size, resid = _try(X0, x, y, int(i), kind)
                if kind == "step" and size <= 0:
                    continue  # memory released at once is not a one-time allocation
                if best is None or sse1 < best[0]:
                    best = (sse1, kind, int(i), size, resid)

    scan(cand, ("hinge", "step"))
    if best is None:
        return None
    lo_i, hi_i = max(MIN_SEGMENT_BINS, best[2] - spacing), min(n - MIN_SEGMENT_BINS, best[2] + spacing)
    scan(range(lo_i, hi_i + 1), ("hinge", "step"))
    _, kind, i, size, resid = best
    tau = float(x[i])
    col = np.maximum(0.0, x - tau) if kind == "hinge" else (x >= tau).astype(float)
    X1 = np.column_stack([X0, col])
    p = X1.shape[1]
    phi = phi_estimate(resid, p)
    _, w0, _ = prais_winsten(X0, y, phi)
    beta1, w1, _ = prais_winsten(X1, y, phi)
    if w0 <= 1e-18 * n * (float(np.ptp(y)) ** 2 + 1.0):
        return kind, tau, size, 0.0  # the model without the break already fits exactly
    if w1 <= 0:
        return kind, tau, size, math.inf
    f = (w0 - w1) / (w1 / max(1, n - p))
    return kind, tau, float(beta1[-1]), float(f)


def _slope_interval(x: np.ndarray, y: np.ndarray, steps: list[float], hinges: list[float],
                    extra: np.ndarray | None, binned: bool) -> tuple[Mixture, Mixture, Mixture] | None:
    """The slope at the end (the line's slope plus every hinge's change), the intercept and the level at
    the last point, each with φ integrated out (:func:`soaklib.analysis.ar1.marginal`); None when too few.

    In binned data a step falls inside a bin whose median lies between the two levels, an outlier
    of up to half the step that the likelihood of φ would read as noise: the two bins at each step
    get a term of their own (they no longer inform the slope)."""
    X = _design(x, steps, hinges, extra)
    if binned and steps:
        at = {int(j) for s in steps for j in (np.searchsorted(x, s) - 1, np.searchsorted(x, s)) if 0 < j < x.size - 1}
        if at:
            X = np.column_stack([X] + [(np.arange(x.size) == j).astype(float) for j in sorted(at)])
    n, p = X.shape
    if n < p + 1 or np.ptp(x) <= 0:  # one degree of freedom at least (a very wide interval on 3 samples)
        return None
    c = np.zeros(p)
    c[1: 2 + len(hinges)] = 1.0
    mix = marginal(X, y, np.vstack([c, np.eye(p)[0], X[-1]]))
    return None if mix is None else (mix[0], mix[1], mix[2])


def _since_drop(t: np.ndarray, v: np.ndarray, period: float) -> np.ndarray:
    """Seconds since the last GC drop (the sawtooth's own clock), a regressor for the fit."""
    d = np.diff(v)
    mad = float(np.median(np.abs(d - np.median(d)))) * 1.4826
    thr = -max(DROP_Z * mad, DROP_MIN_FRACTION * float(np.ptp(v)))
    drops = t[1:][d < thr]
    last = np.concatenate(([t[0] - period / 2], drops))
    k = np.searchsorted(last, t, side="right") - 1
    since: np.ndarray = (t - last[k]) / SECONDS_PER_HOUR
    return since


def leak_fit(t_s: Any, values: Any, *, confidence: float = 0.95, min_warmup_s: float = 0.0,
             max_breaks: int = MAX_BREAKS) -> LeakFit:
    """The growth rate of ``values`` (per hour) over the part of the series that tells it; see the module.

    ``min_warmup_s`` is a warm-up the caller knows of (cut before anything is searched);
    ``max_breaks = 0`` fits one line over the whole window (still with the sawtooth
    binning and the autocorrelation-aware interval).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence = {confidence!r}: expected a fraction between 0 and 1")
    t, v = clean_series(t_s, values)
    if t.size == 0:
        return _nan_fit(math.nan, 0.0, 0, confidence, "no samples")
    t0, span = float(t[0]), float(t[-1] - t[0])
    if min_warmup_s > 0:
        keep = t >= t0 + min_warmup_s
        t, v = t[keep], v[keep]
    if t.size < 3 or float(t[-1] - t[0]) <= 0:
        return _nan_fit(t0, span, int(t.size), confidence, "too few samples for a slope")
    dt = float(np.median(np.diff(t)))
    period = sawtooth_period(t, v)
    bin_s = max(dt, float(t[-1] - t[0]) / MAX_BINS)
    u = None
    if period:
        u = _since_drop(t, v, period)
        bin_s = max(dt, min(bin_s, period / 5.0))
    if bin_s > dt * 1.0001:
        tb, y, ub = _bin(t, v, u, bin_s)
    else:
        tb, y, ub = t, v, u
    x = (tb - t0) / SECONDS_PER_HOUR
    breaks: list[Break] = []
    steps: list[float] = []
    hinges: list[float] = []  # leak onsets: the slope after them is judged, the level before them kept
    start = 0
    for _ in range(max(0, max_breaks)):
        found = _best_break(x[start:], y[start:], list(steps), list(hinges), ub[start:] if ub is not None else None)
        if found is None or not found[3] > F_CRIT:
            break
        kind, tau, size, f = found
        if kind == "step":
            steps.append(tau)
            breaks.append(Break("step", tau * SECONDS_PER_HOUR, size, f))
        elif size > 0:
            hinges.append(tau)
            breaks.append(Break("onset", tau * SECONDS_PER_HOUR, size, f))
        elif hinges and tau > min(hinges):
            break  # growth that slows after a leak's onset is no warm-up: the leak is judged from its onset
        else:
            breaks.append(Break("warm-up", tau * SECONDS_PER_HOUR, size, f))
            start = int(np.searchsorted(x, tau))
            steps = [s for s in steps if s > tau]
            hinges = [h for h in hinges if h > tau]
    sizes = [b.size for b in breaks if b.kind == "step" and b.t_s / SECONDS_PER_HOUR in steps]
    staircase = len(sizes) >= 2 and min(sizes) >= STAIR_RATIO * max(sizes)
    judged_steps = [] if staircase else steps
    xs, ys = x[start:], y[start:]
    fitted = _slope_interval(xs, ys, judged_steps, hinges, ub[start:] if ub is not None else None,
                             binned=bin_s > dt * 1.0001)
    slope_mix = fitted[0] if fitted else None
    b, a, level_end, level_end_se, phi = math.nan, math.nan, math.nan, math.nan, math.nan
    lo, hi, upper = math.nan, math.nan, math.nan
    if fitted:
        b, a, level_end, level_end_se, phi = (fitted[0].mean, fitted[1].mean, fitted[2].mean, fitted[2].sd,
                                              fitted[0].phi)
        lo, hi = fitted[0].interval(confidence)
        upper = fitted[0].quantile(confidence)
    n_eff = xs.size * (1 - phi) / (1 + phi) if math.isfinite(phi) else math.nan
    if hinges:
        start = int(np.searchsorted(x, max(hinges)))
        xs = x[start:]
    judged_from_h = float(xs[0]) if xs.size else 0.0
    method = _method(confidence, tb.size, bin_s, dt, period, breaks, staircase, phi, n_eff, min_warmup_s)
    return LeakFit(
        slope_per_h=b, low_per_h=lo, high_per_h=hi,
        intercept=a + b * judged_from_h if math.isfinite(b) else math.nan,
        judged_from_s=judged_from_h * SECONDS_PER_HOUR,
        duration_s=float((xs[-1] - xs[0]) * SECONDS_PER_HOUR) if xs.size else 0.0,
        span_s=span, t0_s=t0, n_samples=int(t.size), n_bins=int(tb.size), bin_s=bin_s,
        phi=phi, n_eff=n_eff, level_end=level_end, level_end_se=level_end_se, breaks=tuple(breaks), staircase=staircase,
        upper_per_h=upper, slope_mixture=slope_mix,
        sawtooth_period_s=period, confidence=confidence, method=method,
    )


def _method(confidence: float, n_bins: int, bin_s: float, dt: float, period: float | None,
            breaks: list[Break], staircase: bool, phi: float, n_eff: float, min_warmup_s: float) -> str:
    parts = []
    if bin_s > dt * 1.0001:
        parts.append(f"medians of {n_bins} bins of {format_duration(bin_s)}")
    else:
        parts.append(f"{n_bins} samples")
    if period:
        parts.append(f"GC sawtooth found (period {format_duration(period)}): time since the last drop is a regressor")
    if min_warmup_s > 0:
        parts.append(f"after a given {format_duration(min_warmup_s)} warm-up")
    for br in breaks:
        if br.kind == "step" and not staircase:
            parts.append(f"one-time step of {br.size / 2**20:+.3g} MiB at {format_duration(br.t_s)} removed")
        elif br.kind == "warm-up":
            parts.append(f"warm-up found, cut at {format_duration(br.t_s)}")
        elif br.kind == "onset":
            parts.append(f"leak onset found at {format_duration(br.t_s)}, judged after it")
    if staircase:
        parts.append(f"staircase of {sum(b.kind == 'step' for b in breaks)} steps judged as growth")
    if not breaks:
        parts.append("no warm-up, onset or step found (hinge/step sup-F test)")
    ci = (f"GLS slope under AR(1) noise, φ integrated out by its restricted likelihood (posterior mean φ "
          f"{phi:.2f}, n_eff {n_eff:.1f}); FAIL: the {confidence:.0%} interval above the fail bound, PASS: the "
          f"one-sided {confidence:.0%} upper bound within the pass bound") if math.isfinite(phi) else "GLS slope"
    return "; ".join([ci, *parts])

"""An early, conclusive FAIL: the memory verdict looked at on every flush, false stops kept rare. No I/O.

Looking at a running verdict after every flush and stopping at the first FAIL would fail
healthy runs far more often than one look does (every look is another chance for the
noise). ``FailMonitor`` spends the false-FAIL rate ``alpha`` over the looks (alpha
spending with the series ``α_k = α · 6 / (π² k²)``, which sums to α over any number of
looks, so the rule holds however long the run is): at look k the growth rate's one-sided
lower bound at level ``1 − α_k`` (from :func:`soaklib.analysis.leak.leak_fit`, the same
verdict as the signoff's) must lie above the FAIL bound. Looks start once
``min_span_s`` of samples exist (default 10 min, the longest automatic warm-up: a cache
still filling is, in the data, a leak until it levels off; a daemon that warms up for
longer needs ``min_span_s`` at least that long), and a stop is confirmed on the samples
up to ``confirm_s`` (5 min) before the look: a one-time step in the last minutes looks
like the start of a leak until the samples after it show it level. The judged window itself (after
a warm-up cut, from a leak onset) must span ``min_span_s`` too. By the union bound the chance that a run whose true rate
is at most the FAIL bound is ever stopped is at most α (given intervals that hold their
level; the benchmark counts the false stops on healthy curves).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from soaklib.analysis.leak import leak_fit
from soaklib.errors import ParameterError

SPEND = 6.0 / math.pi**2  # Σ 1/k² = π²/6


@dataclass(frozen=True)
class Look:
    """One look at the running verdict: the rate so far with its 95% interval, and the stop decision."""

    k: int
    t_s: float  # seconds from the first sample
    slope_per_h: float
    low_per_h: float  # 95% interval: what the progress line shows
    high_per_h: float
    stop_low_per_h: float  # the lower bound at 1 − α_k: what the stop is decided on (NaN: not needed)
    alpha_k: float
    status: str  # PASS / WARN / FAIL so far (95% interval against the bounds)
    stop: bool

    def text(self, label: str, scale: float = 2**20, unit: str = "MiB/h") -> str:
        """``tree RSS +3.1 MiB/h [−0.5, 6.9] PASS so far``."""
        if not math.isfinite(self.slope_per_h):
            return f"{label} – {unit} (too few samples)"
        s, lo, hi = (x / scale for x in (self.slope_per_h, self.low_per_h, self.high_per_h))
        what = "FAIL: conclusive, stopping" if self.stop else f"{self.status} so far"
        return f"{label} {s:+.1f} {unit} [{lo:.1f}, {hi:.1f}] {what}"

    def to_json(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in self.__dict__.items()}


class FailMonitor:
    """The sequential FAIL rule for one series; call :meth:`look` with all samples so far at each flush."""

    def __init__(self, pass_per_h: float, fail_per_h: float, *, alpha: float = 0.01, min_span_s: float = 600.0,
                 confirm_s: float = 300.0, min_warmup_s: float = 0.0) -> None:
        if not 0 < alpha < 1:
            raise ParameterError(f"alpha = {alpha!r}: expected a fraction between 0 and 1", key="stop_on_fail_alpha")
        if not pass_per_h <= fail_per_h:
            raise ParameterError(f"pass bound {pass_per_h} is above the fail bound {fail_per_h}", key="criteria")
        self.pass_per_h, self.fail_per_h, self.alpha = pass_per_h, fail_per_h, alpha
        self.min_span_s, self.min_warmup_s, self.confirm_s = min_span_s, min_warmup_s, confirm_s
        self.k = 0
        self.stopped: Look | None = None

    def alpha_at(self, k: int) -> float:
        return self.alpha * SPEND / (k * k)

    def _confirmed(self, t_s: Any, values: Any, until_s: float, confidence: float) -> bool:
        """The FAIL holds on the samples up to ``until_s`` too: a jump in the last minutes is not yet a leak."""
        t = np.asarray(t_s, dtype=float)
        keep = t <= until_s
        if self.confirm_s <= 0:
            return True
        if float(t[keep].max() - t.min()) < self.min_span_s / 2 if keep.any() else True:
            return False
        earlier = leak_fit(t[keep], np.asarray(values, dtype=float)[keep], min_warmup_s=self.min_warmup_s)
        low, _ = earlier.bounds(confidence)
        return bool(math.isfinite(low) and low > self.fail_per_h)

    def look(self, t_s: Any, values: Any) -> Look | None:
        """The verdict so far (None before ``min_span_s`` of samples); ``stop`` once FAIL is conclusive."""
        fit95 = leak_fit(t_s, values, confidence=0.95, min_warmup_s=self.min_warmup_s)
        if fit95.span_s < self.min_span_s or not math.isfinite(fit95.slope_per_h):
            return None
        self.k += 1
        a = self.alpha_at(self.k)
        stop, strict_low = False, math.nan
        if fit95.low_per_h > self.fail_per_h and fit95.duration_s >= self.min_span_s:
            # (else the stricter bound, lower still, cannot stop; and a stop is decided on min_span_s of
            # judged samples: a leak onset found in the last minutes, or a warm-up just cut, waits)
            strict_low, _ = fit95.bounds(1 - 2 * a)
            stop = bool(math.isfinite(strict_low) and strict_low > self.fail_per_h) and self._confirmed(
                t_s, values, fit95.t0_s + fit95.span_s - self.confirm_s, 1 - 2 * a)
        look = Look(self.k, fit95.span_s, fit95.slope_per_h, fit95.low_per_h, fit95.high_per_h,
                    strict_low, a, fit95.status(self.pass_per_h, self.fail_per_h), stop)
        if stop and self.stopped is None:
            self.stopped = look
        return look

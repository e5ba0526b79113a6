"""Time to exhaustion of a resource (memory, disk, file descriptors) with an 80% interval. No I/O.

Method: the growth rate is :func:`soaklib.analysis.leak.leak_fit`'s (warm-up, onset, steps
and a GC sawtooth found in the data; GLS interval under AR(1) noise). A projection is
made only when growth is conclusive: the rate's ``JUDGE_CONFIDENCE`` (95%) interval lies
above 0. A flat series, a sawtooth or a log that rotates gets no projection
(``status = "flat"``), never an alarm. Otherwise, from the fitted level at the end of the
run ``level`` (standard error ``se``), ``hours = (limit − level) / rate`` and its 80%
interval is ``[(limit − level − z·se) / high, (limit − level + z·se) / low]`` with
``[low, high]`` the rate's 80% interval and z its normal quantile (1.28): both the rate
and the level are uncertain (an upper end of None: the slow end never gets there).
``status`` is one of projected, flat, reached (the level is at the limit already),
no_limit (no limit known) and unknown (too few samples).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from scipy import stats

from soaklib.analysis.leak import leak_fit
from soaklib.analysis.units import SECONDS_PER_HOUR, format_duration

JUDGE_CONFIDENCE = 0.95  # growth must be conclusive at this level before anything is projected
CONFIDENCE = 0.80  # the projection's interval


@dataclass(frozen=True)
class Exhaustion:
    """When ``resource`` reaches ``limit`` at the measured rate (hours from the end of the run)."""

    resource: str
    unit: str
    limit: float | None
    limit_source: str
    level: float | None  # fitted value at the end of the run
    rate_per_h: float | None
    rate_low_per_h: float | None  # the rate's 80% interval
    rate_high_per_h: float | None
    hours: float | None
    hours_low: float | None  # the earliest end of the 80% interval
    hours_high: float | None  # the latest (None: the slow end never reaches the limit)
    status: str  # projected | flat | reached | no_limit | unknown
    method: str

    def to_json(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}

    def text(self) -> str:
        """One line for a report: ``tree RSS reaches 2.0 GiB cgroup limit in 5.3 h [4.1, 7.9] (80%)``."""
        if self.status == "projected" and self.hours is not None:
            hi = format_duration(self.hours_high * SECONDS_PER_HOUR) if self.hours_high is not None else "never"
            return (f"{self.resource} reaches its limit ({self.limit_source}) in "
                    f"{format_duration(self.hours * SECONDS_PER_HOUR)} "
                    f"[{format_duration((self.hours_low or 0.0) * SECONDS_PER_HOUR)}, {hi}] (80%)")
        return {"flat": f"{self.resource}: no projection (not growing conclusively)",
                "reached": f"{self.resource} is at its limit ({self.limit_source})",
                "no_limit": f"{self.resource}: no limit known",
                }.get(self.status, f"{self.resource}: too few samples")


def time_to_exhaustion(
    resource: str, t_s: Any, values: Any, limit: float | None, *, limit_source: str = "", unit: str = "bytes",
    min_warmup_s: float = 0.0, confidence: float = CONFIDENCE,
) -> Exhaustion:
    """The projection for one series against ``limit`` (same unit as ``values``); see the module."""
    fit = leak_fit(t_s, values, confidence=confidence, min_warmup_s=min_warmup_s)
    judged_low, _ = fit.bounds(JUDGE_CONFIDENCE)
    method = (f"rate and level: {fit.method}; projected only when the rate's {JUDGE_CONFIDENCE:.0%} interval is "
              f"above 0; {confidence:.0%} interval of the time from the rate's {confidence:.0%} interval")

    def out(status: str, **kw: Any) -> Exhaustion:
        base: dict[str, Any] = {"level": None, "rate_per_h": None, "rate_low_per_h": None, "rate_high_per_h": None,
                                "hours": None, "hours_low": None, "hours_high": None}
        return Exhaustion(resource=resource, unit=unit, limit=limit, limit_source=limit_source, status=status,
                          method=method, **(base | kw))

    if not math.isfinite(fit.slope_per_h):
        return out("unknown")
    level = fit.level_end
    rates = {"level": level, "rate_per_h": fit.slope_per_h, "rate_low_per_h": fit.low_per_h,
             "rate_high_per_h": fit.high_per_h}
    if limit is None or not math.isfinite(limit):
        return out("no_limit", **rates)
    if level >= limit:
        return out("reached", **rates, hours=0.0, hours_low=0.0, hours_high=0.0)
    if not judged_low > 0:
        return out("flat", **rates)
    room = limit - level
    spread = float(stats.norm.ppf(0.5 + confidence / 2)) * fit.level_end_se  # the level's own uncertainty
    return out("projected", **rates, hours=room / fit.slope_per_h,
               hours_low=max(0.0, room - spread) / fit.high_per_h,
               hours_high=(room + spread) / fit.low_per_h if fit.low_per_h > 0 else None)

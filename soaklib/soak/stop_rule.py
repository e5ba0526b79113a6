"""The running memory verdict of a soak and its early stop (``stop_on_fail``).

The harness hands every sample row to :class:`RunningVerdict`; at each flush interval it
looks at the judged memory series so far (tree RSS, else RSS) with
:class:`soaklib.analysis.sequential.FailMonitor` (the signoff's verdict, the false-FAIL
rate spent over the looks). The progress line shows the running verdict
(``tree RSS +3.1 MiB/h [-0.5, 6.9] PASS so far``); with ``stop_on_fail`` the soak ends at
the first conclusive FAIL and ``to_json()`` (kept in ``observations.json``) says when and
on which row. Default off: the plan's durations stay the default behaviour.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from soaklib.analysis.criteria import Criterion
from soaklib.analysis.sequential import FailMonitor, Look
from soaklib.analysis.units import MIB
from soaklib.params import SoakParams
from soaklib.soak import registry
from soaklib.soak.context import SoakContext

METRIC = "memory_slope_mb_per_h"  # the row a memory stop is decided on
SERIES = (("tree_rss_bytes", "tree RSS"), ("rss_bytes", "RSS"))


def slope_bounds(criteria: Iterable[Criterion], overrides: Mapping[str, Any] | None = None) -> tuple[float, float] | None:
    """The PASS and FAIL bounds (MiB/h) of the memory slope row, with the run's overrides; None without one."""
    for c in criteria:
        if c.metric == METRIC:
            over = dict((overrides or {}).get(METRIC) or {})
            return float(over.get("pass_bound", c.pass_bound)), float(over.get("fail_bound", c.fail_bound))
    return None


def running_verdict(p: SoakParams) -> RunningVerdict | None:
    """The running verdict of a soak with its memory slope bounds (None: the soak judges no memory slope)."""
    bounds = slope_bounds(registry.get(p.soak).criteria(), p.criteria)
    if bounds is None:
        return None
    return RunningVerdict(bounds, every_s=p.sampling.flush_s, enabled=p.stop_on_fail, alpha=p.stop_on_fail_alpha,
                          min_span_s=p.stop_on_fail_after_s, min_warmup_s=p.warmup_s or 0.0)


def progress(running: RunningVerdict | None) -> str:
    """`` · tree RSS +3.1 MiB/h [-0.5, 6.9] PASS so far`` for the progress line ("" before the first look)."""
    text = running.text() if running is not None else ""
    return f" · {text}" if text else ""


class RunningVerdict:
    """Looks at the memory verdict every ``every_s`` seconds of samples; ``stopped`` once a FAIL is conclusive."""

    def __init__(self, bounds_mb_per_h: tuple[float, float], *, every_s: float, enabled: bool = False,
                 alpha: float = 0.01, min_span_s: float = 600.0, min_warmup_s: float = 0.0) -> None:
        pass_b, fail_b = bounds_mb_per_h
        self.monitor = FailMonitor(pass_b * MIB, fail_b * MIB, alpha=alpha, min_span_s=min_span_s,
                                   confirm_s=min(300.0, min_span_s / 2), min_warmup_s=min_warmup_s)
        self.every_s, self.enabled = every_s, enabled
        self.t: list[float] = []
        self.v: list[float] = []
        self.column: str | None = None
        self.label = ""
        self.next_s = every_s
        self.last: Look | None = None
        self.stopped: Look | None = None

    def add(self, row: Mapping[str, Any]) -> bool:
        """Take one sample row; True when the soak should stop now (enabled, and a FAIL is conclusive)."""
        t = row.get("t_s")
        if t is None or self.stopped is not None:
            return False
        if self.column is None:
            self.column, self.label = next(((c, lab) for c, lab in SERIES if row.get(c) is not None), (None, ""))
        value = row.get(self.column) if self.column else None
        if value is None or not math.isfinite(float(value)):
            return False
        self.t.append(float(t))
        self.v.append(float(value))
        if self.t[-1] - self.t[0] < self.next_s:
            return False
        self.next_s = self.t[-1] - self.t[0] + self.every_s
        look = self.monitor.look(self.t, self.v)
        if look is None:
            return False
        self.last = look
        if look.stop and self.enabled:
            self.stopped = look
            return True
        return False

    def text(self) -> str:
        """The running verdict for the progress line ("" before the first look)."""
        if self.last is None:
            return ""
        return self.last.text(self.label) if not (self.last.stop and not self.enabled) else \
            self.last.text(self.label).replace("FAIL: conclusive, stopping", "FAIL: conclusive (stop_on_fail off)")

    def announce(self, ctx: SoakContext) -> str:
        """Record the stop as an event and say it; the recorder's end reason."""
        ctx.event("stop_on_fail", **self.to_json(), message=f"stop_on_fail: {self.text()}")
        ctx.echo(f"soak {ctx.params.soak}: stop_on_fail: {self.text()}")
        return "stop_on_fail"

    def to_json(self) -> dict[str, Any]:
        """``observations.json``'s ``stop_on_fail``: enabled, whether and when it stopped, on which row and series."""
        stop = self.stopped
        return {
            "enabled": self.enabled, "stopped": stop is not None, "metric": METRIC, "series": self.column,
            "stopped_at_s": stop.t_s if stop else None, "look": stop.k if stop else None,
            "slope_mb_per_h": stop.slope_per_h / MIB if stop else None,
            "stop_low_mb_per_h": stop.stop_low_per_h / MIB if stop else None,
            "alpha": self.monitor.alpha, "looks": self.monitor.k,
            "last": self.last.to_json() if self.last else None,
            "rule": "FAIL conclusive at 1 - alpha_k (alpha_k = alpha * 6 / (pi^2 k^2), spent over the looks), "
                    f"confirmed {self.monitor.confirm_s:g} s earlier, no decision before {self.monitor.min_span_s:g} s",
        }

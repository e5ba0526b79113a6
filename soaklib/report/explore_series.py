"""What ``soaklib.explore`` draws: the panels of a soak's series, their data per run, and the
shape-keeping downsampling that keeps a 7-day run at 1 Hz responsive.

Downsampling is MinMaxLTTB (``tsdownsample``, Rust): the min and max of each of
``minmax_ratio × n_out`` buckets are kept first, then Largest-Triangle-Three-Buckets picks
``n_out`` points among them, so a spike of one sample survives the reduction and the
line looks as the full series does.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from soaklib.runs import Run

MIB = 2**20
MAX_POINTS = 2000  # points drawn per series and view; a zoom redraws the visible range at this density


@dataclass(frozen=True)
class Series:
    """One column of the samples as drawn: label and the factor to its unit."""

    column: str
    label: str
    scale: float = 1.0


@dataclass(frozen=True)
class Panel:
    """One row of the figure: a title, the unit of its y axis and its series."""

    key: str
    title: str
    unit: str
    series: tuple[Series, ...]


PANELS: tuple[Panel, ...] = (
    Panel("memory", "Memory", "MiB", (Series("tree_rss_bytes", "tree RSS", 1 / MIB), Series("rss_bytes", "RSS", 1 / MIB),
                                     Series("uss_bytes", "USS", 1 / MIB))),
    Panel("fds", "Open FDs", "FDs", (Series("tree_num_fds", "FDs (tree)"), Series("num_fds", "FDs"))),
    Panel("threads", "Threads", "threads", (Series("threads", "threads"),)),
    Panel("vram", "VRAM", "MiB", (Series("gpu_target_bytes", "target VRAM", 1 / MIB),
                                 Series("gpu_used_bytes", "device used", 1 / MIB))),
    Panel("disk", "Disk", "MiB", (Series("watched_bytes", "watched bytes", 1 / MIB),)),
    Panel("queue", "Queue depth", "requests", (Series("requests_pending", "pending"),
                                              Series("requests_archived", "archived"))),
    Panel("decisions", "Decision counters", "count", (Series("decisions_completed", "completed"),
                                                     Series("dispatch_selfplay", "dispatch selfplay"),
                                                     Series("dispatch_learning", "dispatch learning"),
                                                     Series("heuristic_fallback", "heuristic fallback"))),
    Panel("llm", "LLM health latency", "ms", (Series("llm_latency_ms", "latency"),)),
    Panel("errors", "Errors in the target's log", "lines", (Series("log_errors", "errors"),
                                                           Series("log_tracebacks", "tracebacks"))),
)
#: events drawn as markers (kinds the harness writes); others are drawn too, in grey
EVENT_COLORS = {"probe_injected": "#2ca02c", "halt_requested": "#d62728", "halt_done": "#d62728",
                "llm_down": "#ff7f0e", "llm_up": "#1f77b4", "target_exit": "#8c564b", "target_exited": "#8c564b",
                "first_error": "#e377c2", "error_line": "#e377c2", "draw_injected": "#9467bd"}


@dataclass
class RunData:
    """A run's series as float arrays against seconds since its first sample."""

    name: str
    run: Run
    t0: float  # the run's first t_s (alignment: every run starts at 0)
    t_s: np.ndarray
    values: dict[str, np.ndarray] = field(default_factory=dict)  # column → values (NaN where unread)
    events: pd.DataFrame = field(default_factory=pd.DataFrame)  # t_s (aligned), kind, message
    lane: bool = False  # a multi-provider run: job latency per provider, failed jobs as events


LANE_PREFIX = "latency_ms:"  # a lane's series: successful jobs' latency of one provider


def lane_data(run: Run, name: str | None = None) -> RunData:
    """A multi-provider run as series: each provider's successful jobs' latency at their start time."""
    jobs = run.jobs
    if jobs.empty or not {"provider", "latency_ms", "started_at"} <= set(jobs.columns):
        return RunData(name or run.run_id, run, 0.0, np.empty(0), lane=True)
    start = pd.to_datetime(jobs["started_at"], utc=True)
    jobs = jobs.assign(t_s=(start - start.min()).dt.total_seconds()).sort_values("t_s", kind="stable")
    ok = jobs["success"].fillna(False).astype(bool) if "success" in jobs else pd.Series(True, index=jobs.index)
    latency = pd.to_numeric(jobs["latency_ms"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    values = {f"{LANE_PREFIX}{p}": np.where((jobs["provider"] == p).to_numpy() & ok.to_numpy(), latency, np.nan)
              for p in sorted(jobs["provider"].dropna().unique())}
    failed = jobs[~ok]
    events = pd.DataFrame({"t_s": failed["t_s"].astype(float),
                           "kind": failed.get("reason_code", pd.Series("failed", index=failed.index)).fillna("failed"),
                           "message": failed.get("beads_id", pd.Series("", index=failed.index)).astype(str)})
    return RunData(name or run.run_id, run, 0.0, jobs["t_s"].to_numpy(dtype=float), values,
                   events.reset_index(drop=True), lane=True)


def run_data(run: Run, name: str | None = None) -> RunData:
    """The drawable columns of ``run.samples`` (sorted by time) and its events, aligned to start at 0;
    a multi-provider run's jobs (:func:`lane_data`)."""
    s = run.samples
    if run.kind == "multi-provider" and (s.empty or "t_s" not in s):
        return lane_data(run, name)
    if s.empty or "t_s" not in s:
        return RunData(name or run.run_id, run, 0.0, np.empty(0))
    s = s.sort_values("t_s", kind="stable")
    t = s["t_s"].to_numpy(dtype=float)
    t0 = float(t[0])
    values = {}
    for panel in PANELS:
        for ser in panel.series:
            if ser.column in s and s[ser.column].notna().any():
                values[ser.column] = pd.to_numeric(s[ser.column], errors="coerce").to_numpy(dtype=float,
                                                                                          na_value=np.nan)
    ev = run.events
    if not ev.empty and "t_s" in ev:
        ev = ev.assign(t_s=ev["t_s"].astype(float) - t0)[["t_s", "kind", "message"]].reset_index(drop=True)
    else:
        ev = pd.DataFrame(columns=["t_s", "kind", "message"])
    return RunData(name or run.run_id, run, t0, t - t0, values, ev)


def panels_with_data(runs: list[RunData]) -> list[Panel]:
    """The panels that at least one run has a series for (a lane's job latency first)."""
    providers = sorted({c.removeprefix(LANE_PREFIX) for r in runs for c in r.values if c.startswith(LANE_PREFIX)})
    lane = [Panel("jobs", "Job latency, successful jobs", "s",
                  tuple(Series(f"{LANE_PREFIX}{p}", p, 1 / 1000) for p in providers))] if providers else []
    return lane + [p for p in PANELS if any(ser.column in r.values for r in runs for ser in p.series)]


def downsample(t: np.ndarray, v: np.ndarray, n_out: int = MAX_POINTS, *, t_lo: float | None = None,
               t_hi: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The points of ``(t, v)`` inside ``[t_lo, t_hi]`` reduced to at most ``n_out`` by MinMaxLTTB (NaN dropped)."""
    lo = 0 if t_lo is None else int(np.searchsorted(t, t_lo, side="left"))
    hi = t.size if t_hi is None else int(np.searchsorted(t, t_hi, side="right"))
    # one point either side of the view, so lines run to the edges of a zoom
    lo, hi = max(0, lo - 1), min(t.size, hi + 1)
    tt, vv = t[lo:hi], v[lo:hi]
    keep = np.isfinite(vv)
    if not keep.all():
        tt, vv = tt[keep], vv[keep]
    if tt.size <= n_out or n_out < 3:
        return tt, vv
    from tsdownsample import MinMaxLTTBDownsampler

    sampler = MinMaxLTTBDownsampler()  # type: ignore[no-untyped-call]
    idx = sampler.downsample(np.ascontiguousarray(tt), np.ascontiguousarray(vv), n_out=n_out)
    idx = np.asarray(idx, dtype=np.int64)
    return tt[idx], vv[idx]


def time_unit(span_s: float) -> tuple[float, str]:
    """Seconds per display unit and its name, for an x axis of ``span_s`` seconds."""
    if span_s > 3 * 86400:
        return 86400.0, "d"
    if span_s > 2 * 3600:
        return 3600.0, "h"
    if span_s > 2 * 60:
        return 60.0, "min"
    return 1.0, "s"

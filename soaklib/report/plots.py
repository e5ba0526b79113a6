"""Matplotlib figures for signoffs and notebooks: latency per provider, leak curves,
process metrics, convergence. Functions return a Figure; ``save_figure`` writes a PNG.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg", force=False)  # headless by default; a notebook's inline backend still wins
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from soaklib.analysis.convergence import ISOTONIC_METHOD, isotonic_fit
from soaklib.analysis.latency import ecdf
from soaklib.analysis.units import MIB
from soaklib.store import atomic_write_bytes

MAX_PLOT_POINTS = 4000  # a line of more points than this draws no differently, only slower


def thin(samples: pd.DataFrame, max_points: int = MAX_PLOT_POINTS, keep: pd.Series | None = None) -> pd.DataFrame:
    """Every k-th row so at most ``max_points`` are drawn (rows where ``keep`` is True stay)."""
    n = len(samples)
    if n <= max_points:
        return samples
    mask = np.zeros(n, dtype=bool)
    mask[:: int(np.ceil(n / max_points))] = True
    mask[-1] = True
    if keep is not None:
        mask |= keep.to_numpy(dtype=bool)
    return samples[mask]


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Save ``fig`` as a PNG atomically and close it."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def latency_figure(jobs: pd.DataFrame) -> Figure | None:
    """ECDF and box plot of job latency (seconds) per provider; None when no latency."""
    if jobs.empty or "latency_ms" not in jobs or jobs["latency_ms"].dropna().empty:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    groups = [(p, g["latency_ms"].dropna().to_numpy() / 1000.0) for p, g in jobs.groupby("provider", sort=False)]
    groups = [(p, v) for p, v in groups if len(v)]
    for p, v in groups:
        x, y = ecdf(v)
        ax1.step(x, y, where="post", label=f"{p} (n={len(v)})")
    ax1.set_xlabel("latency (s)")
    ax1.set_ylabel("fraction of jobs ≤ latency")
    ax1.set_title("Latency ECDF per provider")
    ax1.grid(alpha=0.3)
    ax1.legend()
    ax2.boxplot([v for _, v in groups], tick_labels=[p for p, _ in groups], showmeans=True)
    ax2.set_ylabel("latency (s)")
    ax2.set_title("Latency per provider")
    ax2.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def time_unit(span_s: float) -> tuple[float, str]:
    """Seconds per unit and its name for a time axis: s up to 10 min, min up to 3 h, h up to
    3 days, else days."""
    if span_s <= 600:
        return 1.0, "s"
    if span_s <= 3 * 3600:
        return 60.0, "min"
    if span_s <= 3 * 86400:
        return 3600.0, "h"
    return 86400.0, "days"


def integer_axis(ax: Any, values: Any) -> None:
    """Whole-number ticks on the y axis of a count (FDs, threads, requests, cycles); a flat
    count gets a range of ±1 so that its ticks are integers, not 2.84 … 3.16."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size and float(v.max() - v.min()) < 2:
        ax.set_ylim(float(v.min()) - 1, float(v.max()) + 1)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def series_figure(
    samples: pd.DataFrame,
    columns: list[tuple[str, str, float]],
    *,
    title: str,
    time_col: str = "t_s",
    fit: dict[str, dict[str, Any]] | None = None,
    counts: set[str] | frozenset[str] = frozenset(),
) -> Figure | None:
    """One panel per (column, label, scale) against time (s, min, h or days by the span); optional fitted lines.

    ``fit[column]`` may hold ``slope_per_s``, ``intercept``, ``low_per_s``, ``high_per_s``
    (values in the column's unit, before ``scale``) to draw the robust fit and its band,
    ``name`` (the legend's name of the fit) and ``marks`` (``[(t_s, label)]``: dotted
    vertical lines, e.g. the warm-up cut and a leak onset).
    Columns in ``counts`` (FDs, threads, cycles) get whole-number ticks.
    """
    present = [(c, lab, sc) for c, lab, sc in columns if c in samples and samples[c].notna().any()]
    if samples.empty or not present:
        return None
    samples = thin(samples)
    fig, axes = plt.subplots(len(present), 1, figsize=(10, 2.6 * len(present)), sharex=True, squeeze=False)
    t_s = samples[time_col].to_numpy(dtype=float)
    per, unit = time_unit(float(np.nanmax(t_s)) if t_s.size else 0.0)
    t_h = t_s / per
    for ax, (col, label, scale) in zip(axes[:, 0], present):
        y = samples[col].to_numpy(dtype=float) * scale
        ax.plot(t_h, y, lw=0.9, label=label)
        f = (fit or {}).get(col)
        if f and np.isfinite(f.get("slope_per_s", np.nan)):
            t0 = float(f.get("t_start_s", 0.0))
            tt = np.linspace(t0, float(np.nanmax(samples[time_col])), 50)
            mid = f["intercept"] + f["slope_per_s"] * (tt - f.get("t_ref_s", 0.0))
            name = f.get("name", "Theil–Sen fit")
            ax.plot(tt / per, mid * scale, "r--", lw=1.2, label=f"{name} {f.get('label', '')}".strip())
            if np.isfinite(f.get("low_per_s", np.nan)) and np.isfinite(f.get("high_per_s", np.nan)):
                lo = f["intercept"] + f["low_per_s"] * (tt - f.get("t_ref_s", 0.0))
                hi = f["intercept"] + f["high_per_s"] * (tt - f.get("t_ref_s", 0.0))
                ax.fill_between(tt / per, lo * scale, hi * scale, color="r", alpha=0.12, label="95% band")
        for mark_s, what in (f or {}).get("marks", ()):  # e.g. the warm-up cut and a leak onset found in the data
            ax.axvline(float(mark_s) / per, color="k", ls=":", lw=1.0, label=what)
        ax.set_ylabel(label)
        if col in counts:
            integer_axis(ax, y)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    axes[-1, 0].set_xlabel(f"time since start ({unit})")
    axes[0, 0].set_title(title)
    fig.tight_layout()
    return fig


def convergence_figure(x: Any, y: Any, trend: dict[str, Any] | None = None, *, label: str = "hit rate",
                       higher_is_better: bool = True) -> Figure | None:
    """A metric over cycles with the curve that follows it: the isotonic (monotone
    least-squares) fit, a step drawn as a step. The Theil–Sen slope and Kendall tau of
    ``trend`` are stated in the title, not drawn: a straight line through a 0 → 1 step
    has slope 0 and would misdescribe it. A ``target`` in ``trend`` is drawn dashed."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.size == 0:
        return None
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.plot(x, y, "o", ms=4, label=label)
    fx, fy = isotonic_fit(x, y, increasing=higher_is_better)
    if fx.size:
        ax.plot(fx, fy, "r-", lw=1.6, label=ISOTONIC_METHOD)
    trend = trend or {}
    target = trend.get("target")
    if target is not None:
        ax.axhline(float(target), color="tab:green", ls="--", lw=1, label=f"target {target:g}")
    reached = trend.get("x_to_target")
    if reached is not None:
        ax.axvline(float(reached), color="tab:green", ls=":", lw=1, label=f"target reached at cycle {reached:g}")
    slope, tau = trend.get("slope"), trend.get("kendall_tau")
    if slope is not None and np.isfinite(slope):
        state = "converged" if trend.get("converged") else trend.get("trend", "")
        ax.set_title(f"{label} per cycle: {state} (Theil–Sen slope {slope:+.3g}/cycle, Kendall τ "
                     f"{tau if tau is not None else float('nan'):.2f}, p {trend.get('p_value', float('nan')):.2g})",
                     fontsize=9)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("cycle")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- WATCHER soak figures



def leak_figure(samples: pd.DataFrame, fits: dict[str, dict[str, Any]] | None = None, *,
                title: str = "Memory of the target (leak curve)") -> Figure | None:
    """Tree RSS and root RSS in MiB against time, with Theil–Sen fits and 95% bands.

    ``fits`` maps a column to the ``series_figure`` fit keys (values in bytes).
    """
    cols = [("tree_rss_bytes", "tree RSS (MiB)", 1 / MIB), ("rss_bytes", "RSS (MiB)", 1 / MIB)]
    return series_figure(samples, cols, title=title, fit=fits)


def resource_figure(samples: pd.DataFrame, column: str, label: str, *, scale: float = 1.0,
                    title: str, fit: dict[str, Any] | None = None, count: bool = False) -> Figure | None:
    """One resource (FDs, threads, VRAM, disk) against time; None when the column has no value.
    ``count``: whole-number ticks (FDs, threads)."""
    return series_figure(samples, [(column, label, scale)], title=title, fit={column: fit} if fit else None,
                         counts={column} if count else frozenset())


def llm_health_figure(samples: pd.DataFrame, time_col: str = "t_s") -> Figure | None:
    """LLM health per sample: up (2xx/3xx) or down (status 0 = no answer), and latency in ms."""
    if samples.empty or "llm_status" not in samples or samples["llm_status"].dropna().empty:
        return None
    s = samples.dropna(subset=["llm_status"])
    s = thin(s, keep=~s["llm_status"].between(200, 399))  # every sample without an answer stays
    t_s = s[time_col].to_numpy(dtype=float)
    per, unit = time_unit(float(np.nanmax(t_s)) if t_s.size else 0.0)
    t_h = t_s / per
    status = s["llm_status"].to_numpy(dtype=float)
    up = (status >= 200) & (status < 400)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 4.5), sharex=True)
    ax1.step(t_h, up.astype(int), where="post", lw=1.2)
    ax1.scatter(t_h[~up], np.zeros((~up).sum()), color="r", s=12, zorder=3, label="no answer / error")
    ax1.set_yticks([0, 1], ["down", "up"])
    ax1.set_ylim(-0.2, 1.2)
    ax1.set_title("LLM health")
    ax1.grid(alpha=0.3)
    if (~up).any():
        ax1.legend(loc="lower left", fontsize=8)
    if "llm_latency_ms" in s:
        ax2.plot(t_h, s["llm_latency_ms"].to_numpy(dtype=float), ".-", ms=3, lw=0.8)
    ax2.set_ylabel("latency (ms)")
    ax2.set_xlabel(f"time since start ({unit})")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def monitor_figure(samples: pd.DataFrame, time_col: str = "t_s") -> Figure | None:
    """psrecord-style panels of a recorded process tree: RSS (MiB), CPU (%), FDs."""
    rss = "tree_rss_bytes" if "tree_rss_bytes" in samples and samples["tree_rss_bytes"].notna().any() else "rss_bytes"
    cpu = "tree_cpu_pct" if "tree_cpu_pct" in samples and samples["tree_cpu_pct"].notna().any() else "cpu_pct"
    fds = "tree_num_fds" if "tree_num_fds" in samples and samples["tree_num_fds"].notna().any() else "num_fds"
    cols = [(rss, "RSS (MiB)", 1 / MIB), (cpu, "CPU (%)", 1.0), (fds, "open FDs", 1.0)]
    return series_figure(samples, cols, title="Process tree", time_col=time_col, counts={fds})


def queue_figure(samples: pd.DataFrame, requests: pd.DataFrame, time_col: str = "t_s") -> Figure | None:
    """Soak B's queue timeline: pending / archived counts over time, and each staged request
    from staging to its first dispatch and its archive (seconds since the soak started)."""
    has_requests = not requests.empty and "staged_t_s" in requests
    if (samples.empty or "requests_pending" not in samples) and not has_requests:
        return None
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True, height_ratios=[1, 1.4])
    samples = thin(samples)
    ends = [float(samples[time_col].max())] if not samples.empty else []
    if has_requests:
        ends.append(float(np.nanmax(requests[[c for c in ("staged_t_s", "archived_t_s") if c in requests]]
                                    .to_numpy(dtype=float))))
    per, unit = time_unit(max(ends) if ends else 0.0)
    if not samples.empty and "requests_pending" in samples:
        t = samples[time_col].to_numpy(dtype=float) / per
        ax1.step(t, samples["requests_pending"].to_numpy(dtype=float), where="post", label="pending (*.json)")
        ax1.step(t, samples["requests_archived"].to_numpy(dtype=float), where="post", label="archived")
    ax1.set_ylabel("requests")
    if not samples.empty and "requests_pending" in samples:
        integer_axis(ax1, np.concatenate([samples["requests_pending"].to_numpy(dtype=float),
                                          samples["requests_archived"].to_numpy(dtype=float)]))
    ax1.set_title("Request queue")
    ax1.grid(alpha=0.3)
    ax1.legend(loc="upper left", fontsize=8)
    if has_requests:
        for _, r in requests.iterrows():
            y = float(r["seq"])
            end = r.get("archived_t_s")
            end = float(end) if end is not None and np.isfinite(end) else (float(samples[time_col].max())
                                                                          if not samples.empty else r["staged_t_s"])
            colour = "tab:red" if r.get("handled_times", 1) > 1 or r.get("misrouted") else "tab:blue"
            ax2.plot([r["staged_t_s"] / per, end / per], [y, y], "-", color=colour, lw=3, alpha=0.5)
            first = r.get("first_dispatch_t_s")
            if first is not None and np.isfinite(first):
                ax2.plot([first / per], [y], "k|", ms=10)
        ax2.set_yticks(requests["seq"].to_numpy(dtype=float))
        ax2.set_yticklabels([f"{int(s):02d} {t}" for s, t in zip(requests["seq"], requests["logical_type"])], fontsize=7)
        ax2.invert_yaxis()
    ax2.set_xlabel(f"time since start ({unit})")
    ax2.set_title("Each request: staged → archived (| first dispatch seen; red: duplicated or misrouted)")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def loop_figure(loop: pd.DataFrame) -> Figure | None:
    """Soak C's loop over time (``loop.parquet``): cycles, draws injected and each probe."""
    if loop.empty or "t_s" not in loop or "cycles" not in loop:
        return None
    probes = [c for c in loop.columns if c.startswith("probe_")]
    cols = [("cycles", "cycles", 1.0), ("draws_injected", "draws injected", 1.0)]
    return series_figure(loop, cols + [(c, c.removeprefix("probe_"), 1.0) for c in probes], title="Autonomous loop",
                         counts={"cycles", "draws_injected"})


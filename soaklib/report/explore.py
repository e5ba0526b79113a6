"""``soaklib.explore(run_or_runs)``: every series of a soak in one interactive view (Jupyter).

One panel per series group (memory: tree RSS / RSS / USS; FDs; threads; VRAM; disk; queue
depth; decision counters; LLM health latency; error counts) on a shared x axis of time
since start, with a crosshair across the panels; the run's events (probes, halt, LLM
down/up, target exit, error lines, injected draws) as markers with their text; several
runs overlaid, each aligned to start at 0.

Drawn with plotly (a ``FigureWidget`` in a kernel, so zoom events reach Python): each
series is reduced to ``max_points`` by MinMaxLTTB, and a zoom redraws the visible range at
that density from the full data (:mod:`soaklib.report.explore_series`). A warm-up slider
and a window selector recompute the memory slope, its 95% interval and the verdict rows
(``memory_slope_mb_per_h``, ``memory_growth_mb``) with the functions the signoff uses:
``memory_growth`` on the live samples of the window after the warm-up, then ``evaluate``
with the run's criteria, overrides and the slope's interval, by the memory method of the
run's signoff (Theil–Sen, or the segmented leak fit). ``Explorer.views`` holds the
result per run; ``set_warmup``, ``set_window`` and ``zoom`` are what the widgets call.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from soaklib.analysis import evaluate, memory_growth, verdict
from soaklib.analysis.criteria import CriterionRow
from soaklib.errors import ParameterError, SoakError
from soaklib.report.explore_series import (
    EVENT_COLORS,
    MAX_POINTS,
    RunData,
    downsample,
    panels_with_data,
    run_data,
    time_unit,
)
from soaklib.runs import Run, load_run

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f")
DASHES = ("solid", "dot", "dash", "dashdot")
MAX_EVENT_MARKERS = 400  # per run: events past this many are counted, not drawn
PANEL_HEIGHT_PX = 165
MEMORY_METRICS = ("memory_slope_mb_per_h", "memory_growth_mb")


@dataclass(frozen=True)
class View:
    """The memory verdict of one run for a warm-up and a window (seconds since the run's start)."""

    run: str
    warmup_s: float
    t_lo_s: float
    t_hi_s: float
    slope_mb_per_h: float | None
    low_mb_per_h: float | None
    high_mb_per_h: float | None
    n_samples: int
    rows: list[CriterionRow]
    verdict: str  # of the memory rows: PASS / FAIL (WARN rows do not fail), as the signoff decides
    method: str = "theil-sen"  # memory_growth's verdict method: theil-sen or segmented

    def status(self, metric: str = "memory_slope_mb_per_h") -> str | None:
        return next((r["status"] for r in self.rows if r["metric"] == metric), None)


def _finite(x: Any) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def signoff_method(run: Run) -> str:
    """The memory method of the run's written signoff (``memory_growth``'s ``verdict``), else Theil–Sen."""
    a = (run.signoff or {}).get("analysis") or {}
    mem = a.get("tree_rss") or a.get("rss") or {}
    return str(mem.get("verdict") or "theil-sen")


def memory_view(data: RunData, warmup_s: float, t_lo_s: float, t_hi_s: float, method: str = "theil-sen") -> View:
    """The memory rows of a run's window, computed as the signoff computes them (see the module docstring)."""
    from soaklib.soak.observers import alive_samples, memory_intervals, run_criteria, run_params, soak_of

    run = data.run
    s = run.samples
    t = s["t_s"].astype(float) - data.t0 if "t_s" in s else None
    window = s[(t >= t_lo_s) & (t <= t_hi_s)] if t is not None else s
    alive = alive_samples(window)
    span_s = float(window["t_s"].max() - window["t_s"].min()) if len(window) > 1 else 0.0
    a: dict[str, Any] = {"duration_h": span_s / 3600.0}
    for key, col in (("tree_rss", "tree_rss_bytes"), ("rss", "rss_bytes")):
        a[key] = (memory_growth(alive, col, warmup_s=warmup_s, verdict=method)
                  if col in alive and alive[col].notna().any() else None)
    mem = a.get("tree_rss") or a.get("rss")
    slope = _finite(mem["slope_mb_per_h"]) if mem else None
    observed = {"memory_slope_mb_per_h": slope,
                "memory_growth_mb": slope * a["duration_h"] if slope is not None else None}
    try:
        criteria = run_criteria(run, soak_of(run))
    except (SoakError, KeyError):  # a monitor run: judged by soak A's table
        criteria = run_criteria(run, "a")
    criteria = [c for c in criteria if c.metric in MEMORY_METRICS]
    rows = evaluate(criteria, observed, duration_h=a["duration_h"] or None,
                    overrides=run_params(run).get("criteria") or None, intervals=memory_intervals(a))
    return View(data.name, warmup_s, t_lo_s, t_hi_s, slope, _finite(mem["slope_low_mb_per_h"]) if mem else None,
                _finite(mem["slope_high_mb_per_h"]) if mem else None, int(mem["n_samples"]) if mem else 0,
                rows, verdict(rows) if rows else "FAIL", method)


def _default_warmup(data: RunData, method: str) -> float:
    """The signoff's warm-up for the memory fit: the run's ``warmup_s`` (0 when unset) for the
    segmented fit, which finds the warm-up in the data; else ``warmup_for`` (5% of the run when unset)."""
    from soaklib.soak.observers import run_params, warmup_for

    if data.lane:
        return 0.0
    if method == "segmented":
        return float(run_params(data.run).get("warmup_s") or 0.0)
    span = float(data.t_s[-1]) if data.t_s.size else 0.0
    return float(warmup_for(data.run, span))


class Explorer:
    """The interactive view; ``figure`` (plotly), ``widget`` (ipywidgets, in a kernel), ``views`` (per run)."""

    def __init__(self, runs: Sequence[Run], *, max_points: int = MAX_POINTS, widget: bool = True,
                 method: str | None = None) -> None:
        if not runs:
            raise ParameterError("explore: no run given", key="run_or_runs")
        self.data = [run_data(r, self._name(r, i, runs)) for i, r in enumerate(runs)]
        if all(d.t_s.size == 0 for d in self.data):
            raise ParameterError(f"explore: {', '.join(d.name for d in self.data)} has no samples or jobs to draw "
                                 "(explore shows soak, monitor and multi-provider runs)", key="run_or_runs")
        self.max_points = max_points
        if method not in (None, "theil-sen", "segmented"):
            raise ParameterError(f"method = {method!r}: expected theil-sen, segmented or None (as the signoff)",
                                 key="method", value=method)
        self.methods = [method or signoff_method(d.run) for d in self.data]
        self.panels = panels_with_data(self.data)
        self.span_s = max(float(d.t_s[-1]) for d in self.data if d.t_s.size)
        self.unit_s, self.unit = time_unit(self.span_s)
        self.warmup_s = _default_warmup(self.data[0], self.methods[0])
        self.window_s = (0.0, self.span_s)
        self.x_range_s: tuple[float, float] | None = None
        self._traces: list[tuple[int, int, str]] = []  # (trace index, run index, column) of each series trace
        self.figure = self._build(widget)
        self.views: list[View] = []
        self.widget: Any = None
        self._recompute()
        if widget:
            self.widget = self._controls()

    @staticmethod
    def _name(run: Run, i: int, runs: Sequence[Run]) -> str:
        names = [r.run_id for r in runs]
        return run.run_id if names.count(run.run_id) == 1 else f"{run.run_id} ({i + 1})"

    # ----------------------------------------------------------------------- the figure

    def _build(self, widget: bool) -> Any:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        n = len(self.panels)
        fig = make_subplots(rows=n, cols=1, shared_xaxes=True, vertical_spacing=min(0.03, 0.9 / max(1, n - 1)),
                            subplot_titles=[f"{p.title} ({p.unit})" for p in self.panels])
        for ri, d in enumerate(self.data):
            for pi, panel in enumerate(self.panels):
                for si, ser in enumerate(panel.series):
                    if ser.column not in d.values:
                        continue
                    x, y = downsample(d.t_s, d.values[ser.column], self.max_points)
                    fig.add_trace(go.Scatter(x=x / self.unit_s, y=y * ser.scale, mode="lines+markers" if d.lane
                                             else "lines",
                                             name=f"{ser.label} · {d.name}" if len(self.data) > 1 else ser.label,
                                             legendgroup=d.name, line={"color": COLORS[ri % len(COLORS)],
                                                                       "dash": DASHES[si % len(DASHES)], "width": 1.3}),
                                  row=pi + 1, col=1)
                    self._traces.append((len(fig.data) - 1, ri, ser.column))
            self._add_events(fig, ri, d)
        fig.add_trace(go.Scatter(x=[], y=[], mode="lines", name="memory fit (window)",
                                 line={"color": "black", "dash": "dash", "width": 1.5}), row=1, col=1)
        fig.update_xaxes(showspikes=True, spikemode="across", spikesnap="cursor", spikethickness=1, spikecolor="#888")
        fig.update_xaxes(title_text=f"time since start ({self.unit})", row=n, col=1)
        fig.update_layout(height=PANEL_HEIGHT_PX * n + 90, hovermode="x unified", hoversubplots="axis",
                          margin={"l": 60, "r": 20, "t": 40, "b": 40}, template="plotly_white",
                          legend={"font": {"size": 10}})
        fig.update_annotations(font_size=11)
        if widget:
            fig = go.FigureWidget(fig)
            for ax in fig.select_xaxes():
                ax.on_change(self._on_relayout, "range")
        return fig

    def _add_events(self, fig: Any, ri: int, d: RunData) -> None:
        import plotly.graph_objects as go

        ev = d.events
        if ev.empty:
            return
        shown = ev.iloc[:MAX_EVENT_MARKERS]
        text = [f"{d.name}: {k} — {m}" if len(self.data) > 1 else f"{k} — {m}"
                for k, m in zip(shown["kind"], shown["message"].fillna(""))]
        colors = [EVENT_COLORS.get(k, "#7f7f7f") for k in shown["kind"]]
        fig.add_trace(go.Scatter(x=shown["t_s"].to_numpy(dtype=float) / self.unit_s, y=[0] * len(shown),
                                 mode="markers", name=f"events · {d.name}" if len(self.data) > 1 else "events",
                                 marker={"symbol": "triangle-up", "size": 9, "color": colors},
                                 hovertext=text, hoverinfo="text", yaxis="y", legendgroup=d.name),
                      row=1, col=1)
        for t, k in zip(shown["t_s"].iloc[:60], shown["kind"].iloc[:60]):
            fig.add_shape(type="line", x0=float(t) / self.unit_s, x1=float(t) / self.unit_s, xref="x", yref="paper",
                          y0=0, y1=1, line={"color": EVENT_COLORS.get(k, "#bbb"), "width": 0.6, "dash": "dot"})

    def _fit_line(self) -> tuple[list[float], list[float]]:
        """The primary run's Theil–Sen fit over the analysed window (tree RSS, else RSS), in MiB."""
        v = self.views[0] if self.views else None
        d = self.data[0]
        if d.lane:
            return [], []
        col = "tree_rss_bytes" if "tree_rss_bytes" in d.values else "rss_bytes"
        if v is None or v.slope_mb_per_h is None or col not in d.values:
            return [], []
        lo = max(v.t_lo_s, float(d.t_s[0]) if d.t_s.size else 0.0) + v.warmup_s
        hi = v.t_hi_s
        keep = (d.t_s >= lo) & (d.t_s <= hi) & np.isfinite(d.values[col])
        if not keep.any():
            return [], []
        tt, vv = d.t_s[keep], d.values[col][keep] / 2**20
        mid = float(np.median(tt))
        level = float(np.median(vv - v.slope_mb_per_h * (tt - mid) / 3600.0))
        xs = [float(tt[0]), float(tt[-1])]
        return [x / self.unit_s for x in xs], [level + v.slope_mb_per_h * (x - mid) / 3600.0 for x in xs]

    def _redraw_overlays(self) -> None:
        fig = self.figure
        x, y = self._fit_line()
        with fig.batch_update():
            fig.data[-1].x, fig.data[-1].y = x, y
            keep = [s for s in fig.layout.shapes if getattr(s, "name", None) not in ("warmup", "window")]
            t_lo, t_hi = self.window_s
            w_hi = min(t_hi, t_lo + self.warmup_s)
            fig.layout.shapes = (*keep,
                                 {"type": "rect", "name": "warmup", "xref": "x", "yref": "paper", "y0": 0, "y1": 1,
                                  "x0": t_lo / self.unit_s, "x1": w_hi / self.unit_s, "fillcolor": "#999",
                                  "opacity": 0.15, "line": {"width": 0}, "layer": "below"},
                                 {"type": "rect", "name": "window", "xref": "x", "yref": "paper", "y0": 0, "y1": 1,
                                  "x0": t_lo / self.unit_s, "x1": t_hi / self.unit_s,
                                  "line": {"color": "#555", "width": 1, "dash": "dash"}, "layer": "below"})

    # ----------------------------------------------------------------------- callbacks

    def _recompute(self) -> list[View]:
        t_lo, t_hi = self.window_s
        self.views = [memory_view(d, self.warmup_s, t_lo, t_hi, m) for d, m in zip(self.data, self.methods)
                      if d.t_s.size and not d.lane]
        self._redraw_overlays()
        if getattr(self, "widget", None) is not None:
            self._syncing = True  # the sliders follow a call made from Python, without calling back
            try:
                self.warmup_slider.value = self.warmup_s
                self.window_slider.value = list(self.window_s)
            finally:
                self._syncing = False
            self._row_html.value = self.row_html()
        return self.views

    def set_warmup(self, warmup_s: float) -> list[View]:
        """Leave the first ``warmup_s`` seconds of the window out of the fit; recompute the rows."""
        if not warmup_s >= 0:
            raise ParameterError(f"warmup_s = {warmup_s!r}: expected seconds >= 0", key="warmup_s")
        self.warmup_s = float(warmup_s)
        return self._recompute()

    def set_window(self, t_lo_s: float, t_hi_s: float) -> list[View]:
        """Judge only the samples between ``t_lo_s`` and ``t_hi_s`` (seconds since start); recompute the rows."""
        if not t_hi_s > t_lo_s:
            raise ParameterError(f"window {t_lo_s!r}..{t_hi_s!r}: expected start < end", key="window")
        self.window_s = (max(0.0, float(t_lo_s)), min(self.span_s, float(t_hi_s)))
        return self._recompute()

    def zoom(self, t_lo_s: float | None, t_hi_s: float | None) -> None:
        """Show ``[t_lo_s, t_hi_s]`` (None: everything), redrawn at full density from all samples."""
        self.x_range_s = None if t_lo_s is None or t_hi_s is None else (float(t_lo_s), float(t_hi_s))
        lo, hi = self.x_range_s or (None, None)
        fig = self.figure
        with fig.batch_update():
            for ti, ri, col in self._traces:  # each run's events trace sits between its series and the next run's
                trace = fig.data[ti]
                d = self.data[ri]
                scale = next(s.scale for p in self.panels for s in p.series if s.column == col)
                x, y = downsample(d.t_s, d.values[col], self.max_points, t_lo=lo, t_hi=hi)
                trace.x, trace.y = x / self.unit_s, y * scale
            if self.x_range_s is None:
                fig.update_xaxes(autorange=True)
            else:
                fig.update_xaxes(range=[lo / self.unit_s, hi / self.unit_s])  # type: ignore[operator]

    def _on_relayout(self, axis: Any, x_range: Any) -> None:
        if self._zooming:
            return
        self._zooming = True
        try:
            if x_range is None:
                self.zoom(None, None)
            else:
                lo, hi = (float(x) * self.unit_s for x in x_range)
                if self.x_range_s is None or abs(lo - self.x_range_s[0]) + abs(hi - self.x_range_s[1]) > 1e-9:
                    self.zoom(lo, hi)
        finally:
            self._zooming = False

    _zooming = False
    _syncing = False

    def _on_warmup(self, change: dict[str, Any]) -> None:
        if not self._syncing:
            self.set_warmup(change["new"])

    def _on_window(self, change: dict[str, Any]) -> None:
        if not self._syncing:
            self.set_window(*change["new"])

    # ----------------------------------------------------------------------- widgets and display

    def row_html(self) -> str:
        """The verdict rows of every run as a small HTML table."""
        def f(x: float | None) -> str:
            return "–" if x is None else f"{x:+.3g}"

        cells = []
        for v in self.views:
            for r in v.rows:
                color = {"PASS": "#2ca02c", "WARN": "#ff7f0e", "FAIL": "#d62728"}.get(r["status"], "#555")
                cells.append(f"<tr><td>{v.run}</td><td>{r['metric']}</td><td>{f(r['observed'])} {r['unit']}</td>"
                             f"<td>[{f(v.low_mb_per_h)}, {f(v.high_mb_per_h)}] MiB/h</td>"
                             f"<td>{r['pass_bound']}</td><td>{r['fail_bound']}</td>"
                             f"<td style='color:{color};font-weight:bold'>{r['status']}</td></tr>")
        head = ("<tr><th>run</th><th>metric</th><th>observed</th><th>slope 95% CI</th><th>pass</th><th>fail</th>"
                "<th>status</th></tr>")
        t_lo, t_hi = self.window_s
        return (f"<div style='font-size:12px'>window {t_lo / self.unit_s:.4g}–{t_hi / self.unit_s:.4g} {self.unit}, "
                f"warm-up {self.warmup_s:.4g} s<table>{head}{''.join(cells)}</table></div>")

    def _controls(self) -> Any:
        import ipywidgets as w

        step = max(self.span_s / 500.0, 1e-3)
        self.warmup_slider = w.FloatSlider(value=self.warmup_s, min=0.0, max=self.span_s, step=step,
                                           description="warm-up (s)", continuous_update=False,
                                           layout=w.Layout(width="45%"))
        self.window_slider = w.FloatRangeSlider(value=list(self.window_s), min=0.0, max=self.span_s, step=step,
                                                description="window (s)", continuous_update=False,
                                                layout=w.Layout(width="55%"))
        self.warmup_slider.observe(self._on_warmup, names="value")
        self.window_slider.observe(self._on_window, names="value")
        self._row_html = w.HTML(self.row_html())
        return w.VBox([w.HBox([self.warmup_slider, self.window_slider]), self._row_html, self.figure])

    def static_figure(self) -> Any:
        """A plain ``plotly.graph_objects.Figure`` copy (for HTML export or ``write_image``)."""
        import plotly.graph_objects as go

        return go.Figure(self.figure)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle: dict[str, Any] = {}
        if self.widget is not None:
            bundle.update(self.widget._repr_mimebundle_(include=include, exclude=exclude) or {})
        bundle["application/vnd.plotly.v1+json"] = self.static_figure().to_plotly_json()
        bundle["text/plain"] = repr(self)
        return bundle

    def __repr__(self) -> str:
        rows = "; ".join(f"{v.run}: {v.status() or '–'} ({v.slope_mb_per_h} MiB/h)" for v in self.views)
        return f"<Explorer of {len(self.data)} run(s), {len(self.panels)} panels; {rows}>"


def explore(run_or_runs: Run | str | os.PathLike[str] | Sequence[Run | str | os.PathLike[str]], *,
            max_points: int = MAX_POINTS, widget: bool = True, method: str | None = None) -> Explorer:
    """An interactive view of one run or several overlaid (runs, run folders or signoff JSON paths).

    In Jupyter the result displays as the widget (sliders, verdict rows, the figure);
    ``widget=False`` builds only the plotly figure (no ipywidgets), e.g. for a script.
    ``method`` is ``memory_growth``'s verdict method for the memory rows: ``theil-sen``
    (a slope on binned medians after the warm-up), ``segmented`` (the leak fit: warm-up
    end, onset and steps found in the data, ``warmup_s`` as its least warm-up), or None:
    the method of the run's written signoff (Theil–Sen when it has none)."""
    items = [run_or_runs] if isinstance(run_or_runs, (Run, str, os.PathLike)) else list(run_or_runs)
    runs = [r if isinstance(r, Run) else load_run(r) for r in items]
    return Explorer(runs, max_points=max_points, widget=widget, method=method)

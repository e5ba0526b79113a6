"""The segmented memory verdict as a soak's signoff shows it: the figure's fit and the rows' note.

The slope a memory row judges is :func:`soaklib.analysis.leak.leak_fit`'s (through
``memory_growth(..., verdict="segmented")``); the leak figure draws that fit from where it
was judged (after a warm-up cut or a leak onset found in the data, marked by dotted lines),
and the row's note names the method.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from soaklib.analysis.leak import leak_fit
from soaklib.analysis.units import SECONDS_PER_HOUR, format_duration


def figure_fit(samples: pd.DataFrame, column: str, warmup_s: float = 0.0) -> dict[str, Any] | None:
    """``series_figure``'s fit keys for one byte column: the judged slope with its 95% band and the marks found."""
    t = samples["t_s"].to_numpy(dtype=float)
    fit = leak_fit(t, samples[column].to_numpy(dtype=float, na_value=np.nan), min_warmup_s=warmup_s)
    if not math.isfinite(fit.slope_per_h):
        return None
    t_end = fit.t0_s + fit.span_s
    starts = [fit.judged_from_s] + [b.t_s for b in fit.steps if not fit.staircase]
    marks = [(fit.t0_s + at, what) for at, what in ((fit.warmup_end_s, "warm-up cut"), (fit.onset_s, "leak onset"))
             if at is not None]
    per_s = 1.0 / SECONDS_PER_HOUR
    return {"slope_per_s": fit.slope_per_h * per_s, "low_per_s": fit.low_per_h * per_s,
            "high_per_s": fit.high_per_h * per_s, "intercept": fit.level_end, "t_ref_s": t_end,
            "t_start_s": fit.t0_s + max(starts), "label": f"{fit.slope_per_h / 2**20:+.2f} MB/h",
            "name": "segmented GLS fit", "marks": marks}


def verdict_note(mem: Mapping[str, Any], slope_mb_per_h: float, run: str) -> str:
    """``fitted growth: <method> slope S MiB/h × <run> run``, the method said as the memory row's note."""
    if mem.get("verdict") != "segmented":
        return f"fitted growth: Theil–Sen slope {slope_mb_per_h:.3g} MiB/h × {run} run"
    found = [f"warm-up found and cut at {format_duration(mem['warmup_end_s'])}" if mem.get("warmup_end_s") is not None
             else "", f"leak onset found at {format_duration(mem['onset_s'])}" if mem.get("onset_s") is not None else "",
             "a staircase judged as growth" if mem.get("staircase") else
             f"{len(mem['steps'])} one-time step(s) removed" if mem.get("steps") else ""]
    where = "; ".join(x for x in found if x) or "no warm-up, onset or step found"
    return (f"fitted growth: slope {slope_mb_per_h:.3g} MiB/h × {run} run (segmented verdict: GLS slope under AR(1) "
            f"noise, φ integrated out, PASS on its one-sided 95% upper bound, effective n {mem.get('n_eff', math.nan):.1f}; {where})")

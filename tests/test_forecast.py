"""Time-to-exhaustion rows of a soak (``soaklib.soak.forecast``) from samples and the limits read at start."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from soaklib.report.soak_markdown import _exhaustion
from soaklib.soak.forecast import forecasts

MIB = 2**20
H = 3600.0


def frame() -> pd.DataFrame:
    t = np.arange(0.0, 2 * H + 1, 30.0)
    rng = np.random.default_rng(2)
    return pd.DataFrame({
        "t_s": t,
        "tree_rss_bytes": (400.0 + 100.0 * t / H + rng.normal(0, 0.5, t.size)) * MIB,  # 100 MiB/h: 600 MiB at 2 h
        "disk_free_bytes": np.full(t.size, 50e9),  # flat: no projection
        "tree_num_fds": 40.0 + np.round(rng.normal(0, 0.3, t.size)),
    })


def test_memory_against_the_parameter_limit_disk_flat_fds_flat():
    s = frame()
    rows = forecasts(s, s, {"memory_limit_bytes": 8 * 2**30, "memory_limit_source": "host memory", "nofile_soft": 1024},
                     {"memory_limit_mb": 1000.0})
    mem, disk, fds = rows
    assert mem["resource"] == "tree RSS" and mem["limit_source"] == "memory_limit_mb" and mem["status"] == "projected"
    assert mem["hours"] == pytest.approx((1000.0 - 600.0) / 100.0, rel=0.05)
    assert mem["hours_low"] <= 4.0 <= mem["hours_high"]
    assert disk["status"] == "flat" and disk["hours"] is None and disk["level"] == pytest.approx(50e9, rel=1e-6)
    assert fds["status"] == "flat" and fds["limit"] == 1024.0
    md = "\n".join(_exhaustion({"analysis": {"exhaustion": rows}}))
    assert "## Time to exhaustion" in md and "memory_limit_mb" in md and "no projection" in md


def test_without_a_parameter_the_recorded_limit_is_used_and_missing_series_are_left_out():
    s = frame()[["t_s", "tree_rss_bytes"]]
    rows = forecasts(s, s, {"memory_limit_bytes": 2 * 2**30, "memory_limit_source": "cgroup memory.max"}, {})
    assert len(rows) == 1 and rows[0]["limit_source"] == "cgroup memory.max"
    assert rows[0]["hours"] == pytest.approx((2048.0 - 600.0) / 100.0, rel=0.05)
    assert forecasts(s, s, None, None)[0]["status"] == "no_limit"


def test_the_leak_figure_fit_marks_the_warm_up_cut_and_the_onset():
    from soaklib.soak.memory_verdict import figure_fit, verdict_note

    t = np.arange(0.0, 2 * H, 30.0)
    rng = np.random.default_rng(1)
    mb = 300 + 150 * np.minimum(1, t / 1200) + 100 / H * np.maximum(0, t - 4000) + rng.normal(0, 1.5, t.size)
    fit = figure_fit(pd.DataFrame({"t_s": t, "tree_rss_bytes": mb * MIB}), "tree_rss_bytes")
    assert fit is not None and fit["name"] == "segmented GLS fit"
    (cut, w), (onset, o) = fit["marks"]
    assert (w, o) == ("warm-up cut", "leak onset")
    assert abs(cut - 1200) <= 120 and abs(onset - 4000) <= 0.1 * 2 * H
    assert fit["slope_per_s"] * H == pytest.approx(100.0 * MIB, rel=0.1) and fit["t_start_s"] == pytest.approx(onset)
    note = verdict_note({"verdict": "segmented", "warmup_end_s": cut, "onset_s": onset, "n_eff": 12.0}, 100.0, "2.0 h")
    assert "segmented verdict" in note and "leak onset found at" in note and "warm-up found and cut at" in note

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

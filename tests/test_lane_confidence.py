"""Known values of the lane's confidence figures (``soaklib.analysis.lane``): Wilson bounds, pass^k, rounds needed."""
from __future__ import annotations

import math

import pytest

from soaklib.analysis.compare import wilson_interval
from soaklib.analysis.lane import (
    clean_jobs_needed,
    confidence_rows,
    lane_confidence,
    pass_hat_k,
    provider_confidence,
    wilson_bounds,
)
from soaklib.errors import ParameterError

Z2 = 1.959963984540054**2


def test_wilson_known_values():
    assert wilson_bounds(12, 12)[0] == pytest.approx(12 / (12 + Z2))  # all clean: n / (n + z²)
    assert wilson_bounds(12, 12)[1] == pytest.approx(1.0)
    assert wilson_bounds(0, 10) == pytest.approx((0.0, Z2 / (10 + Z2)))
    assert wilson_bounds(7, 10) == pytest.approx(wilson_interval(7, 10))
    assert wilson_bounds(7, 10) == pytest.approx((0.3968, 0.8922), abs=1e-4)
    assert all(math.isnan(x) for x in wilson_bounds(0, 0))
    with pytest.raises(ParameterError):
        wilson_bounds(3, 2)


def test_pass_hat_k_known_values():
    assert pass_hat_k([(2, 3)], 2) == pytest.approx(1 / 3)  # C(2,2)/C(3,2)
    assert pass_hat_k([(3, 3), (2, 3)], 3) == pytest.approx(0.5)
    assert pass_hat_k([(3, 4), (1, 2)], 1) == pytest.approx((0.75 + 0.5) / 2)  # k = 1: the mean rate per prompt
    assert pass_hat_k([(1, 2), (2, 2)], 2) == pytest.approx(0.5)  # one prompt failed once: pass^2 1/2, rate 3/4
    assert math.isnan(pass_hat_k([(1, 1)], 2))
    with pytest.raises(ParameterError):
        pass_hat_k([(1, 1)], 0)


def test_clean_jobs_needed_known_values():
    assert clean_jobs_needed(0, 0, 0.95) == math.ceil(0.95 * Z2 / 0.05) == 73
    assert clean_jobs_needed(12, 12, 0.95) == 73 - 12
    m = clean_jobs_needed(11, 12, 0.95)  # one failure: more clean jobs than from a clean start
    assert m is not None and m > 61
    assert wilson_bounds(11 + m, 12 + m)[0] >= 0.95 > wilson_bounds(11 + m - 1, 12 + m - 1)[0]
    assert clean_jobs_needed(100, 100, 0.95) == 0
    with pytest.raises(ParameterError):
        clean_jobs_needed(1, 1, 1.0)


def test_twelve_job_clean_demo_per_provider():
    # 3 providers × 2 prompts × 2 rounds, every job passed
    jobs = [(p, f"{p}-{i}", True) for _ in range(2) for p in ("opencode", "cc-glm", "gemini") for i in range(2)]
    got = lane_confidence(jobs, jobs_per_round=2)
    assert [c.provider for c in got] == ["opencode", "cc-glm", "gemini"]
    for c in got:
        assert (c.jobs, c.passed, c.prompts, c.k) == (4, 4, 2, 2)
        assert c.wilson_low == pytest.approx(4 / (4 + Z2)) and c.pass_k == 1.0
        assert c.jobs_needed == 73 - 4 and c.rounds_needed == math.ceil(69 / 2)
    rows = confidence_rows(got)
    assert rows[0][:3] == ["opencode", "4/4", "100.0%"] and "51.0%" in rows[0][3] and "k = 2" in rows[0][4]


def test_one_failed_attempt_lowers_pass_k_below_the_rate():
    c = provider_confidence("gemini", [("a", True), ("b", True), ("a", True), ("b", False)], jobs_per_round=2)
    assert c.success_rate == 0.75 and c.pass_k == pytest.approx(0.5) and c.k == 2
    assert c.to_json()["wilson_low"] == pytest.approx(wilson_bounds(3, 4)[0])
    empty = provider_confidence("none", [], jobs_per_round=2)
    assert empty.success_rate is None and empty.wilson_low is None and empty.pass_k is None
    assert empty.rounds_needed == 37


def test_twelve_job_clean_dry_run_shows_the_confidence_rows(tmp_path):
    import json
    import os
    import subprocess
    import sys

    out_dir = tmp_path / "out"
    env = {**os.environ, "DX_SIM_TICK_S": "0.2", "DX_SIM_LATENCY_SCALE": "0.3", "DX_SIM_PREFLIGHT_S": "0.01"}
    p = subprocess.run([sys.executable, "-m", "soaklib.cli", "multi-provider", "--output-dir", str(out_dir),
                        "--no-progress", "--dry-run", "--run-id", "conf1"], capture_output=True, text=True,
                       timeout=120, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    e = json.loads((out_dir / "conf1.json").read_text())
    gc = e["gate_confidence"]
    assert e["total_jobs"] == 12 and gc["target"] == 0.95
    assert set(gc["providers"]) == {"opencode", "cc-glm", "gemini"}
    for c in gc["providers"].values():
        assert (c["jobs"], c["passed"], c["k"]) == (4, 4, 2)
        assert c["wilson_low"] == pytest.approx(4 / (4 + Z2)) and c["pass_k"] == 1.0 and c["rounds_needed"] == 35
    md = (out_dir / "conf1.md").read_text()
    assert "## Confidence" in md and "| opencode | 4/4 | 100.0% | 51.0% – 100.0% | 100.0% (k = 2) | 35 (69 jobs) |" in md

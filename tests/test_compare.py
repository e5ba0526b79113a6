"""``soak compare`` / ``soaklib.compare``: real soaks of the reference daemon and real simulator lanes."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import soaklib
from soaklib.errors import ParameterError
from soaklib.report.compare import write_comparison
from soaklib.store import write_table
from tests.conftest import PYTHON, REPO
from tests.test_soak_a import soak

FAST_SIM = {"DX_SIM_TICK_S": "0.2", "DX_SIM_LATENCY_SCALE": "0.3", "DX_SIM_PREFLIGHT_S": "0.01"}


def cli(*args: str, env: dict[str, str] | None = None, timeout_s: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "soaklib.cli", *args], capture_output=True, text=True, timeout=timeout_s,
                          cwd=REPO, env={**os.environ, **FAST_SIM, **(env or {})})


@pytest.fixture(scope="module")
def soaks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two flat 4-s soaks A of the reference daemon and one with a planted leak, in one folder."""
    out = tmp_path_factory.mktemp("soaks")
    soak(out, "flat-1")
    soak(out, "flat-2")
    soak(out, "leaky", sim={"poll_s": 0.1, "leak_mb_per_h": 36000.0})
    return out


@pytest.fixture(scope="module")
def lanes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two demo lanes (2 rounds × 6 jobs, scenario clean) and one round on a 3× slower simulator,
    one after the other (run side by side, they would slow each other's jobs down)."""
    out = tmp_path_factory.mktemp("lanes")
    for run_id, scale, rounds in (("lane-1", "0.3", "2"), ("lane-2", "0.3", "2"), ("lane-slow", "0.9", "1")):
        p = cli("multi-provider", "--dry-run", "--rounds", rounds, "--parallel", "6", "--run-id", run_id,
                "--output-dir", str(out), "--no-progress", env={"DX_SIM_LATENCY_SCALE": scale})
        assert p.returncode == 0, p.stdout + p.stderr
    return out


def by_metric(data: dict[str, Any], group: str = "") -> dict[str, dict[str, Any]]:
    return {d["metric"]: d for d in data["differences"] if d["group"] == group}


def test_planted_leak_fails_the_gate_naming_the_metric(soaks: Path, tmp_path: Path) -> None:
    p = cli("compare", str(soaks / "flat-1"), str(soaks / "leaky"), "--fail-on", "memory_slope_mb_per_h",
            "--out", str(tmp_path))
    assert p.returncode == 1, p.stdout + p.stderr
    assert "regression on: memory_slope_mb_per_h" in p.stdout
    data = json.loads((tmp_path / "compare-flat-1-vs-leaky.json").read_text())
    slope = by_metric(data)["memory_slope_mb_per_h"]
    assert slope["judgement"] == "worse" and 30000 < slope["delta"] < 42000 and slope["low"] > 0
    assert data["regressions"] == ["memory_slope_mb_per_h"] and data["exit_code"] == 1
    changed = {c["metric"]: c for c in data["status_changes"]}
    base_status = changed["memory_slope_mb_per_h"]["base_status"]
    assert base_status in ("PASS", "WARN")  # a 4-s flat soak's slope interval may straddle the pass bound
    assert changed["memory_slope_mb_per_h"]["new_status"] == "FAIL"
    md = (tmp_path / "compare-flat-1-vs-leaky.md").read_text()
    assert "**REGRESSION** on memory_slope_mb_per_h" in md and f"| memory_slope_mb_per_h | {base_status} | FAIL |" in md
    assert (tmp_path / "compare-flat-1-vs-leaky.png").stat().st_size > 5000
    assert data["figure"] == "compare-flat-1-vs-leaky.png"


def test_two_flat_soaks_pass_the_gate(soaks: Path, tmp_path: Path) -> None:
    p = cli("compare", str(soaks / "flat-1"), str(soaks / "flat-2"), "--fail-on",
            "memory_slope_mb_per_h,latency_ms_p95", "--out", str(tmp_path))
    assert p.returncode == 0, p.stdout + p.stderr
    data = json.loads((tmp_path / "compare-flat-1-vs-flat-2.json").read_text())
    assert by_metric(data)["memory_slope_mb_per_h"]["judgement"] in ("same", "better")
    assert {"fd_range", "threads_max", "disk_growth_mb", "disk_slope_mb_per_h"} <= set(by_metric(data))


def test_a_baseline_folder_means_its_latest_run_of_the_same_kind(soaks: Path) -> None:
    c = soaklib.compare(soaks, soaks / "leaky", fail_on=["memory_slope_mb_per_h"])
    assert c.base.run_id == "flat-2" and c.new.run_id == "leaky"  # the latest other soak A
    assert c.regressions == ["memory_slope_mb_per_h"] and c.exit_code == 1


def test_min_effect_can_tolerate_a_known_leak(soaks: Path) -> None:
    c = soaklib.compare(soaks / "flat-1", soaks / "leaky", fail_on=["memory_slope_mb_per_h"],
                        min_effect={"memory_slope_mb_per_h": 1e6})
    assert c.exit_code == 0


def test_two_demo_lanes_of_the_same_scenario_pass(lanes: Path, tmp_path: Path) -> None:
    p = cli("compare", str(lanes / "lane-1.json"), str(lanes / "lane-2"), "--fail-on",
            "latency_ms_p95,success_rate", "--out", str(tmp_path))
    assert p.returncode == 0, p.stdout + p.stderr
    data = json.loads((tmp_path / "compare-lane-1-vs-lane-2.json").read_text())
    assert {d["group"] for d in data["differences"]} == {"opencode", "cc-glm", "gemini", "all"}
    rate = by_metric(data, "all")["success_rate"]
    assert rate["delta"] == 0.0 and rate["judgement"] == "same" and rate["n_base"] == 12
    assert (tmp_path / "compare-lane-1-vs-lane-2.png").exists()


def test_a_slower_simulator_shows_its_latency_shift_with_an_interval(lanes: Path) -> None:
    c = soaklib.compare(lanes / "lane-1", lanes / "lane-slow", fail_on=["latency_ms_p95"])
    shifts = {d.group: d for d in c.differences if d.metric == "latency_ms_p50"}
    assert shifts["all"].delta > 0 and shifts["all"].low < shifts["all"].delta < shifts["all"].high
    assert shifts["all"].new == pytest.approx(3 * shifts["all"].base, rel=0.5)
    # 4 jobs a provider are too few to call a percentile shift a regression: reported, not judged
    assert c.judgements[c.differences.index(shifts["opencode"])] == "too_few" and c.exit_code == 0
    md = write_comparison(c, lanes / "cmp")["md"].read_text()
    assert "too few to judge" in md and "at least 20 successful jobs" in md


def _lane(root: Path, run_id: str, latency_ms: np.ndarray, success: np.ndarray) -> Path:
    n = len(latency_ms)
    jobs = pd.DataFrame({"run_id": run_id, "round_num": 1, "job_index": np.arange(n), "attempt": 1,
                         "provider": np.where(np.arange(n) % 2, "gemini", "opencode"), "success": success,
                         "latency_ms": latency_ms})
    write_table(root / run_id / "jobs.parquet", jobs)
    return root / run_id


def test_enough_jobs_make_a_latency_shift_and_a_success_drop_regressions(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    base = _lane(tmp_path, "base", rng.lognormal(np.log(1000), 0.2, 80), np.ones(80, bool))
    slow = _lane(tmp_path, "slow", rng.lognormal(np.log(1500), 0.2, 80), np.ones(80, bool))
    failing = _lane(tmp_path, "failing", rng.lognormal(np.log(1000), 0.2, 80), np.arange(80) % 3 > 0)
    c = soaklib.compare(base, slow, fail_on=["latency_ms_p95", "success_rate"])
    assert c.regressions == ["latency_ms_p95"]
    p95 = next(d for d in c.differences if d.metric == "latency_ms_p95" and d.group == "all")
    assert 300 < p95.delta < 1200 and p95.low > 0
    assert soaklib.compare(base, failing, fail_on=["latency_ms_p95", "success_rate"]).regressions == ["success_rate"]


def test_runs_of_different_kinds_and_unknown_metrics_are_refused(soaks: Path, lanes: Path) -> None:
    with pytest.raises(ParameterError, match="cannot compare a watcher-a run with a multi-provider run"):
        soaklib.compare(soaks / "flat-1", lanes / "lane-1")
    p = cli("compare", str(soaks / "flat-1"), str(soaks / "flat-2"), "--fail-on", "memory_slope")
    assert p.returncode == 2 and "unknown metric" in p.stderr
    p = cli("compare", str(soaks / "flat-1"), str(soaks / "nope"))
    assert p.returncode == 2 and "neither a run folder nor a folder of runs" in p.stderr

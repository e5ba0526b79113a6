"""stop_on_fail end to end: the reference daemon leaking 2 MiB/s is stopped early; a flat one runs its length."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from soaklib.params import SoakParams, load_params
from soaklib.report.signoff import write_signoff
from soaklib.runs import load_run
from soaklib.soak.harness import run_soak

FAST = {"interval_s": 0.2, "flush_s": 1, "health_interval_s": 0.2, "health_timeout_s": 0.3}


def soak(tmp: Path, run_id: str, duration_s: float, **overrides: Any) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    base: dict[str, Any] = {"run_id": run_id, "output_dir": str(tmp), "duration_s": duration_s,
                            "sampling": dict(FAST), "sim": {"poll_s": 0.1}, "stop_on_fail": True,
                            "stop_on_fail_after_s": 3.0}
    base.update(overrides)
    result = run_soak(load_params(SoakParams, overrides=base))
    paths = write_signoff(result.run_dir)
    obs = json.loads((Path(result.run_dir) / "observations.json").read_text())
    return result, json.loads(paths["json"].read_text()), obs


def test_a_2_mib_per_s_leak_is_stopped_within_a_few_flushes(tmp_path):
    _, signoff, obs = soak(tmp_path, "leak", 60.0, sim={"poll_s": 0.1, "leak_mb_per_h": 7200.0},
                           memory_limit_mb=4096.0)
    stop = obs["stop_on_fail"]
    assert stop["enabled"] and stop["stopped"] and stop["metric"] == "memory_slope_mb_per_h"
    assert stop["series"] in ("tree_rss_bytes", "rss_bytes")
    assert 3.0 <= stop["stopped_at_s"] <= 3.0 + 6 * FAST["flush_s"]  # decisions from 3 s, then a few flushes
    assert stop["stop_low_mb_per_h"] > 50.0
    assert obs["sampling"]["end_reason"] == "stop_on_fail"
    assert signoff["duration_h"] * 3600.0 < 20.0 and signoff["verdict"] == "FAIL"
    assert any("stop_on_fail" in n for n in signoff["notes"])
    rows = {r["metric"]: r for r in signoff["criteria"]}
    assert rows["memory_slope_mb_per_h"]["status"] == "FAIL"
    events = load_run(tmp_path / "leak").events
    assert (events["kind"] == "stop_on_fail").sum() == 1
    assert obs["limits"]["memory_limit_bytes"] > 0 and obs["limits"]["nofile_soft"] > 0
    mem = signoff["analysis"]["exhaustion"][0]  # the planted leak toward the memory_limit_mb parameter
    assert mem["status"] == "projected" and mem["limit_source"] == "memory_limit_mb" and mem["limit"] == 4096 * 2**20
    assert 0 < mem["hours_low"] <= mem["hours"] <= mem["hours_high"]
    md = (tmp_path / "leak.md").read_text()
    assert "## Time to exhaustion" in md and "stop_on_fail: the soak was ended" in md


def test_a_flat_daemon_runs_its_length_with_the_running_verdict_recorded(tmp_path):
    _, signoff, obs = soak(tmp_path, "flat", 6.0)
    stop = obs["stop_on_fail"]
    assert stop["enabled"] and not stop["stopped"] and stop["looks"] >= 1
    assert obs["sampling"]["end_reason"] != "stop_on_fail"  # the driver halts the daemon at its length
    assert stop["last"]["status"] in ("PASS", "WARN")
    assert not any("stop_on_fail" in n for n in signoff["notes"])

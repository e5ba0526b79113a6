"""Ctrl-C in the second round: the cut jobs read ``interrupted`` and the cut round is not completed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.test_multi_provider import FAST_SIM, _sim_processes


def test_ctrl_c_in_round_two_marks_jobs_interrupted_and_the_round_not_completed(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    cmd = [sys.executable, "-m", "soaklib.cli", "multi-provider", "--dry-run", "--rounds", "2", "--providers", "opencode,gemini",
           "--output-dir", str(out_dir), "--run-id", "cut2", "--no-progress"]  # fmt: skip
    env = {**os.environ, **FAST_SIM, "DX_SIM_FIXED_LATENCY_S": "1.5"}
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    seen = []
    try:
        assert p.stdout is not None
        for line in p.stdout:  # round 1 runs to the end, then Ctrl-C while round 2 runs
            seen.append(line)
            if line.startswith("--- Round 2/"):
                break
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        rest, _ = p.communicate(timeout=60)
        out = "".join(seen) + rest
    finally:
        p.kill()
        p.wait()
    assert p.returncode == 130, out
    e = json.loads((out_dir / "cut2.json").read_text())
    assert e["interrupted"] is True and e["exit_code"] == 130 and not e["passed"]
    first, second = e["rounds"]
    assert first["completed"] is True and first["passed"] == 4
    assert second["completed"] is False and second["interrupted"] is True
    assert {j["reason_code"] for j in second["jobs"]} == {"interrupted"}
    assert "executor_exception" not in json.dumps(e)
    rule = next(r for r in e["gate"]["rules"] if r["rule"] == "rounds_completed")
    assert (rule["observed"], rule["expected"], rule["status"]) == (1, 2, "FAIL")
    assert next(r for r in e["criteria"] if r["metric"] == "rounds_completed")["observed"] == 1
    md = (out_dir / "cut2.md").read_text()
    assert "## Round 2 (interrupted by Ctrl-C / SIGTERM: not counted as completed)" in md
    assert "| rounds_completed | 1 | 2 | FAIL |" in md and "**Result: INTERRUPTED** · exit code 130" in md
    assert "Round 2: INTERRUPTED" in out and "Rounds completed: 1/2" in out and "FAIL interrupted" in out
    time.sleep(0.5)
    assert _sim_processes("cut2-r2-") == []

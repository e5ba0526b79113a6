"""End-to-end tests of `soak multi-provider` against the real dx-runner simulator."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

SEED_KEYS = {
    "run_id", "passed", "all_clean", "total_jobs", "total_passed", "total_failed", "started_at",
    "completed_at", "duration_sec", "provider_summary", "rounds",
}  # fmt: skip
ADDED_KEYS = {"schema_version", "preflight", "parameters", "environment", "gate"}
PROVIDER_KEYS = {"total", "passed", "failed", "latency_ms_mean", "latency_ms_p50", "latency_ms_p90", "latency_ms_p95", "latency_ms_p99", "latency_ms_max"}
ROUND_KEYS = {"round_num", "job_count", "passed", "pass_rate", "started_at", "completed_at", "duration_sec", "jobs"}
JOB_KEYS = {
    "job_spec", "success", "status", "reason_code", "selected_model", "latency_ms", "completion", "retries",
    "outcome_state", "stdout", "stderr", "started_at", "completed_at", "raw_outcome",
}  # fmt: skip
SPEC_KEYS = {"beads_id", "provider", "prompt_id", "prompt", "success_hint", "model", "worktree", "round_num", "job_index"}
PARQUET_COLUMNS = [
    "run_id", "round_num", "job_index", "attempt", "beads_id", "provider", "prompt_id", "model", "selected_model",
    "status", "reason_code", "runner_reason_code", "success", "completion", "retries", "latency_ms",
    "latency_source", "started_at", "completed_at",
]  # fmt: skip
ADDED_PARQUET_COLUMNS = ["cap_backoffs", "cap_wait_s", "backoff_s"]  # added after the DESIGN.md columns, never renamed
FAST_SIM = {"DX_SIM_TICK_S": "0.2", "DX_SIM_LATENCY_SCALE": "0.3", "DX_SIM_PREFLIGHT_S": "0.01"}


def soak(tmp_path: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> tuple[int, str, dict | None]:
    """Run the CLI as a user would; returns (exit code, output, evidence JSON or None)."""
    out_dir = tmp_path / "out"
    cmd = [sys.executable, "-m", "soaklib.cli", "multi-provider", "--output-dir", str(out_dir), "--no-progress", *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **FAST_SIM, **(env or {})})
    output = p.stdout + p.stderr
    files = sorted(out_dir.glob("*.json"))
    return p.returncode, output, (json.loads(files[-1].read_text()) if files else None)


def jobs_of(evidence: dict) -> list[dict]:
    return [j for r in evidence["rounds"] for j in r["jobs"]]


def test_dry_run_is_clean_with_seed_format_and_parquet(tmp_path: Path) -> None:
    code, out, e = soak(tmp_path, "--dry-run", "--run-id", "clean1")
    assert code == 0, out
    assert e["passed"] and e["all_clean"] and e["total_jobs"] == 12 and e["total_passed"] == 12
    assert e.keys() >= SEED_KEYS | ADDED_KEYS
    for summary in e["provider_summary"].values():
        assert summary.keys() >= PROVIDER_KEYS and summary["latency_ms_p99"] >= summary["latency_ms_p50"] > 0
    assert [r["round_num"] for r in e["rounds"]] == [1, 2]
    for r in e["rounds"]:
        assert r.keys() >= ROUND_KEYS and r["pass_rate"] == 1.0
    for j in jobs_of(e):
        assert j.keys() >= JOB_KEYS and j["job_spec"].keys() >= SPEC_KEYS
        assert j["job_spec"]["beads_id"] == f"clean1-r{j['job_spec']['round_num']}-{j['job_spec']['provider']}-{j['job_spec']['job_index']}"
        assert j["job_spec"]["worktree"] == "/tmp/agents/clean1/repo"
    prompts = {j["job_spec"]["job_index"]: j["job_spec"]["prompt_id"] for j in jobs_of(e)}
    assert prompts == {0: "echo_ok", 1: "echo_ready"}
    assert sorted(j["job_spec"]["beads_id"] for j in e["rounds"][0]["jobs"] if j["job_spec"]["provider"] == "opencode") == [
        "clean1-r1-opencode-0", "clean1-r1-opencode-1"]
    assert all(rule["passed"] for rule in e["gate"]["rules"])
    jobs = pd.read_parquet(tmp_path / "out" / "clean1" / "jobs.parquet")
    assert list(jobs.columns) == PARQUET_COLUMNS + ADDED_PARQUET_COLUMNS and len(jobs) == 12
    assert str(jobs["started_at"].dtype).startswith("datetime64") and str(jobs["started_at"].dt.tz) == "UTC"
    md = (tmp_path / "out" / "clean1.md").read_text()
    assert "Round 2: 6/6 passed" in md and "| opencode |" in md
    assert "Round 1: PASSED (100.0% pass rate)" in out and "JSON:" in out


def test_same_run_id_gives_same_outcomes(tmp_path: Path) -> None:
    args = ("--dry-run", "--scenario", "signoff-2026-02-20", "--providers", "opencode,gemini", "--run-id", "det", "--rounds", "1")
    _, _, first = soak(tmp_path / "a", *args)
    _, _, second = soak(tmp_path / "b", *args)
    key = lambda e: [(j["job_spec"]["beads_id"], j["success"], j["status"], j["reason_code"], j["selected_model"]) for j in jobs_of(e)]  # noqa: E731
    assert key(first) == key(second)


def test_signoff_scenario_preflight_fails_with_no_auth_source(tmp_path: Path) -> None:
    code, out, e = soak(tmp_path, "--dry-run", "--scenario", "signoff-2026-02-20", "--run-id", "pf")
    assert code == 21, out
    assert e["preflight"]["failed_providers"] == ["cc-glm"] and e["rounds"] == [] and not e["passed"]
    ccglm = next(r for r in e["preflight"]["results"] if r["provider"] == "cc-glm")
    assert any("NO_AUTH_SOURCE" in line for line in ccglm["failing_lines"])
    assert (tmp_path / "out" / "pf.md").exists()


def test_signoff_scenario_without_ccglm_fails_gemini_with_redacted_403(tmp_path: Path) -> None:
    code, out, e = soak(tmp_path, "--dry-run", "--scenario", "signoff-2026-02-20", "--providers", "opencode,gemini", "--run-id", "s403")
    assert code == 1, out
    assert e["provider_summary"]["gemini"]["passed"] == 0 and e["provider_summary"]["gemini"]["total"] == 4
    assert e["provider_summary"]["opencode"]["passed"] == 4
    gemini = [j for j in jobs_of(e) if j["job_spec"]["provider"] == "gemini"]
    assert all(j["status"] == "exited_err" and j["reason_code"] == "auth_error" for j in gemini)
    assert all(j["runner_reason_code"] == "process_exit_with_rc" for j in gemini)
    assert all("Verify your account to continue (HTTP 403)" in j["stderr"] for j in gemini)
    everything = (tmp_path / "out" / "s403.json").read_text() + (tmp_path / "out" / "s403.md").read_text()
    assert "planted" not in everything and "[REDACTED]" in everything


def test_model_drift_is_a_policy_violation(tmp_path: Path) -> None:
    code, _, e = soak(tmp_path, "--dry-run", "--scenario", "model-drift", "--rounds", "1", "--run-id", "drift")
    assert code == 1
    for j in jobs_of(e):
        if j["job_spec"]["provider"] == "opencode":
            assert not j["success"] and j["reason_code"] == "model_policy_violation"
            assert j["selected_model"].startswith("zai-coding-plan/")
        else:
            assert j["success"]
    assert next(r for r in e["gate"]["rules"] if r["rule"] == "model_policy_violations")["observed"] == 2


def _sim_processes(marker: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in (p.info["cmdline"] or [])):
                found.append(p)
        except psutil.Error:
            pass
    return found


def test_hang_ends_as_wait_timeout_and_leaves_nothing_running(tmp_path: Path) -> None:
    t0 = time.monotonic()
    code, out, e = soak(tmp_path, "--dry-run", "--scenario", "hang", "--rounds", "1", "--timeout-sec", "10", "--run-id", "hang1")
    elapsed = time.monotonic() - t0
    assert code == 1, out
    gemini = [j for j in jobs_of(e) if j["job_spec"]["provider"] == "gemini"]
    assert gemini and all(j["reason_code"] == "wait_timeout" for j in gemini)
    assert all(j["stop"] is not None for j in gemini)  # stop was called
    assert all(j["success"] for j in jobs_of(e) if j["job_spec"]["provider"] != "gemini")
    assert elapsed < 10 + 60  # the round completes: timeout plus start/stop overhead, not an hour
    time.sleep(0.5)
    assert _sim_processes("hang1-r1-gemini") == []


def test_latency_matches_provider_exit_within_50ms(tmp_path: Path) -> None:
    env = {"DX_SIM_FIXED_LATENCY_S": "0.8", "DX_SIM_TICK_S": "1.0"}
    code, out, e = soak(tmp_path, "--dry-run", "--rounds", "1", "--run-id", "lat", "--outcome-dir", str(tmp_path / "state"), env=env)
    assert code == 0, out
    for j in jobs_of(e):
        s = j["job_spec"]
        truth = json.loads((tmp_path / "state" / s["provider"] / f"{s['beads_id']}.truth.json").read_text())
        started = pd.Timestamp(j["started_at"]).timestamp()
        end = pd.Timestamp(j["completed_at"]).timestamp()
        assert j["latency_source"] == "rc_mtime"
        assert abs(end - truth["provider_exited_at"]) < 0.05
        assert abs(started + j["latency_ms"] / 1000 - truth["provider_exited_at"]) < 0.05


def test_cap_scenario_backs_off_to_a_clean_run(tmp_path: Path) -> None:
    code, out, e = soak(tmp_path, "--dry-run", "--scenario", "cap", "--run-id", "cap1")
    assert code == 0, out
    assert e["total_passed"] == 12


def test_flaky_scenario_needs_a_retry(tmp_path: Path) -> None:
    code, _, e = soak(tmp_path / "a", "--dry-run", "--scenario", "flaky", "--rounds", "1", "--run-id", "fl0")
    assert code == 1 and all(not j["success"] for j in jobs_of(e) if j["job_spec"]["provider"] == "gemini")
    code, out, e = soak(tmp_path / "b", "--dry-run", "--scenario", "flaky", "--rounds", "1", "--max-retries", "1", "--run-id", "fl1")
    assert code == 0, out
    assert {j["retries"] for j in jobs_of(e) if j["job_spec"]["provider"] == "gemini"} == {1}
    jobs = pd.read_parquet(tmp_path / "b" / "out" / "fl1" / "jobs.parquet")
    assert len(jobs) == 8 and jobs["attempt"].max() == 1


def test_malformed_check_output_is_runner_error(tmp_path: Path) -> None:
    wrapper = tmp_path / "dx-runner"
    wrapper.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = check ]; then echo "Traceback: something broke, not JSON"; exit 0; fi\n'
        f'exec {sys.executable} -m soaklib.sim.dx_runner "$@"\n'
    )
    wrapper.chmod(0o755)
    env = {"DX_SIM_STATE_DIR": str(tmp_path / "state")}
    code, out, e = soak(
        tmp_path, "--dx-runner", str(wrapper), "--outcome-dir", str(tmp_path / "state"), "--providers", "opencode",
        "--rounds", "1", "--run-id", "bad", "--timeout-sec", "20", env=env,
    )  # fmt: skip
    assert code == 1, out
    assert {j["reason_code"] for j in jobs_of(e)} == {"runner_error"}


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--rounds", "-1"], "rounds"),
        (["--run-id", "../etc"], "run id"),
        (["--run-id", "a/b"], "run id"),
        (["--providers", "opencode,claude"], "unknown provider"),
        (["--dx-runner", "/nonexistent/dx-runner"], "dx-runner"),
        (["--parallel", "zero"], "parallel"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    dry = [] if "--dx-runner" in args else ["--dry-run"]
    code, out, e = soak(tmp_path, *dry, *args)
    assert code == 2, out
    assert needle in out.lower() and e is None


def test_missing_runner_for_live_run_is_exit_2(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "DX_RUNNER": ""}
    code, out, _ = soak(tmp_path, "--run-id", "live", env=env)
    assert code == 2 and "dx-runner not found" in out


def test_ctrl_c_writes_partial_artifacts_and_exits_130(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    cmd = [sys.executable, "-m", "soaklib.cli", "multi-provider", "--dry-run", "--scenario", "stall", "--timeout-sec", "60",
           "--output-dir", str(out_dir), "--run-id", "intr", "--no-progress"]  # fmt: skip
    env = {**os.environ, **FAST_SIM, "DX_SIM_LATENCY_SCALE": "20"}
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    seen = []
    try:
        assert p.stdout is not None
        for line in p.stdout:  # wait until the round runs, then Ctrl-C
            seen.append(line)
            if line.startswith("--- Round 1/"):
                break
        time.sleep(2)
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=90)
        out = "".join(seen) + out
    finally:
        p.kill()
    assert p.returncode == 130, out
    e = json.loads((out_dir / "intr.json").read_text())
    assert e["interrupted"] is True and not e["passed"]
    assert (out_dir / "intr.md").exists()
    time.sleep(0.5)
    assert _sim_processes("intr-r1-") == []

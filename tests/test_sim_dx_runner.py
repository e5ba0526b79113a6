"""The dx-runner simulator as a program: commands, files, exit codes, hazards and scenarios.

Every test runs real processes. Jobs are detached (their monitor and provider leave the
test's process tree), so the ``sim`` fixture kills every monitor and provider process
group it finds in its state folder at teardown.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from soaklib.sim.dx_runner import scenarios as sc

SIM = str(Path(sc.__file__).with_name("runner.py"))
CALL_TIMEOUT_S = 20.0
STARTED_RE = re.compile(r"^started beads=(\S+) provider=(\S+) pid=(\d+) log=(\S+)$", re.M)


class Sim:
    """Runs simulator commands with a private state folder and worktree."""

    def __init__(self, state_dir: Path, worktree: Path, tmp: Path) -> None:
        self.state_dir, self.worktree, self.tmp = state_dir, worktree, tmp
        self.env = {
            **os.environ, "DX_SIM_STATE_DIR": str(state_dir), "DX_SIM_TICK_S": "0.2",
            "DX_SIM_FIXED_LATENCY_S": "0.3", "DX_SIM_PREFLIGHT_S": "0.01",
        }
        for name in ("DX_SIM_SCENARIO", "DX_SIM_SEED", "DX_SIM_CAPS", "DX_SIM_LATENCY_SCALE",
                     "OPENCODE_MODEL", "CC_GLM_MODEL", "GEMINI_MODEL"):
            self.env.pop(name, None)
        self.prompt = tmp / "echo_ok.prompt"
        self.prompt.write_text("Reply with exactly OK (echo_ok)\n")

    def argv(self, *args: str, module: bool = False) -> list[str]:
        head = ["-m", "soaklib.sim.dx_runner"] if module else [SIM]
        return [sys.executable, *head, *args]

    def run(self, *args: str, module: bool = False) -> subprocess.CompletedProcess[str]:
        """A short command (not start) with captured output."""
        return subprocess.run(self.argv(*args, module=module), env=self.env,
                              capture_output=True, text=True, timeout=CALL_TIMEOUT_S)

    def start(self, beads: str, provider: str = "gemini", worktree: Path | None = None,
              prompt: Path | None = None, module: bool = False) -> tuple[int, str, str]:
        """``start`` with stdout/stderr sent to files (pipes would hang until the job ends)."""
        out, err = self.tmp / f"{beads}.start.out", self.tmp / f"{beads}.start.err"
        argv = self.argv("start", "--beads", beads, "--provider", provider, "--prompt-file",
                         str(prompt or self.prompt), "--worktree", str(worktree or self.worktree),
                         module=module)
        with open(out, "w") as o, open(err, "w") as e:
            code = subprocess.run(argv, env=self.env, stdout=o, stderr=e,
                                  stdin=subprocess.DEVNULL, timeout=CALL_TIMEOUT_S).returncode
        return code, out.read_text(), err.read_text()

    def check(self, beads: str) -> tuple[int, dict]:
        proc = self.run("check", "--beads", beads, "--json")
        return proc.returncode, json.loads(proc.stdout)

    def wait_state(
        self, beads: str, states: set[str], timeout_s: float = 10.0
    ) -> tuple[int, dict, list[str]]:
        """Poll check until its state is in ``states``; returns (code, status, states seen)."""
        seen: list[str] = []
        deadline = time.monotonic() + timeout_s
        while True:
            code, status = self.check(beads)
            if not seen or seen[-1] != status["state"]:
                seen.append(status["state"])
            if status["state"] in states:
                return code, status, seen
            assert time.monotonic() < deadline, f"{beads}: states seen {seen}"
            time.sleep(0.1)

    def finish(
        self, beads: str, provider: str = "gemini", timeout_s: float = 10.0
    ) -> tuple[int, dict]:
        """Wait (in process, cheaply) for the job's complete outcome, then ``check`` it once."""
        job, deadline = self.job(beads, provider), time.monotonic() + timeout_s
        while job.read_outcome() is None:
            assert time.monotonic() < deadline, f"{beads}: no outcome in {timeout_s}s"
            time.sleep(0.02)
        return self.check(beads)

    def job(self, beads: str, provider: str = "gemini") -> sc.Job:
        return sc.Job(self.state_dir, provider, beads)

    def kill_all(self) -> None:
        """Kill every provider group and monitor of this state folder, and wait until gone."""
        pids: list[int] = []
        for pid_file in self.state_dir.glob("*/*.pid"):
            try:
                pid = int(pid_file.read_text())
            except (OSError, ValueError):
                continue
            if SIM not in sc.cmdline(pid):
                continue  # gone, or the pid was reused
            pids.append(pid)
            try:
                if pid_file.name.endswith(".monitor.pid"):
                    os.kill(pid, signal.SIGKILL)
                else:
                    os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + 5
        while any(sc.alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.02)


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Sim]:
    root = Path("/tmp/agents") / f"dxsim-{uuid.uuid4().hex[:12]}"
    worktree = root / "repo"
    worktree.mkdir(parents=True)
    s = Sim(tmp_path / "state", worktree, tmp_path)
    try:
        yield s
    finally:
        s.kill_all()
        shutil.rmtree(root, ignore_errors=True)


def test_preflight_reports_pass_fail_and_unknown_provider(sim: Sim) -> None:
    ok = sim.run("preflight", "--provider", "gemini")
    assert ok.returncode == 0
    assert "[OK] " in ok.stdout and ok.stdout.rstrip().endswith("=== Preflight PASSED ===")
    sim.env["DX_SIM_SCENARIO"] = "signoff-2026-02-20"
    bad = sim.run("preflight", "--provider", "cc-glm")
    assert bad.returncode == 1
    assert any("NO_AUTH_SOURCE" in line for line in bad.stdout.splitlines())
    assert bad.stdout.rstrip().endswith("=== Preflight FAILED (1 error(s)) ===")
    assert sim.run("preflight", "--provider", "opencode").returncode == 0
    code, out, _ = sim.start("pf-1", "cc-glm")
    assert code == 21 and "Preflight FAILED" in out and not sim.job("pf-1", "cc-glm").meta.exists()
    unknown = sim.run("preflight", "--provider", "nope")
    assert unknown.returncode == 20 and "unknown provider" in unknown.stderr


def test_start_check_report_clean_job(sim: Sim) -> None:
    code, out, err = sim.start("job-1", "gemini", module=True)  # exactly as the client runs it
    assert code == 0, err
    assert "=== Preflight PASSED ===" in out and "selected_model" not in out
    match = STARTED_RE.search(out)
    assert match and match.group(1, 2) == ("job-1", "gemini")
    job = sim.job("job-1")
    assert int(match.group(3)) == job.read_int(job.pid) and match.group(4) == str(job.log)
    assert job.meta.is_file() and job.monitor_pid.is_file()
    code, status, seen = sim.wait_state("job-1", {"no_op_success", "exited_ok", "exited_err"})
    assert (code, status["state"]) == (0, "no_op_success"), seen
    assert set(seen) <= {"launching", "waiting_first_output", "healthy", "awaiting_finalize",
                         "no_op_success"}
    assert status["selected_model"] == "gemini-3-flash-preview" and status["mutation_count"] == 0
    assert {"beads", "state", "reason_code", "fallback_reason", "pid"} <= set(status)
    assert job.log.read_text().splitlines()[-1] == "OK"
    assert set(sc.OUTCOME_KEYS) <= set(sc.read_kv(job.outcome))
    proc = sim.run("report", "--beads", "job-1", "--format", "json")
    assert proc.returncode == 0 and "\n  " in proc.stdout  # pretty-printed
    report = json.loads(proc.stdout)
    assert report["exit_code"] == "0" and isinstance(report["duration_sec"], str)
    assert report["outcome_state"] == "success" and "details" not in report
    for key in ("state", "reason_code", "started_at", "retries", "outcome_reason_code",
                "selected_model", "fallback_reason"):
        assert key in report
    truth = json.loads(job.truth.read_text())
    assert abs(job.rc.stat().st_mtime - truth["provider_exited_at"]) < 0.25
    assert truth["provider_exited_at"] - truth["provider_started_at"] >= 0.3


def test_start_with_pipes_does_not_return_until_the_job_ends(sim: Sim, procs: list) -> None:
    sim.env["DX_SIM_FIXED_LATENCY_S"] = "2.0"
    began = time.monotonic()
    code, out, _ = sim.start("to-file")  # files: returns at once, while the job runs
    assert code == 0 and time.monotonic() - began < 2.0
    assert not sim.job("to-file").rc.exists()
    began = time.monotonic()
    piped = subprocess.Popen(
        sim.argv("start", "--beads", "to-pipe", "--provider", "opencode", "--prompt-file",
                 str(sim.prompt), "--worktree", str(sim.worktree)),
        env=sim.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    procs.append(piped)
    assert piped.wait(timeout=CALL_TIMEOUT_S) == 0  # the start process itself has exited...
    with pytest.raises(subprocess.TimeoutExpired):
        piped.communicate(timeout=0.3)  # ...but its pipes stay open: the monitor holds them
    out, _ = piped.communicate(timeout=CALL_TIMEOUT_S)
    assert STARTED_RE.search(out)
    assert time.monotonic() - began >= 2.0
    assert sim.job("to-pipe", "opencode").read_outcome() is not None  # EOF only at the job's end


def test_start_refusals(sim: Sim) -> None:
    code, out, _ = sim.start("wt-1", worktree=sim.worktree.parent / "absent")
    assert code == 22 and "reason_code=worktree_missing" in out
    code, out, _ = sim.start("wt-2", worktree=sim.tmp)  # exists, outside the allowed prefixes
    assert code == 22 and "reason_code=canonical_worktree_forbidden" in out
    code, _, err = sim.start("wt-3", prompt=sim.tmp / "missing.prompt")
    assert code == 1 and "prompt" in err
    code, _, _ = sim.start("wt-4", provider="nope")
    assert code == 20
    assert not list(sim.state_dir.glob("*/*.meta"))


def test_unknown_id_check_and_report(sim: Sim) -> None:
    code, status = sim.check("never-started")
    assert code == 1 and status["reason_code"] == "no_meta"
    assert status.get("state") in (None, "missing", "start_failed")
    proc = sim.run("report", "--beads", "never-started", "--format", "json")
    assert proc.returncode == 1 and proc.stdout == ""


def test_concurrency_cap_and_already_running(sim: Sim) -> None:
    sim.env.update(DX_SIM_SCENARIO="cap", DX_SIM_FIXED_LATENCY_S="30")
    assert sim.start("cap-1")[0] == 0
    code, out, _ = sim.start("cap-2")
    assert code == 26 and "reason_code=concurrency_cap_exceeded" in out
    assert sim.start("cap-1")[0] == 1  # already running
    assert sim.start("cap-3", "opencode")[0] == 0  # the cap is per provider
    sim.env.update(DX_SIM_SCENARIO="clean", DX_SIM_CAPS="opencode:1")
    assert sim.start("cap-4", "opencode")[0] == 26


def test_stop_kills_the_monitor_but_not_the_provider_group(sim: Sim) -> None:
    sim.env["DX_SIM_FIXED_LATENCY_S"] = "30"
    assert sim.start("stop-1")[0] == 0
    job = sim.job("stop-1")
    pid, monitor = job.read_int(job.pid), job.read_int(job.monitor_pid)
    assert pid and monitor and os.getpgid(pid) == pid
    proc = sim.run("stop", "--beads", "stop-1")
    assert proc.returncode == 0 and "stopped" in proc.stdout
    assert not sc.alive(monitor)
    assert sc.alive(pid) and os.getpgid(pid) == pid  # the real runner's flaw, kept on purpose
    code, status = sim.check("stop-1")
    assert (code, status["state"]) == (0, "stopped")
    report = json.loads(sim.run("report", "--beads", "stop-1", "--format", "json").stdout)
    assert report["outcome_state"] == "killed"
    assert sim.run("stop", "--beads", "stop-1").returncode == 1  # no active process left
    os.killpg(pid, signal.SIGKILL)  # what the client must do after stop
    deadline = time.monotonic() + 5
    while sc.alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not sc.alive(pid)


def test_signoff_scenario_gemini_fails_with_detail_in_log(sim: Sim) -> None:
    sim.env["DX_SIM_SCENARIO"] = "signoff-2026-02-20"
    assert sim.start("so-gem")[0] == 0 and sim.start("so-oc", "opencode")[0] == 0
    code, status = sim.finish("so-gem")
    assert (code, status["state"]) == (3, "exited_err")
    assert status["reason_code"] == "process_exit_with_rc"
    log = sim.job("so-gem").log.read_text()
    assert "ValidationRequiredError: Verify your account to continue (HTTP 403)" in log
    assert "GEMINI_API_KEY=AIzaSyD-planted-secret-0123456789" in log
    assert "Authorization: Bearer sk-planted-bearer-token-abcdef" in log
    assert sc.read_kv(sim.job("so-gem").outcome)["exit_code"] == "1"
    assert sim.finish("so-oc", "opencode")[0] == 0


def test_model_drift_and_flaky_scenarios(sim: Sim) -> None:
    sim.env["DX_SIM_SCENARIO"] = "model-drift"
    assert sim.start("drift-1", "opencode")[0] == 0
    sim.env["DX_SIM_SCENARIO"] = "flaky"
    assert sim.start("flaky-1")[0] == 0
    code, status = sim.finish("drift-1", "opencode")
    assert code == 0 and status["selected_model"] == "zai-coding-plan/glm-5"
    assert status["fallback_reason"] == "alias_for=zhipuai-coding-plan/glm-5"
    code, status = sim.finish("flaky-1")
    assert (code, status["reason_code"]) == (3, "gemini_capacity_exhausted")
    assert sim.start("flaky-1")[0] == 0  # the second attempt of the same id passes
    code, status = sim.finish("flaky-1")
    assert (code, status["state"], status["retries"]) == (0, "no_op_success", 1)


def test_stall_and_hang_scenarios(sim: Sim, procs: list) -> None:
    sim.env.update(DX_SIM_SCENARIO="stall", DX_SIM_STALL_AFTER_S="0.3")
    assert sim.start("stall-1", "opencode")[0] == 0
    code, _, _ = sim.wait_state("stall-1", {"stalled"})
    assert code == 2 and sim.job("stall-1", "opencode").provider_alive()
    sim.env["DX_SIM_SCENARIO"] = "hang"
    assert sim.start("hang-1")[0] == 0
    check = subprocess.Popen(sim.argv("check", "--beads", "hang-1", "--json"), env=sim.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True)
    procs.append(check)
    with pytest.raises(subprocess.TimeoutExpired):
        check.wait(timeout=1.0)  # the client must time the check out and stop the job
    assert sim.job("hang-1").provider_alive()
    assert sim.run("stop", "--beads", "hang-1").returncode == 0


def test_no_op_blocked_and_mutating_jobs(sim: Sim) -> None:
    sim.env.update(DX_SIM_SCENARIO="no-op", DX_SIM_STALL_AFTER_S="0.3")
    assert sim.start("noop-1", "cc-glm")[0] == 0
    mutate = sim.tmp / "mutate.prompt"
    mutate.write_text("echo_ok sim_mutate\n")
    assert sim.start("mut-1", "opencode", prompt=mutate)[0] == 0
    sim.env["DX_SIM_SCENARIO"] = "blocked"
    assert sim.start("blk-1", "cc-glm")[0] == 0
    code, status = sim.finish("noop-1", "cc-glm")
    assert (code, status["state"]) == (23, "no_op")
    code, status = sim.finish("mut-1", "opencode")
    assert (code, status["state"], status["mutation_count"]) == (0, "exited_ok", 1)
    assert (sim.worktree / "sim_mutation.txt").is_file()
    code, status, _ = sim.wait_state("blk-1", {"blocked"})
    assert code == 3 and sim.job("blk-1", "cc-glm").provider_alive()


def test_half_written_outcome_reads_as_awaiting_finalize(sim: Sim) -> None:
    job = sim.job("half-1")
    job.dir.mkdir(parents=True)
    sc.write_atomic(job.meta, sc.kv_text({"beads": "half-1", "provider": "gemini"}))
    job.rc.write_text("0\n")
    job.outcome.write_text("exit_code=0\nstate=success\nreason_code=outcome_exit_0\n")
    assert job.read_outcome() is None
    code, status = sim.check("half-1")
    assert (code, status["state"]) == (0, "awaiting_finalize")


def test_latency_is_deterministic_per_seed_beads_and_attempt(sim: Sim) -> None:
    one = sc.latency_s("opencode", "r-r1-opencode-0", 1, seed=7)
    assert one == sc.latency_s("opencode", "r-r1-opencode-0", 1, seed=7)
    assert one != sc.latency_s("opencode", "r-r1-opencode-0", 2, seed=7)
    assert one != sc.latency_s("opencode", "r-r1-opencode-0", 1, seed=8)
    half = sc.latency_s("opencode", "x", 1, seed=7, scale=0.5)
    assert half == 0.5 * sc.latency_s("opencode", "x", 1, seed=7)
    assert sc.latency_s("gemini", "x", 1, fixed_s=0.25) == 0.25
    samples = sorted(sc.latency_s("cc-glm", f"b{i}", 1) for i in range(2001))
    assert samples[1000] == pytest.approx(sc.MEDIAN_LATENCY_S["cc-glm"], rel=0.05)
    sim.env.update(DX_SIM_SEED="7", DX_SIM_LATENCY_SCALE="0.2")
    del sim.env["DX_SIM_FIXED_LATENCY_S"]
    assert sim.start("lat-1", "opencode")[0] == 0
    meta = sim.job("lat-1", "opencode").read_meta()
    assert float(meta["latency_s"]) == sc.latency_s("opencode", "lat-1", 1, seed=7, scale=0.2)


def test_bad_configuration_is_a_usage_error(sim: Sim) -> None:
    sim.env["DX_SIM_SCENARIO"] = "bogus"
    proc = sim.run("preflight", "--provider", "gemini")
    assert proc.returncode == 2 and "DX_SIM_SCENARIO" in proc.stderr


def test_version_is_the_runner_version_it_simulates(sim: Sim) -> None:
    for module in (False, True):
        proc = sim.run("--version", module=module)
        assert proc.returncode == 0 and proc.stdout.strip() == "dx-runner 2.0.0 (soaklib simulator)"

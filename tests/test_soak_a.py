"""Soak A end to end against real processes: the reference daemon, the LLM stub, the harness."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
import pyarrow.parquet as pq
import pytest

from soaklib.observe.gpu import gpu_inventory
from soaklib.params import SoakParams, load_params
from soaklib.report.signoff import write_signoff
from soaklib.runs import load_run
from soaklib.soak.harness import run_soak
from tests.conftest import PYTHON, REPO

FAST = {"interval_s": 0.2, "flush_s": 1, "health_interval_s": 0.2, "health_timeout_s": 0.3}
PLANTED_LEAK_MB_PER_H = 36000.0  # 10 MiB/s: clear in a few seconds


def soak(tmp: Path, run_id: str, **overrides: Any) -> tuple[Any, dict[str, Any]]:
    """Run soak A in this process and write its signoff; returns (result, signoff)."""
    base: dict[str, Any] = {"run_id": run_id, "output_dir": str(tmp), "duration_s": 4, "warmup_s": 1,
                            "sampling": dict(FAST), "sim": {"poll_s": 0.1}}
    base.update(overrides)
    result = run_soak(load_params(SoakParams, overrides=base))
    paths = write_signoff(result.run_dir)
    return result, json.loads(paths["json"].read_text())


def rows(signoff: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["metric"]: r for r in signoff["criteria"]}


def target_pid(run_dir: Path) -> int:
    events = load_run(run_dir).events
    return int(json.loads(events[events["kind"] == "target_started"]["data"].iloc[0])["pid"])


def cli(*args: str, timeout_s: float = 60, **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "soaklib.cli", *args], capture_output=True, text=True, timeout=timeout_s,
                          cwd=REPO, **kw)


@pytest.fixture(scope="module")
def leaky(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any]]:
    sim = {"poll_s": 0.1, "leak_mb_per_h": PLANTED_LEAK_MB_PER_H, "fd_leak_per_cycle": 2}
    return soak(tmp_path_factory.mktemp("leaky"), "leaky", sim=sim)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any]]:
    # no leak; a probe inside the warm-up; the LLM stub stops listening from 1.5 s to 2.5 s
    return soak(tmp_path_factory.mktemp("clean"), "clean", probes_at_s=[0.3], llm={"outages": [[1.5, 2.5]]})


# --------------------------------------------------------------------------- leaks


def test_planted_leak_is_measured_within_15_percent_and_fails(leaky: tuple[Any, dict[str, Any]]) -> None:
    _, signoff = leaky
    r = rows(signoff)
    slope = r["memory_slope_mb_per_h"]["observed"]
    assert abs(slope - PLANTED_LEAK_MB_PER_H) <= 0.15 * PLANTED_LEAK_MB_PER_H, slope
    assert r["memory_slope_mb_per_h"]["status"] == "FAIL" and r["memory_growth_mb"]["status"] == "FAIL"
    expected_growth = PLANTED_LEAK_MB_PER_H * signoff["duration_h"]
    assert abs(r["memory_growth_mb"]["observed"] - expected_growth) <= 0.15 * expected_growth
    assert "tracemalloc" in r["memory_growth_mb"]["triage"]
    assert signoff["verdict"] == "FAIL"
    md = (Path(leaky[0].run_dir).parent / "leaky.md").read_text()
    assert "tracemalloc" in md and "figures/leak.png" in md


def test_fd_leak_fails_the_fd_trend(leaky: tuple[Any, dict[str, Any]]) -> None:
    r = rows(leaky[1])
    assert r["fd_trend"]["observed"] == 1 and r["fd_trend"]["status"] == "FAIL"
    assert r["fd_range"]["status"] == "FAIL"


def test_no_leak_passes_on_memory_and_fds(clean: tuple[Any, dict[str, Any]]) -> None:
    result, signoff = clean
    r = rows(signoff)
    for metric in ("memory_growth_mb", "memory_slope_mb_per_h", "fd_range", "fd_trend", "tracebacks", "halt_s",
                   "target_alive"):
        assert r[metric]["status"] == "PASS", r[metric]
    assert signoff["verdict"] == "PASS" and signoff["complete"] is True
    assert result.observations["probes_injected"] == 1
    project = result.run_dir / "project"
    assert list((project / "watcher_requests" / "archive").glob("COMPLETED_*soak_A_probe_01_*.json"))
    assert not (project / "agent_halt").exists()


def test_llm_outage_shows_as_status_0_samples_an_event_and_recovery(clean: tuple[Any, dict[str, Any]]) -> None:
    result, signoff = clean
    run = load_run(result.run_dir)
    s = run.samples
    down = s[s["llm_status"] == 0]
    assert len(down) >= 3 and down["t_s"].min() >= 1.3 and down["t_s"].max() <= 2.9
    assert (s[s["t_s"] > 3.0]["llm_status"] == 200).all()
    kinds = list(run.events["kind"])
    assert kinds.count("llm_down") == 1 and kinds.count("llm_up") == 1
    assert kinds.index("llm_down") < kinds.index("llm_up")
    assert rows(signoff)["llm_reconnect"]["observed"] == "recovered"


def test_without_a_gpu_the_columns_are_null_and_the_signoff_says_so(clean: tuple[Any, dict[str, Any]]) -> None:
    result, signoff = clean
    s = load_run(result.run_dir).samples
    if gpu_inventory().get("available"):
        assert s["gpu_total_bytes"].notna().all()
        return
    for col in ("gpu_used_bytes", "gpu_total_bytes", "gpu_util_pct", "gpu_target_bytes"):
        assert s[col].isna().all(), col
    assert not s["gpu_available"].fillna(False).any()
    assert any(n.startswith("GPU metrics unavailable: ") for n in signoff["notes"])


# --------------------------------------------------------------------------- halting and dying


def test_ignored_halt_times_out_the_tree_is_terminated_and_halt_s_fails(tmp_path: Path) -> None:
    t = time.monotonic()
    result, signoff = soak(tmp_path, "deaf", duration_s=1.5, warmup_s=0.5,
                           sim={"poll_s": 0.1, "ignore_halt": True}, target={"halt": {"timeout_s": 1}})
    assert time.monotonic() - t < 15
    r = rows(signoff)
    assert r["halt_s"]["status"] == "FAIL" and r["halt_s"]["observed"] is None
    assert "terminated" in r["halt_s"]["note"]
    assert signoff["halt"]["forced"] is True and signoff["verdict"] == "FAIL"
    pid = target_pid(result.run_dir)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert "halt_timeout" in set(load_run(result.run_dir).events["kind"])


def test_a_crash_ends_the_soak_early_with_fail_and_exit_1(tmp_path: Path) -> None:
    t = time.monotonic()
    out = cli("watcher", "a", "--run-id", "crash", "--output-dir", str(tmp_path), "--no-progress",
              "--set", "duration_s=30", "--set", "sampling.interval_s=0.2", "--set", "sim.poll_s=0.1",
              "--set", "sim.crash_after_s=1")
    assert out.returncode == 1, out.stderr
    assert time.monotonic() - t < 20
    signoff = json.loads((tmp_path / "crash.json").read_text())
    assert signoff["verdict"] == "FAIL" and signoff["target_exit"]["returncode"] == 1
    r = rows(signoff)
    assert r["target_alive"]["status"] == "FAIL" and "code 1" in r["target_alive"]["note"]
    events = load_run(tmp_path / "crash").events
    exited = events[events["kind"] == "target_exited"]
    assert len(exited) == 1 and json.loads(exited["data"].iloc[0])["returncode"] == 1


def test_kill_9_of_the_harness_keeps_every_flushed_sample_and_analyze_marks_it_incomplete(
        tmp_path: Path, procs: list[subprocess.Popen]) -> None:
    harness = subprocess.Popen(
        [PYTHON, "-m", "soaklib.cli", "watcher", "a", "--run-id", "k9", "--output-dir", str(tmp_path), "--no-progress",
         "--set", "duration_s=60", "--set", "sampling.interval_s=0.1", "--set", "sampling.flush_s=0.3",
         "--set", "sim.poll_s=0.1"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True)
    procs.append(harness)
    parts = tmp_path / "k9" / "samples"  # samples/host={host}/part-*.parquet
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(list(parts.rglob("part-*.parquet"))) < 4:
        time.sleep(0.05)
    descendants = psutil.Process(harness.pid).children(recursive=True)
    assert len(descendants) >= 2  # the daemon and the LLM stub
    harness.send_signal(signal.SIGKILL)
    harness.wait(timeout=10)
    for p in descendants:  # the harness could not stop them: the test does
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    psutil.wait_procs(descendants, timeout=10)
    on_disk = sum(pq.read_metadata(p).num_rows for p in parts.rglob("part-*.parquet"))
    assert on_disk >= 4
    out = cli("analyze", str(tmp_path / "k9"))
    assert out.returncode == 1, out.stderr
    assert len(load_run(tmp_path / "k9").samples) == on_disk
    signoff = json.loads((tmp_path / "k9.json").read_text())
    assert signoff["complete"] is False and signoff["verdict"] == "FAIL"
    assert any("incomplete run" in n for n in signoff["notes"])
    assert signoff["analysis"]["n_samples"] == on_disk
    assert "partial run" in rows(signoff)["halt_s"]["note"]


def test_sigterm_of_the_harness_flushes_stops_the_target_and_exits_130(
        tmp_path: Path, procs: list[subprocess.Popen]) -> None:
    harness = subprocess.Popen(
        [PYTHON, "-m", "soaklib.cli", "watcher", "a", "--run-id", "term", "--output-dir", str(tmp_path),
         "--no-progress", "--set", "duration_s=60", "--set", "sampling.interval_s=0.2", "--set", "sim.poll_s=0.1"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    procs.append(harness)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(psutil.Process(harness.pid).children(recursive=True)) < 2:
        time.sleep(0.05)
    time.sleep(1.0)
    kids = psutil.Process(harness.pid).children(recursive=True)
    harness.send_signal(signal.SIGTERM)
    assert harness.wait(timeout=20) == 130, harness.stderr.read() if harness.stderr else ""
    _, alive = psutil.wait_procs(kids, timeout=5)
    assert not alive, [p.pid for p in alive]
    signoff = json.loads((tmp_path / "term.json").read_text())
    assert signoff["interrupted"] is True and signoff["complete"] is False
    assert len(load_run(tmp_path / "term").samples) >= 3


# --------------------------------------------------------------------------- logs and preflight

LOG_WRITER = textwrap.dedent("""
    import sys, time
    filler = "x" * 999 + "\\n"
    for k in range({chunks}):
        lines = ["2026-01-01 00:00:00 [ERROR] planted failure %d.%d\\n" % (k, i) if i % 100 == 0 else filler
                 for i in range({lines})]
        sys.stderr.write("".join(lines))
        sys.stderr.flush()
        time.sleep(0.1)
    time.sleep(120)
""")


def test_errors_in_a_log_of_several_mb_are_counted_exactly_at_a_flat_read_cost(tmp_path: Path) -> None:
    chunks, lines = 12, 500  # 12 chunks of ~0.5 MB, 5 error lines each
    project = tmp_path / "proj"
    project.mkdir()
    command = [PYTHON, "-c", LOG_WRITER.format(chunks=chunks, lines=lines)]
    result, signoff = soak(tmp_path, "logs", duration_s=3.5, project_dir=str(project), force=True,
                           target={"command": command, "halt": {"timeout_s": 5}}, sim={},
                           sampling=dict(FAST, interval_s=0.1))
    log = result.run_dir / "target.log"
    assert log.stat().st_size > 5 * 2**20
    s = load_run(result.run_dir).samples
    assert int(s["log_errors"].iloc[-1]) == chunks * lines // 100 == signoff["analysis"]["logs"]["errors"]
    assert int(s["bytes_read"].sum()) == log.stat().st_size
    chunk_bytes = log.stat().st_size / chunks
    assert s["bytes_read"].max() <= 3 * chunk_bytes  # each sample reads what was appended, never the whole log
    assert (s[s["t_s"] > 2.5]["bytes_read"] == 0).all()  # a 6 MB log costs nothing once it stops growing
    assert any("preflight finding" in n for n in signoff["notes"]) or not result.observations.get("preflight_failed")


def test_preflight_refuses_with_the_list_and_force_goes_on(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "agent_halt").write_text("left over\n")
    lock = project / "pipeline.lock"
    lock.write_text("")
    old = time.time() - 2 * 3600
    os.utime(lock, (old, old))
    args = ["watcher", "a", "--run-id", "pf", "--output-dir", str(tmp_path / "out"), "--no-progress",
            "--set", f"project_dir={project}", "--set", "duration_s=1", "--set", "sampling.interval_s=0.2",
            "--set", "sim.poll_s=0.1", "--set", "preflight.required_artifacts=[optimal_window_config.json]"]
    refused = cli(*args)
    assert refused.returncode == 3, refused.stderr
    for text in ("agent_halt", "pipeline.lock", "optimal_window_config.json", "--force"):
        assert text in refused.stderr
    assert not (tmp_path / "out" / "pf").exists()
    forced = cli(*args, "--force")
    assert forced.returncode in (0, 1), forced.stderr
    signoff = json.loads((tmp_path / "out" / "pf.json").read_text())
    assert sum("preflight finding" in n for n in signoff["notes"]) == 3
    assert (project / "agent_halt").exists()  # the operator's file is left as found


class _Refusing:
    """A driver whose protocol check fails on the third sample."""

    soak = "a"

    def __init__(self) -> None:
        self.ticks = 0

    def setup(self, ctx: Any) -> None:
        ctx.event("protocol_check_started", message="checking")

    def tick(self, ctx: Any, row: dict[str, Any]) -> bool:
        self.ticks += 1
        assert len(ctx.samples()) == self.ticks  # flushed parts plus the buffer
        if self.ticks == 3:
            from soaklib.errors import ProtocolError

            raise ProtocolError("staged request came back UNKNOWN_TYPE: set profile to plan")
        return False

    def finish(self, ctx: Any) -> dict[str, Any]:
        raise AssertionError("finish is not called after a protocol error")


def test_a_drivers_protocol_error_stops_the_soak_and_propagates(tmp_path: Path) -> None:
    from soaklib.errors import ProtocolError

    params = load_params(SoakParams, overrides={"run_id": "proto", "output_dir": str(tmp_path), "duration_s": 30,
                                                "sampling": dict(FAST), "sim": {"poll_s": 0.1}})
    with pytest.raises(ProtocolError) as err:
        run_soak(params, driver=_Refusing())
    run_dir = tmp_path / "proto"
    assert err.value.run_dir == str(run_dir)
    obs = json.loads((run_dir / "observations.json").read_text())
    assert "UNKNOWN_TYPE" in obs["error"] and obs["reset"]["target_left_running"] is False
    pid = target_pid(run_dir)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    run = load_run(run_dir)
    assert len(run.samples) == 3 and not run.complete
    assert {"protocol_check_started", "protocol_error", "target_stopped"} <= set(run.events["kind"])
    signoff = json.loads(write_signoff(run_dir)["json"].read_text())
    assert signoff["verdict"] == "FAIL" and any("UNKNOWN_TYPE" in n for n in signoff["notes"])

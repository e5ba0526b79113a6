"""Fleet soaks and lanes on a real Dask cluster: a scheduler and workers as processes on
loopback (``dask scheduler`` / ``dask worker --name HOST``), each worker standing for a host."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from soaklib.errors import ParameterError
from soaklib.fleet.cluster import ExecutorError, connect, parse_executor
from soaklib.fleet.query import query
from tests.conftest import PYTHON, REPO

DASK = str(Path(sys.executable).with_name("dask"))
FAST = ["--set", "duration_s=4", "--set", "warmup_s=1", "--set", "sampling.interval_s=0.2", "--set",
        "sampling.flush_s=1", "--set", "sampling.health_interval_s=0.2", "--set", "sampling.health_timeout_s=0.3",
        "--set", "sim.poll_s=0.1"]
LEAK_MB_PER_H = 36000.0  # 10 MiB/s: clear in a few seconds


class Cluster:
    """A scheduler and named workers; every process is killed (group) and reaped at the end."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.procs: dict[str, subprocess.Popen] = {}
        self.file = folder / "scheduler.json"
        self._start("scheduler", [DASK, "scheduler", "--scheduler-file", str(self.file), "--host", "127.0.0.1",
                                  "--port", "0", "--no-dashboard"])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (self.file.exists() and self.file.stat().st_size):
            time.sleep(0.05)
        self.address = json.loads(self.file.read_text())["address"]

    @property
    def executor(self) -> str:
        return "dask://" + self.address.removeprefix("tcp://")

    def _start(self, name: str, argv: list[str]) -> None:
        with open(self.folder / f"{name}.log", "wb") as log:  # the child keeps its own copy of the descriptor
            self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                                cwd=REPO)

    def worker(self, name: str, nthreads: int = 4) -> None:
        self._start(name, [DASK, "worker", "--scheduler-file", str(self.file), "--name", name, "--nthreads",
                           str(nthreads), "--no-dashboard", "--no-nanny", "--death-timeout", "30"])

    def wait_for(self, names: list[str], timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(b"Registered to" in (self.folder / f"{n}.log").read_bytes() for n in names):
                return
            time.sleep(0.1)
        raise AssertionError(f"workers {names} did not register: {self.log(names[0])}")

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")[-2000:]

    def kill(self, name: str) -> None:
        p = self.procs[name]
        descendants = psutil.Process(p.pid).children(recursive=True)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
        for d in descendants:  # what the worker ran: a machine that is gone takes its processes along
            try:
                os.killpg(d.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        psutil.wait_procs(descendants, timeout=10)

    def close(self) -> None:
        for p in self.procs.values():
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("dask"))
    try:
        for h in ("h1", "h2", "h3"):
            c.worker(h)
        c.wait_for(["h1", "h2", "h3"])
        yield c
    finally:
        c.close()


def soak_cli(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "soaklib.cli", *args], capture_output=True, text=True, timeout=timeout_s,
                          cwd=REPO)


def rows(signoff: dict[str, Any], host: str) -> dict[str, str]:
    return {r["metric"]: r["status"] for r in signoff["criteria"] if r["host"] == host}


def test_fleet_soak_a_on_three_workers_fails_on_the_planted_leak_and_names_its_host(
        cluster: Cluster, tmp_path: Path) -> None:
    out = soak_cli("fleet", "a", "--executor", cluster.executor, "--hosts", "h1,h2,h3", "--run-id", "fleet3",
                   "--output-dir", str(tmp_path), *FAST, "--set-host", f"h2:sim.leak_mb_per_h={LEAK_MB_PER_H}")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "[h2]" in out.stdout  # progress lines streamed back from the workers
    signoff = json.loads((tmp_path / "fleet3.json").read_text())
    assert signoff["verdict"] == "FAIL" and signoff["fleet"]["hosts_failed"] == ["h2"]
    assert [o["host"] for o in signoff["fleet"]["outliers"]] == ["h2"]
    leak = rows(signoff, "h2")
    assert leak["memory_slope_mb_per_h"] == "FAIL" and leak["memory_growth_mb"] == "FAIL"
    for host in ("h1", "h3"):
        assert signoff["hosts"][host]["verdict"] == "PASS", signoff["hosts"][host]["criteria"]
    workers = {h: s["worker"] for h, s in json.loads((tmp_path / "fleet3" / "run.json").read_text())["host_status"].items()}
    assert len(set(workers.values())) == 3  # each soak ran on its own host's worker
    hosts = query(tmp_path / "fleet3", "SELECT host, count(*) AS n FROM samples GROUP BY host ORDER BY host")
    assert list(hosts["host"]) == ["h1", "h2", "h3"] and (hosts["n"] > 5).all()
    assert (tmp_path / "fleet3" / "figures" / "fleet_leak_curves.png").stat().st_size > 0
    again = soak_cli("analyze", str(tmp_path / "fleet3"))
    assert again.returncode == 1 and "Fleet signoff" in again.stdout


def test_a_host_without_a_worker_is_a_fail_row_with_the_reason_not_a_hang(cluster: Cluster, tmp_path: Path) -> None:
    t0 = time.monotonic()
    out = soak_cli("fleet", "a", "--executor", cluster.executor, "--hosts", "nowhere", "--run-id", "gap",
                   "--output-dir", str(tmp_path), *FAST)
    assert out.returncode == 1, out.stdout + out.stderr
    assert time.monotonic() - t0 < 30
    signoff = json.loads((tmp_path / "gap.json").read_text())
    missing = signoff["hosts"]["nowhere"]
    assert missing["verdict"] == "FAIL" and "no Dask worker named 'nowhere'" in missing["reason"]
    assert [r["metric"] for r in missing["criteria"]] == ["host_soak"]


def test_a_worker_lost_mid_soak_is_that_hosts_fail_row_and_the_other_hosts_data_stay(
        cluster: Cluster, tmp_path: Path) -> None:
    cluster.worker("h5")
    cluster.wait_for(["h5"])
    fast = [a if a != "duration_s=4" else "duration_s=8" for a in FAST]
    fleet = subprocess.Popen(
        [PYTHON, "-m", "soaklib.cli", "fleet", "a", "--executor", cluster.executor, "--hosts", "h1,h5", "--run-id",
         "lost", "--output-dir", str(tmp_path), *fast], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True)
    try:
        parts = tmp_path / "lost" / "samples" / "host=h5"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not list(parts.glob("part-*.parquet")):
            time.sleep(0.05)  # h5's soak is sampling and has flushed
        cluster.kill("h5")
        stdout, _ = fleet.communicate(timeout=120)
    finally:
        if fleet.poll() is None:
            os.killpg(fleet.pid, signal.SIGKILL)
            fleet.wait(timeout=10)
    assert fleet.returncode == 1, stdout
    signoff = json.loads((tmp_path / "lost.json").read_text())
    assert signoff["hosts"]["h1"]["verdict"] == "PASS"
    lost = signoff["hosts"]["h5"]
    assert lost["verdict"] == "FAIL" and "h5" in lost["reason"] and "lost" in lost["reason"]
    counts = query(tmp_path / "lost", "SELECT host, count(*) AS n FROM samples GROUP BY host ORDER BY host")
    assert list(counts["host"]) == ["h1", "h5"] and (counts["n"] > 0).all()  # h5's flushed samples are kept


def test_an_unreachable_scheduler_is_an_executor_error_exit_3_not_a_hang() -> None:
    t0 = time.monotonic()
    with pytest.raises(ExecutorError, match="did not answer within 2 s") as e:
        connect(parse_executor("dask://127.0.0.1:9"), timeout_s=2)
    assert e.value.exit_code == 3 and time.monotonic() - t0 < 15
    with pytest.raises(ParameterError, match="dask://HOST:PORT"):
        parse_executor("tcp://127.0.0.1:8786")


SEED_KEYS = {"run_id", "passed", "all_clean", "total_jobs", "total_passed", "total_failed", "started_at",
             "completed_at", "duration_sec", "provider_summary", "rounds"}
SEED_JOB_KEYS = {"job_spec", "success", "status", "reason_code", "selected_model", "latency_ms", "completion",
                 "retries", "outcome_state", "stdout", "stderr", "started_at", "completed_at", "raw_outcome"}


def left_running(marker: str) -> list[str]:
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(marker in part for part in p.info["cmdline"] or []):
                found.append(f"{p.pid} {' '.join(p.info['cmdline'])[:120]}")
        except psutil.Error:
            pass
    return found


def test_lane_on_dask_dry_run_is_12_of_12_with_the_seed_keys_and_each_jobs_worker(
        cluster: Cluster, tmp_path: Path) -> None:
    out = soak_cli("multi-provider", "--dry-run", "--executor", cluster.executor, "--run-id", "dlane",
                   "--output-dir", str(tmp_path), "--no-progress")
    assert out.returncode == 0, out.stdout + out.stderr
    ev = json.loads((tmp_path / "dlane.json").read_text())
    assert set(ev) >= SEED_KEYS and ev["total_jobs"] == 12 and ev["total_passed"] == 12
    jobs = [j for r in ev["rounds"] for j in r["jobs"]]
    assert all(set(j) >= SEED_JOB_KEYS for j in jobs)
    assert {j["worker_host"] for j in jobs} <= {"h1", "h2", "h3"} and len({j["worker_host"] for j in jobs}) >= 2
    assert [j["job_spec"]["beads_id"] for j in ev["rounds"][0]["jobs"]][:3] == [
        "dlane-r1-opencode-0", "dlane-r1-opencode-1", "dlane-r1-cc-glm-0"]


def test_a_worker_killed_mid_round_loses_no_job_and_leaves_nothing_running(cluster: Cluster, tmp_path: Path) -> None:
    cluster.worker("h4")
    cluster.wait_for(["h4"])
    lane = subprocess.Popen(
        [PYTHON, "-m", "soaklib.cli", "multi-provider", "--dry-run", "--executor", cluster.executor, "--run-id",
         "klane", "--output-dir", str(tmp_path), "--rounds", "1", "--jobs-per-provider", "4", "--parallel", "8",
         "--max-retries", "1", "--timeout-sec", "60", "--no-progress"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not psutil.Process(cluster.procs["h4"].pid).children(recursive=True):
            time.sleep(0.05)  # h4 is running a job (its dx-runner's processes)
        cluster.kill("h4")
        stdout, _ = lane.communicate(timeout=240)
    finally:
        if lane.poll() is None:
            os.killpg(lane.pid, signal.SIGKILL)
            lane.wait(timeout=10)
    assert lane.returncode in (0, 1), stdout
    ev = json.loads((tmp_path / "klane.json").read_text())
    jobs = ev["rounds"][0]["jobs"]
    assert ev["total_jobs"] == 12 and len(jobs) == 12 and all(j["status"] for j in jobs)
    lost = [a for j in jobs for a in j["attempts"] if a["reason_code"] == "executor_exception"]
    assert lost and all("h4" in a["detail"] and "lost" in a["detail"] for a in lost), jobs
    retried = [j for j in jobs if any(a["reason_code"] == "executor_exception" for a in j["attempts"])]
    assert all(j["worker_host"] != "h4" for j in retried if j["success"])  # the fresh attempt ran elsewhere
    time.sleep(1.0)
    assert not left_running("klane"), left_running("klane")

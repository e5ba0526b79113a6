"""soak monitor: records real processes into part files and a complete manifest."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest

from soaklib.errors import ParameterError, TargetError
from soaklib.observe.gpu import GpuReader
from soaklib.observe.monitor import record
from soaklib.proc.find import find_matching
from soaklib.runs import load_run
from soaklib.store import read_manifest
from tests.fake_nvml import FakeNvml

PY = sys.executable
SLEEPER = [PY, "-c", "import time; x = bytearray(8 * 1024 * 1024); time.sleep(30)"]


def no_gpu() -> GpuReader:
    return GpuReader(nvml=FakeNvml("no_driver"))


def test_records_n_samples_of_a_started_command(tmp_path: Path) -> None:
    out = record(command=SLEEPER, interval_s=0.1, samples=5, out_dir=tmp_path / "mon", flush_s=0.2, gpu=no_gpu())
    run = load_run(out)
    assert run.complete and run.kind == "monitor"
    s = run.samples
    assert len(s) == 5
    assert (s["rss_bytes"] > 0).all() and s["alive"].all()
    assert s["rss_bytes"].iloc[-1] > 8 * 1024 * 1024  # the child's 8 MiB buffer is seen
    assert s["t_s"].is_monotonic_increasing
    assert 0.39 <= s["t_s"].iloc[-1] < 1.5  # on deadlines k * 0.1 s (late ticks are skipped)
    on_grid = (s["t_s"] - s["lag_s"]) / 0.1  # each sample = its deadline k * interval + the lag it recorded
    assert ((on_grid - on_grid.round()).abs() < 0.1).all(), s[["t_s", "lag_s"]]
    assert s["gpu_available"].eq(False).all() and s["gpu_used_bytes"].isna().all()
    assert str(s["ts"].dt.tz) == "UTC"
    m = run.manifest
    assert m["end_reason"] == "samples" and m["samples_written"] == 5
    assert m["target"]["started"] is True
    assert m["stop"]["exited"] is True  # the started command is stopped at the end
    assert m["gpu_notes"][0].startswith("NVML unavailable")
    assert not psutil.pid_exists(m["target"]["pid"]) or psutil.Process(m["target"]["pid"]).status() == "zombie"


def test_command_exiting_early_ends_cleanly(tmp_path: Path) -> None:
    cmd = [PY, "-c", "import sys, time; time.sleep(0.35); sys.exit(4)"]
    out = record(command=cmd, interval_s=0.05, samples=1000, out_dir=tmp_path / "early", gpu=no_gpu())
    m = read_manifest(out)
    assert m["complete"] and m["end_reason"] == "target_exited"
    assert m["exit"] == {"returncode": 4, "signal": None}
    assert 1 <= m["samples_written"] < 1000
    assert "stop" not in m


def test_duration_bound_and_gpu_columns(tmp_path: Path) -> None:
    out = record(command=SLEEPER, interval_s=0.1, duration_s=0.3, out_dir=tmp_path / "dur",
                 gpu=GpuReader(nvml=FakeNvml("healthy")))
    run = load_run(out)
    assert run.manifest["end_reason"] == "duration"
    assert len(run.samples) == 4  # t = 0, 0.1, 0.2, 0.3
    assert run.samples["gpu_available"].all() and (run.samples["gpu_total_bytes"] > 0).all()
    assert (run.samples["gpu_target_bytes"] == 0).all()  # the fake lists other pids only


def test_attach_by_match_and_stop_event(tmp_path: Path, procs: list[subprocess.Popen]) -> None:
    marker = f"soak-monitor-{uuid.uuid4().hex}"
    p = subprocess.Popen([*SLEEPER, marker], start_new_session=True)
    procs.append(p)
    deadline = time.monotonic() + 10
    while not find_matching(marker) and time.monotonic() < deadline:
        time.sleep(0.02)
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    out = record(match=marker, interval_s=0.05, out_dir=tmp_path / "att", gpu=no_gpu(), stop_event=stop)
    m = read_manifest(out)
    assert m["end_reason"] == "stopped" and m["target"]["pid"] == p.pid and not m["target"]["started"]
    assert m["samples_written"] >= 3
    assert p.poll() is None  # an attached process is left running


def test_flush_writes_parts_before_the_end(tmp_path: Path) -> None:
    out = record(command=SLEEPER, interval_s=0.05, samples=6, out_dir=tmp_path / "parts", flush_s=0.01,
                 gpu=no_gpu())
    assert read_manifest(out)["parts_written"] >= 3  # flushed while recording...
    parts = sorted((out / "samples").glob("part-*.parquet"))
    assert len(parts) == 1 and parts[0].name.startswith("part-00000-")  # ...and compacted into one range file
    assert len(load_run(out).samples) == 6


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(TargetError):
        record(command=["no-such-program-xyz"], samples=1, out_dir=tmp_path / "x", gpu=no_gpu())
    with pytest.raises(ParameterError):
        record(pid=1, match="x", out_dir=tmp_path / "y")
    with pytest.raises(ParameterError):
        record(command=SLEEPER, interval_s=0, out_dir=tmp_path / "z")
    with pytest.raises(TargetError):
        record(match=f"absent-{uuid.uuid4().hex}", samples=1, out_dir=tmp_path / "w", gpu=no_gpu())

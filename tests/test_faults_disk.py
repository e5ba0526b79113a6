"""Faults of the machine: the disk under the run folder fills, the run folder is removed.

The full disk is real where this machine lets the test mount a small tmpfs (root); else a
clearly named stand-in makes the store's part writes raise ``ENOSPC`` after a few flushes.
"""
from __future__ import annotations

import errno
import json
import shutil
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pyarrow.parquet as pq
import pytest

from soaklib.errors import EXIT_DISK_FULL, DiskFullError
from soaklib.params import SoakParams, load_params
from soaklib.runs import load_run
from soaklib.soak.harness import run_soak
from tests.conftest import PYTHON, REPO

DISK_MB = 3


def _mount_tmpfs(where: Path, size_mb: int) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    try:
        out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(where)],
                             capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path | None]:
    """A real 3 MB tmpfs, or None where this machine does not allow mounting one."""
    where = tmp_path / "disk"
    mounted = _mount_tmpfs(where, DISK_MB)
    yield where if mounted else None
    if mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=10)


FILLER = """
    import sys, time
    print("working", flush=True)
    time.sleep(float(sys.argv[2]))
    try:
        with open(sys.argv[1], "wb") as fh:  # the daemon fills the disk the harness writes to
            while True:
                fh.write(b"\\0" * 65536)
                fh.flush()
    except OSError as e:
        print("filler stopped:", e, flush=True)
    time.sleep(600)
"""


def _watcher_args(tmp: Path, out: Path, run_id: str, script: str, *args: str) -> list[str]:
    project = tmp / "project"
    project.mkdir(exist_ok=True)
    (tmp / "target.py").write_text(textwrap.dedent(script))
    command = json.dumps([PYTHON, str(tmp / "target.py"), *args])
    return [PYTHON, "-m", "soaklib.cli", "watcher", "a", "--run-id", run_id, "--output-dir", str(out), "--no-progress",
            "--set", f"project_dir={project}", "--set", f"target.command={command}", "--set", "llm.health_url=null",
            "--set", "duration_s=40", "--set", "sampling.interval_s=0.2", "--set", "sampling.flush_s=0.5",
            "--set", "preflight.min_free_disk_mb=0", "--set", "sampling.target_log_max_mb=0.5",
            "--set", "target.halt.timeout_s=5"]


def _pid_of_target(run_dir: Path) -> int | None:
    for p in psutil.process_iter(["cmdline"]):
        if any(str(run_dir.parent.parent / "target.py") == a for a in p.info["cmdline"] or []):
            return p.pid
    return None


def test_a_full_disk_stops_the_soak_cleanly_keeps_every_flushed_sample_and_says_what_to_do(
        tmp_path: Path, small_disk: Path | None) -> None:
    if small_disk is None:
        return _full_disk_stand_in(tmp_path)
    filler = small_disk / "filler.bin"
    t = time.monotonic()
    out = subprocess.run(_watcher_args(tmp_path, small_disk, "full", FILLER, str(filler), "1.5"), cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert time.monotonic() - t < 30
    run_dir = small_disk / "full"
    assert out.returncode == EXIT_DISK_FULL == 28, out.stderr
    assert "Traceback" not in out.stderr and "Traceback" not in out.stdout
    line = next(x for x in out.stderr.splitlines() if x.startswith("soak: error:"))
    assert "full" in line and f"soak analyze {run_dir}" in line and "last sample on disk is at" in line
    assert _pid_of_target(run_dir) is None  # the target was stopped
    parts = list((run_dir / "samples").rglob("part-*.parquet"))
    on_disk = sum(pq.read_metadata(p).num_rows for p in parts)
    assert on_disk >= 3
    assert len(load_run(run_dir).samples) == on_disk  # every flushed sample loads
    filler.unlink()  # free the space, then analyse
    again = subprocess.run([PYTHON, "-m", "soaklib.cli", "analyze", str(run_dir)], cwd=REPO, capture_output=True,
                           text=True, timeout=60)
    assert again.returncode == 1, again.stderr
    signoff = json.loads((small_disk / "full.json").read_text())
    assert signoff["complete"] is False and signoff["verdict"] == "FAIL"
    assert signoff["analysis"]["n_samples"] == on_disk
    assert any("disk" in n.lower() and "full" in n.lower() for n in signoff["notes"])
    unflushed = json.loads((run_dir / "observations.json").read_text())["sampling"]["samples_unflushed"]
    assert not unflushed or any(f"{unflushed} sample(s) taken after the disk filled" in n for n in signoff["notes"])


def _full_disk_stand_in(tmp_path: Path) -> None:
    """Stand-in where no tmpfs can be mounted: the store's part writes raise ENOSPC after 3 parts."""
    import soaklib.parts as parts_module

    real = parts_module.write_table
    calls = {"n": 0}

    def enospc_after_three_parts(path: Any, frame: Any) -> Path:
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device (stand-in)", str(path))
        return real(path, frame)

    parts_module.write_table = enospc_after_three_parts  # type: ignore[assignment]
    try:
        (tmp_path / "project").mkdir()
        (tmp_path / "t.py").write_text("import time\ntime.sleep(600)\n")
        params = load_params(SoakParams, overrides={
            "run_id": "full", "output_dir": str(tmp_path / "out"), "duration_s": 30, "project_dir": str(tmp_path / "project"),
            "llm": {"health_url": None}, "sampling": {"interval_s": 0.2, "flush_s": 0.5},
            "target": {"command": [PYTHON, str(tmp_path / "t.py")], "halt": {"timeout_s": 5}}})
        with pytest.raises(DiskFullError) as err:
            run_soak(params)
    finally:
        parts_module.write_table = real  # type: ignore[assignment]
    run_dir = tmp_path / "out" / "full"
    assert f"soak analyze {run_dir}" in str(err.value) and err.value.exit_code == 28
    on_disk = sum(pq.read_metadata(p).num_rows for p in (run_dir / "samples").rglob("part-*.parquet"))
    assert on_disk >= 3 and len(load_run(run_dir).samples) == on_disk


SLEEPER = """
    import time
    print("working", flush=True)
    time.sleep(600)
"""


def test_the_run_folder_removed_mid_run_is_said_and_what_was_written_after_is_kept(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    proc = subprocess.Popen(_watcher_args(tmp_path, out_dir, "gone", SLEEPER) + ["--set", "duration_s=4"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_dir = out_dir / "gone"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not list((run_dir / "samples").rglob("part-*.parquet")):
        time.sleep(0.05)
    moved = tmp_path / "removed"
    run_dir.rename(moved)  # gone at once from the harness's view (an rmtree would race its writes)
    shutil.rmtree(moved, ignore_errors=True)
    _, stderr = proc.communicate(timeout=60)
    assert "Traceback" not in stderr, stderr
    assert proc.returncode == 1, stderr
    signoff = json.loads((out_dir / "gone.json").read_text())
    assert signoff["complete"] is False and signoff["verdict"] == "FAIL"
    assert any("removed" in n for n in signoff["notes"]), signoff["notes"]
    assert signoff["analysis"]["n_samples"] >= 3  # the samples written after the removal


def test_a_full_disk_during_a_lane_is_one_line_exit_28_and_nothing_left_running(
        tmp_path: Path, small_disk: Path | None) -> None:
    if small_disk is None:
        return  # the soak's stand-in covers the store; a lane's writes need a real small disk
    import os
    import sys

    from tests.test_multi_provider import FAST_SIM, _sim_processes

    filler = small_disk / "filler.bin"
    lane = subprocess.Popen(
        [sys.executable, "-m", "soaklib.cli", "multi-provider", "--dry-run", "--rounds", "3", "--run-id", "lanefull",
         "--output-dir", str(small_disk / "out"), "--no-progress"], cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**os.environ, **FAST_SIM})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not list((small_disk / "out").rglob("*.txt")):
        time.sleep(0.05)
    try:
        with open(filler, "wb") as fh:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
    except OSError as e:
        assert e.errno == errno.ENOSPC
    _, stderr = lane.communicate(timeout=120)
    assert lane.returncode == EXIT_DISK_FULL, stderr
    assert "Traceback" not in stderr and "soak: error: the disk is full" in stderr
    time.sleep(0.5)
    assert _sim_processes("lanefull-") == []

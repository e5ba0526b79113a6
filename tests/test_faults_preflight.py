"""The preflight projects the run's own disk use, and warns of the WATCHER daemon's KillSwitch."""
from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from soaklib.params import SoakParams, load_params
from soaklib.soak import preflight as pf
from tests.conftest import PYTHON, REPO
from tests.test_faults_disk import _mount_tmpfs


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path | None]:
    where = tmp_path / "disk"
    mounted = _mount_tmpfs(where, 3)
    yield where if mounted else None
    if mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=10)


def _params(out: Path, **over: object) -> SoakParams:
    return load_params(SoakParams, overrides={"output_dir": str(out), "preflight": {"min_free_disk_mb": 0}, **over})


def test_the_projection_adds_parts_samples_the_log_limit_and_the_reserve() -> None:
    p = load_params(SoakParams, overrides={"duration_s": 3600, "sampling": {"interval_s": 1, "flush_s": 60,
                                                                            "target_log_max_mb": 10}})
    parts, samples = 60 + 2, 3600 + 2
    expected = (parts * pf.PART_FILE_BYTES + 2 * samples * pf.SAMPLE_BYTES + 10 * 2**20 + pf.EVENTS_BYTES
                + pf.RESERVE_BYTES)
    assert pf.projected_use_bytes(p) == expected


def test_the_preflight_refuses_a_run_whose_projected_use_exceeds_the_free_space(
        tmp_path: Path, small_disk: Path | None) -> None:
    out = small_disk or tmp_path / "out"
    free = shutil.disk_usage(small_disk or tmp_path).free
    # a run whose part files alone need more than the free space (one flush per second)
    duration_s = 4 * free / pf.PART_FILE_BYTES
    long_run = _params(out, duration_s=duration_s, sampling={"interval_s": 1, "flush_s": 1})
    f = pf._projection(long_run, 0)
    assert not f.ok and "would fall below" in f.message and "sampling.interval_s" in f.fix
    short = _params(out, duration_s=5, sampling={"interval_s": 0.2, "flush_s": 0.5, "target_log_max_mb": 0.5})
    assert pf._projection(short, 0).ok
    assert pf.enforce([f], force=True) == [f]  # --force: recorded, soaked anyway
    refused = subprocess.run(
        [PYTHON, "-m", "soaklib.cli", "watcher", "a", "--run-id", "big", "--output-dir", str(out), "--no-progress",
         "--set", f"duration_s={duration_s:.0f}", "--set", "sampling.interval_s=1", "--set", "sampling.flush_s=1",
         "--set", "preflight.min_free_disk_mb=0"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 3, refused.stderr
    assert "this run writes up to" in refused.stderr and "--force" in refused.stderr
    assert not (out / "big" / "run.json").exists()


def test_killswitch_warnings_under_10_gb_free_and_near_95_percent_memory(
        tmp_path: Path, small_disk: Path | None) -> None:
    warned = pf.killswitch(root=small_disk or tmp_path, memory_pct=96.0)
    by_check = {f.check: f for f in warned}
    assert all(f.ok and f.warn for f in warned)
    assert "95%" in by_check["killswitch_memory"].message
    if small_disk is not None:  # a 3 MB disk is under the daemon's 10 GB
        assert "10 GB" in by_check["killswitch_disk"].message
    assert pf.killswitch(root=tmp_path, memory_pct=10.0) == [] or shutil.disk_usage(tmp_path).free < 10 * 2**30

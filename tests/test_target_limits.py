"""The limits a target runs into (``soaklib.proc.limits``), read from this test process and a planted cgroup tree."""
from __future__ import annotations

import os
import resource
from pathlib import Path

import psutil

from soaklib.proc.limits import cgroup_memory_limit, nofile_soft, target_limits


def _plant(root: Path, limit: int) -> None:
    """Write ``limit`` as the memory limit of this process's cgroup under a fake cgroup root (v1 and v2 names)."""
    for line in Path(f"/proc/{os.getpid()}/cgroup").read_text().splitlines():
        _, controllers, rel = line.split(":", 2)
        if controllers == "":
            d = root / rel.lstrip("/")
            d.mkdir(parents=True, exist_ok=True)
            (d / "memory.max").write_text(f"{limit}\n")
            (root / "memory.max").write_text("max\n")  # the root: no limit
        elif "memory" in controllers.split(","):
            d = root / "memory" / rel.lstrip("/")
            d.mkdir(parents=True, exist_ok=True)
            (d / "memory.limit_in_bytes").write_text(f"{limit}\n")


def test_soft_nofile_limit_of_this_process():
    assert nofile_soft(os.getpid()) == resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def test_planted_cgroup_limit_is_the_memory_limit(tmp_path):
    _plant(tmp_path, 512 * 2**20)
    limit, source = cgroup_memory_limit(os.getpid(), tmp_path)
    assert limit == 512 * 2**20 and source.startswith("cgroup memory.")
    lim = target_limits(os.getpid(), tmp_path)
    assert lim.memory_limit_bytes == 512 * 2**20 and lim.memory_limit_source == source
    assert lim.host_memory_bytes == psutil.virtual_memory().total
    assert lim.to_json()["nofile_soft"] == resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def test_no_cgroup_limit_falls_back_to_the_host_and_a_gone_process_reads_none(tmp_path):
    lim = target_limits(os.getpid(), tmp_path / "empty")
    assert lim.memory_limit_source == "host memory" and lim.memory_limit_bytes == psutil.virtual_memory().total
    gone = target_limits(2**22 + 12345, tmp_path)  # beyond pid_max: no such process
    assert gone.nofile_soft is None and gone.notes and gone.memory_limit_source == "host memory"

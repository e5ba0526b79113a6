"""The limits a target runs into: its memory limit (cgroup, else the host's memory) and its soft FD limit.

Read once when a soak starts (the target may be gone when the signoff is written) and kept
in the run's observations for the time-to-exhaustion rows:

- memory: the tightest ``memory.max`` (cgroup v2) or ``memory.limit_in_bytes`` (v1) of the
  target's cgroup and its ancestors, when below the host's total memory; otherwise the
  host's total memory (``psutil.virtual_memory().total``);
- file descriptors: the soft ``Max open files`` of ``/proc/<pid>/limits`` (RLIMIT_NOFILE).

Every read that fails leaves its value None with the reason in ``notes``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class TargetLimits:
    """What a target's resources are measured against (bytes, FDs); None = unknown."""

    memory_limit_bytes: int | None = None
    memory_limit_source: str = ""  # "cgroup memory.max", "cgroup memory.limit_in_bytes", "host memory"
    host_memory_bytes: int | None = None
    nofile_soft: int | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def cgroup_memory_limit(pid: int, root: Path = CGROUP_ROOT) -> tuple[int | None, str]:
    """The tightest memory limit of the process's cgroup and its ancestors (None: none set or unreadable)."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None, ""
    found: list[tuple[int, str]] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        if controllers == "":  # v2 unified
            base, name = root, "memory.max"
        elif "memory" in controllers.split(","):
            base, name = root / "memory", "memory.limit_in_bytes"
        else:
            continue
        here = base / rel.lstrip("/")
        while True:
            value = _read_int(here / name)
            if value is not None:
                found.append((value, f"cgroup {name}"))
            if here == base or base not in here.parents:
                break
            here = here.parent
    return min(found) if found else (None, "")


def nofile_soft(pid: int) -> int | None:
    """The soft ``Max open files`` of a process (None: unreadable or unlimited)."""
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                soft = line[len("Max open files"):].split()[0]
                return int(soft) if soft.isdigit() else None
    except OSError:
        return None
    return None


def target_limits(pid: int, root: Path = CGROUP_ROOT) -> TargetLimits:
    """The memory and FD limits of process ``pid`` (see the module)."""
    notes: list[str] = []
    host = int(psutil.virtual_memory().total)
    cg, source = cgroup_memory_limit(pid, root)
    if cg is not None and cg < host:
        memory, source = cg, source
    else:
        memory, source = host, "host memory"
    fds = nofile_soft(pid)
    if fds is None:
        notes.append(f"the soft RLIMIT_NOFILE of pid {pid} could not be read (/proc/{pid}/limits)")
    return TargetLimits(memory, source, host, fds, notes)

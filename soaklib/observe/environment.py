"""What a run ran on: host, platform, Python, package versions, the toolkit's commit, CPUs,
GPUs. One description for both lanes and every soak (``environment`` in their JSON)."""
from __future__ import annotations

import dataclasses
import importlib.metadata as md
import os
import platform as _platform
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soaklib.observe.gpu import gpu_inventory

PACKAGES = ("soaklib", "pandas", "pyarrow", "scipy", "psutil", "nvidia-ml-py", "papermill")


def git_commit() -> str | None:
    """The commit of the soaklib checkout, when it is one (at most 5 s)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return versions


@dataclass(frozen=True)
class Environment:
    """The machine and software of a run."""

    host: str = field(default_factory=socket.gethostname)
    platform: str = field(default_factory=_platform.platform)
    python: str = field(default_factory=_platform.python_version)
    cpu_count: int | None = field(default_factory=os.cpu_count)
    packages: dict[str, str | None] = field(default_factory=_versions)
    commit: str | None = field(default_factory=git_commit)
    gpu: Any = field(default_factory=gpu_inventory)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def environment() -> dict[str, Any]:
    """The JSON form of this machine's :class:`Environment`."""
    return Environment().to_json()

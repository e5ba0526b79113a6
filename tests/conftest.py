"""Shared fixtures: every process a test starts is stopped and reaped, whatever happens."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen]]:
    """Collect Popen objects here; each one's process group is killed and reaped at teardown."""
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            p.kill()
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


@pytest.fixture(autouse=True)
def no_orphans() -> Iterator[None]:
    """Fail a test that leaves a child process of the test runner alive."""
    before = {c.pid for c in psutil.Process().children(recursive=True)}
    yield
    me = psutil.Process()
    leftovers = [c for c in me.children(recursive=True) if c.pid not in before]
    alive = []
    for c in leftovers:
        try:
            if c.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{c.pid} {' '.join(c.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            pass
        try:
            c.kill()
        except psutil.NoSuchProcess:
            pass
    assert not alive, f"test left processes behind: {alive}"


PYTHON = sys.executable

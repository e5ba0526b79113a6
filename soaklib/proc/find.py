"""Finding the process to attach to: by pid or by a command-line pattern, never the harness."""
from __future__ import annotations

import re

import psutil

from soaklib.errors import ParameterError


def protected_pids() -> set[int]:
    """This process and its ancestors: never matched, never signalled."""
    me = psutil.Process()
    pids = {me.pid}
    try:
        pids.update(p.pid for p in me.parents())
    except psutil.Error:
        pass
    return pids


def argv_of(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def find_matching(pattern: str) -> list[psutil.Process]:
    """Live processes whose command line matches the regex ``pattern`` (``re.search``),
    excluding this process and its ancestors."""
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise ParameterError(f"target.match {pattern!r} is not a valid regular expression: {e}",
                             key="target.match", value=pattern) from None
    protected = protected_pids()
    found = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        info = p.info
        if p.pid in protected or info.get("status") == psutil.STATUS_ZOMBIE:
            continue
        cmd = " ".join(info.get("cmdline") or [])
        if cmd and rx.search(cmd):
            found.append(p)
    return found

"""One way to end a process group: SIGTERM, a bounded wait, then SIGKILL; and reap the child.

Every process the toolkit starts runs in a session of its own (``start_new_session``), so
its process group holds what it spawned; killing the group leaves no orphan. The harness's
own group, 0 and 1 are never signalled.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time

POLL_S = 0.02


def _gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def kill_group(pgid: int, *, grace_s: float = 2.0, term: bool = True) -> bool:
    """SIGTERM the group (unless ``term`` is False), wait up to ``grace_s`` for it to be gone,
    then SIGKILL; True when the group is gone. Refuses 0, 1 and the caller's own group."""
    if pgid in (0, 1) or pgid == os.getpgrp():
        return False
    for sig in ((signal.SIGTERM, signal.SIGKILL) if term else (signal.SIGKILL,)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        deadline = time.monotonic() + (grace_s if sig == signal.SIGTERM else 2.0)
        while time.monotonic() < deadline:
            if _gone(pgid):
                return True
            time.sleep(POLL_S)
    return _gone(pgid)


def stop_child(proc: subprocess.Popen[bytes] | subprocess.Popen[str], *, grace_s: float = 5.0,
               term: bool = True) -> int | None:
    """End a child started with ``start_new_session`` and its group, then reap it (bounded).

    ``term`` False kills at once (a call that already ran past its timeout). Returns the
    child's exit code, or None if it could not be reaped within 5 s.
    """
    if proc.poll() is None:
        if term:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                return proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            try:
                proc.kill()
            except ProcessLookupError:
                pass
    else:  # the child is gone; its group may not be
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        return proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return None


def run_bounded(argv: list[str], *, cwd: str | os.PathLike[str] | None, timeout_s: float) -> str | None:
    """Run a halt command in its own group with a timeout; the error text, or None on success."""
    try:
        p = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True)
    except OSError as e:
        return f"halt command {argv[0]!r} could not run: {e}"
    try:
        _, err = p.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop_child(p, term=False)
        p.communicate()
        return f"halt command {' '.join(argv)[:120]!r} did not return within {timeout_s:g} s"
    if p.returncode != 0:
        tail = err.decode("utf-8", "replace").strip()[-400:]
        return f"halt command exited {p.returncode}" + (f": {tail}" if tail else "")
    return None

"""Start, attach to and halt the daemon under test, and never leave its processes behind.

A started target runs in its own session and process group (``start_new_session``), so
its whole tree can be found and stopped even after children re-parent to init. Halting
is measured on the monotonic clock from the request to the moment the process is seen
gone (polled every 20 ms); past the timeout the tree is terminated: SIGTERM to every
process, then SIGKILL to what is left.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import psutil

from soaklib.errors import ParameterError, TargetError
from soaklib.proc.find import argv_of, find_matching, protected_pids
from soaklib.proc.group import run_bounded
from soaklib.proc.logcopy import LogCopy
from soaklib.store import iso, utc_now

POLL_S = 0.02
HaltMethod = Literal["signal", "command", "flag"]


@dataclass(frozen=True)
class ExitInfo:
    """How a target ended. ``returncode`` follows ``subprocess``: negative = killed by that
    signal; ``signal`` repeats the signal number. Both are None for an attached process
    (only its parent can read its status)."""

    returncode: int | None
    signal: int | None
    exited_at_mono: float


@dataclass
class HaltResult:
    """The outcome of a halt request; ``halt_s`` is None when the target did not exit."""

    method: str
    requested_at: datetime
    halt_s: float | None
    exited: bool
    forced: bool
    returncode: int | None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (timestamp as ISO text)."""
        d = asdict(self)
        d["requested_at"] = iso(self.requested_at)
        return d


def _gone(p: psutil.Process) -> bool:
    """True when ``p`` has exited (a zombie counts as gone: it runs nothing)."""
    try:
        return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


class Target:
    """The process under test: started by us (``Target.start``) or attached to (``Target.attach``).

    Use as a context manager so that a started target is always terminated, also on error
    and Ctrl-C; an attached target is left running.
    """

    def __init__(self, process: psutil.Process, *, popen: subprocess.Popen[bytes] | None = None,
                 argv: list[str] | None = None, log_path: Path | None = None,
                 log_copy: LogCopy | None = None) -> None:
        self._proc = process
        self._popen = popen
        self.argv = argv if argv is not None else argv_of(process)
        self.log_path = log_path
        self.log_copy = log_copy  # the bounded copy of its output, when started with log_max_bytes
        self._exit: ExitInfo | None = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def start(cls, argv: list[str], *, cwd: str | os.PathLike[str] | None = None,
              env: Mapping[str, str] | None = None,
              log_path: str | os.PathLike[str] | None = None, log_max_bytes: int | None = None) -> Target:
        """Start ``argv`` in its own process group, stdout+stderr appended to ``log_path``.

        With ``log_max_bytes`` the output goes through a pipe into a bounded copy at
        ``log_path`` (:class:`~soaklib.proc.logcopy.LogCopy`, ``Target.log_copy``) whose
        lines can be counted as they arrive. ``env`` is merged onto ``os.environ``. A missing executable or folder raises
        ``TargetError`` (exit 3) naming it and how to fix it.
        """
        if not argv or not all(isinstance(a, str) for a in argv):
            raise ParameterError(f"target.command {argv!r} must be a non-empty list of strings (an argv)",
                                 key="target.command", value=argv)
        if cwd is not None and not Path(cwd).is_dir():
            raise TargetError(f"cannot start {argv[0]!r}: working folder {str(cwd)!r} does not exist; "
                              "create it or set project_dir to an existing folder", cwd=str(cwd))
        full_env = {**os.environ, **{str(k): str(v) for k, v in (env or {}).items()}}
        exe = argv[0]
        if os.sep not in exe and shutil.which(exe, path=full_env.get("PATH")) is None:
            raise TargetError(f"cannot start the target: executable {exe!r} is not on PATH; "
                              "install it or give its full path in target.command", executable=exe)
        log: Path | None = Path(log_path) if log_path is not None else None
        out: Any = subprocess.DEVNULL
        copy: LogCopy | None = None
        if log is not None and log_max_bytes is not None:
            copy = LogCopy(log, log_max_bytes)
            out = copy.fileno()
        elif log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            out = open(log, "ab")  # noqa: SIM115 - handed to the child, closed below
        started = False
        try:
            popen = subprocess.Popen(argv, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
            started = True
        except FileNotFoundError:
            raise TargetError(f"cannot start the target: executable {exe!r} does not exist"
                              f"{' (relative to ' + str(cwd) + ')' if cwd and not os.path.isabs(exe) else ''}; "
                              "fix target.command", executable=exe) from None
        except PermissionError:
            raise TargetError(f"cannot start the target: {exe!r} is not executable; chmod +x it or run "
                              "it through its interpreter in target.command", executable=exe) from None
        except OSError as e:
            raise TargetError(f"cannot start the target {argv!r}: {e}", executable=exe) from None
        finally:
            if copy is not None and started:
                copy.start()
            elif copy is not None:
                copy.abandon()
            elif log is not None:
                out.close()
        # Our unreaped child stays visible to psutil (as a zombie at worst) until we wait for it.
        return cls(psutil.Process(popen.pid), popen=popen, argv=list(argv), log_path=log, log_copy=copy)

    @classmethod
    def attach(cls, pid: int | None = None, match: str | None = None) -> Target:
        """Attach to a running process by ``pid`` or by a unique command-line regex ``match``."""
        if (pid is None) == (match is None):
            raise ParameterError("attach needs exactly one of target.pid or target.match", key="target")
        if pid is not None:
            try:
                proc = psutil.Process(pid)
                zombie = proc.status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                raise TargetError(f"no process with pid {pid}: start the daemon first or fix target.pid",
                                  pid=pid) from None
            if zombie:
                raise TargetError(f"process {pid} has already exited (zombie): start the daemon again",
                                  pid=pid)
            if pid in protected_pids():
                raise TargetError(f"pid {pid} is the harness itself or one of its parents", pid=pid)
            return cls(proc)
        assert match is not None
        found = find_matching(match)
        if len(found) != 1:
            listing = "; ".join(f"{p.pid}: {' '.join(argv_of(p))[:160]}" for p in found[:10]) or "none"
            what = "no process matches" if not found else f"{len(found)} processes match"
            raise TargetError(f"{what} target.match {match!r} (candidates: {listing}); "
                              "make the pattern match exactly one process or give target.pid",
                              match=match, candidates=tuple(p.pid for p in found))
        return cls(found[0])

    # ------------------------------------------------------------------ state

    @property
    def pid(self) -> int:
        """The root process id."""
        return self._popen.pid if self._popen is not None else self._proc.pid

    @property
    def started(self) -> bool:
        """True when this harness started the process (and so must stop it)."""
        return self._popen is not None

    def poll(self) -> ExitInfo | None:
        """None while the target runs; how it ended once it has (our child is reaped)."""
        if self._exit is not None:
            return self._exit
        if self._popen is not None:
            rc = self._popen.poll()
            if rc is None:
                return None
            self._exit = ExitInfo(rc, -rc if rc < 0 else None, time.monotonic())
        else:
            if not _gone(self._proc):
                return None
            self._exit = ExitInfo(None, None, time.monotonic())
        return self._exit

    def is_running(self) -> bool:
        """True while the root process runs (an exited child is reaped, not left a zombie)."""
        return self.poll() is None

    def tree(self) -> list[psutil.Process]:
        """The root and its descendants alive now; processes vanishing meanwhile are skipped."""
        if not self.is_running():
            return []
        out = [self._proc]
        try:
            out.extend(self._proc.children(recursive=True))
        except psutil.Error:
            pass
        return out

    # ------------------------------------------------------------------ halting

    def halt(self, method: HaltMethod, *, command: list[str] | None = None, flag: str | os.PathLike[str] | None = None,
             timeout_s: float, project_dir: str | os.PathLike[str] | None = None,
             wait: bool = True, grace_s: float = 5.0) -> HaltResult:
        """Ask the target to stop (``signal``, ``command`` or ``flag``) and time its exit.

        ``signal`` sends SIGTERM to the root only (the daemon stops its children);
        ``command`` runs an argv in ``project_dir`` (bounded by ``timeout_s``); ``flag``
        creates the flag file (relative paths are in ``project_dir``). Past ``timeout_s``
        the tree is terminated (``grace_s`` between TERM and KILL) and the result says
        ``forced``. ``wait=False`` only sends the request (for a halt that merely pauses
        the daemon; follow it with ``stop``).
        """
        requested_at = utc_now()
        t0 = time.monotonic()
        error: str | None = None
        if (info := self.poll()) is not None:
            return HaltResult(method, requested_at, None, True, False, info.returncode,
                              "the target had already exited before the halt request")
        if method == "signal":
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            except PermissionError:
                return HaltResult(method, requested_at, None, False, False, None,
                                  f"not permitted to signal pid {self.pid}: run the harness as the daemon's user")
        elif method == "command":
            if not command:
                raise ParameterError("halt method 'command' needs target.halt.command (an argv)",
                                     key="target.halt.command")
            error = run_bounded(list(command), cwd=project_dir, timeout_s=timeout_s)
        elif method == "flag":
            if not flag:
                raise ParameterError("halt method 'flag' needs target.halt.flag (a path)", key="target.halt.flag")
            path = Path(flag)
            if not path.is_absolute() and project_dir is not None:
                path = Path(project_dir) / path
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(f"halt requested {iso(requested_at)}\n", encoding="utf-8")
            except OSError as e:
                error = f"could not create halt flag {str(path)!r}: {e}"
        else:
            raise ParameterError(f"halt method {method!r} is invalid: allowed are signal, command, flag",
                                 key="target.halt.method", value=method)
        if not wait:
            info = self.poll()
            return HaltResult(method, requested_at, None, info is not None, False,
                              info.returncode if info else None, error)
        info = self._wait_exit(t0 + timeout_s)
        if info is not None:
            return HaltResult(method, requested_at, max(0.0, info.exited_at_mono - t0), True, False,
                              info.returncode, error)
        self.terminate_tree(grace_s)
        info = self.poll()
        note = f"did not exit within {timeout_s:g} s of the halt request; process tree terminated"
        return HaltResult(method, requested_at, None, False, True, info.returncode if info else None,
                          f"{error}; {note}" if error else note)

    def stop(self, timeout_s: float = 10.0, grace_s: float = 5.0) -> HaltResult:
        """SIGTERM the root, wait up to ``timeout_s``, then terminate the whole tree."""
        return self.halt("signal", timeout_s=timeout_s, grace_s=grace_s)

    def _wait_exit(self, deadline_mono: float) -> ExitInfo | None:
        while True:
            info = self.poll()
            if info is not None or time.monotonic() >= deadline_mono:
                return info
            time.sleep(POLL_S)

    def _group_ids(self) -> tuple[int | None, int | None]:
        """The target's own process group and session, when it leads them (never ours)."""
        pgid = sid = None
        try:
            if os.getpgid(self.pid) == self.pid and self.pid != os.getpgrp():
                pgid = self.pid
            if os.getsid(self.pid) == self.pid and self.pid != os.getsid(0):
                sid = self.pid
        except (ProcessLookupError, PermissionError):
            if self.started:  # root reaped or gone: its group and session still name its leftovers
                pgid = sid = self.pid
        return pgid, sid

    def _capture(self) -> list[psutil.Process]:
        """Every process of the target: the tree plus the members of its group and session."""
        protected = protected_pids()
        found: dict[int, psutil.Process] = {}
        if not _gone(self._proc):
            found[self._proc.pid] = self._proc
            try:
                found.update((c.pid, c) for c in self._proc.children(recursive=True))
            except psutil.Error:
                pass
        pgid, sid = self._group_ids()
        if pgid is not None or sid is not None:
            for p in psutil.process_iter():
                try:
                    if (pgid is not None and os.getpgid(p.pid) == pgid) or (sid is not None and os.getsid(p.pid) == sid):
                        found.setdefault(p.pid, p)
                except (ProcessLookupError, PermissionError, psutil.Error):
                    continue
        return [p for pid, p in found.items() if pid not in protected and not _gone(p)]

    def _signal_all(self, procs: list[psutil.Process], sig: int) -> list[psutil.Process]:
        sent = []
        for p in procs:
            try:
                p.send_signal(sig)
                sent.append(p)
            except psutil.NoSuchProcess:
                pass
            except psutil.AccessDenied:
                sent.append(p)  # still waited for: it may exit anyway
        return sent

    def _wait_all(self, procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
        """Wait until each process is gone (our child reaped via Popen); return the survivors."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self._popen is not None:
                self.poll()
            alive = [p for p in procs if not _gone(p)]
            if not alive or time.monotonic() >= deadline:
                return alive
            time.sleep(POLL_S)

    def terminate_tree(self, grace_s: float = 5.0) -> list[int]:
        """SIGTERM every process of the target, SIGKILL what is left after ``grace_s``.

        The tree, process group and session are captured before signalling (children
        re-parent as their parents die). Idempotent; returns the pids signalled.
        """
        victims = self._capture()
        if not victims:
            if self._popen is not None:
                self._reap(1.0)
            return []
        seen = {p.pid for p in victims}
        signalled = {p.pid for p in self._signal_all(victims, signal.SIGTERM)}
        left = self._wait_all(victims, grace_s)
        for _ in range(3):  # processes forked meanwhile are killed outright
            extra = [p for p in self._capture() if p.pid not in seen]
            seen.update(p.pid for p in extra)
            left = [p for p in left + extra if not _gone(p)]
            if not left:
                break
            signalled.update(p.pid for p in self._signal_all(left, signal.SIGKILL))
            left = self._wait_all(left, 5.0)
        if self._popen is not None:
            self._reap(1.0)
        return sorted(signalled)

    def _reap(self, timeout_s: float) -> None:
        assert self._popen is not None
        try:
            self._popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return
        self.poll()

    # ------------------------------------------------------------------ context manager

    def __enter__(self) -> Target:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.started:
            self.terminate_tree()

    def __repr__(self) -> str:
        how = "started" if self.started else "attached"
        return f"<Target {how} pid={self.pid} argv={' '.join(self.argv)[:80]!r}>"

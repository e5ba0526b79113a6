"""Client of the dx-runner command surface (DESIGN.md section 3).

Speaks the runner as it really behaves: argv lists only; output always captured to files
(``start`` forks a monitor that holds its stdout/stderr open until the job ends, so pipes
would hang); a timeout on every call, the whole process group killed when one expires;
string ``exit_code`` in reports; half-written ``.outcome`` files; ``stop`` that leaves the
provider's process tree alive (the client kills the group named in ``<ID>.pid``).
"""
from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soaklib.errors import ParameterError
from soaklib.proc.group import kill_group, stop_child
from soaklib.redact import redact

DEFAULT_OUTCOME_DIR = Path("/tmp/dx-runner")
SIMULATOR_ARGV = [sys.executable, "-m", "soaklib.sim.dx_runner"]

#: Exit codes of ``dx-runner start`` and what they mean for the client.
START_EXITS = {
    0: "started",
    1: "prompt_missing_or_already_running",
    20: "unknown_provider",
    21: "preflight_failed",
    22: "worktree_refused",
    24: "runtime_missing",
    26: "concurrency_cap",
}
TERMINAL_STATES = frozenset(
    {"exited_ok", "no_op_success", "exited_err", "no_op", "blocked", "stalled", "stopped", "start_failed"}
)
_FAIL_LINE = re.compile(r"(ERROR_CODE=|ERROR:|reason_code=|NO_AUTH_SOURCE|FAILED|DENIED:)")
_STARTED = re.compile(r"^started\s+(.*)$", re.M)
_REASON = re.compile(r"reason_code=([A-Za-z0-9_.:-]+)")


def find_runner(explicit: str | None = None, env: Mapping[str, str] | None = None) -> list[str]:
    """Locate dx-runner: ``--dx-runner``, else ``$DX_RUNNER``, else PATH, else scripts/dx-runner."""
    env = os.environ if env is None else env
    candidates = [explicit, env.get("DX_RUNNER"), shutil.which("dx-runner"), "scripts/dx-runner"]
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return [str(Path(c).resolve())]
    if explicit:
        raise ParameterError(
            f"dx-runner {explicit!r} does not exist or is not executable: pass the runner's path "
            "with --dx-runner, or use --dry-run for the built-in simulator",
            key="dx_runner",
            value=explicit,
        )
    raise ParameterError(
        "dx-runner not found (looked at --dx-runner, $DX_RUNNER, PATH, scripts/dx-runner): "
        "install it, pass --dx-runner PATH, or use --dry-run for the built-in simulator",
        key="dx_runner",
    )


@dataclass
class Call:
    """One finished runner call."""

    argv: list[str]
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float
    timed_out: bool = False
    cancelled: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


@dataclass
class PreflightResult:
    provider: str
    passed: bool
    returncode: int | None
    failing_lines: list[str]
    reason_code: str | None
    duration_s: float
    timed_out: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "passed": self.passed,
            "returncode": self.returncode,
            "reason_code": self.reason_code,
            "failing_lines": self.failing_lines,
            "duration_sec": round(self.duration_s, 3),
            "timed_out": self.timed_out,
        }


@dataclass
class StartResult:
    returncode: int | None
    meaning: str
    pid: int | None
    log_path: str | None
    reason_code: str | None
    output: str
    t_call_mono: float
    t_call_wall: float
    timed_out: bool = False


@dataclass
class CheckResult:
    returncode: int | None
    state: str | None
    reason_code: str | None
    selected_model: str | None
    fallback_reason: str | None
    raw: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # "timeout" | "unparseable" | message
    text: str = ""


def parse_kv(text: str) -> dict[str, str]:
    """Parse ``key=value`` lines (outcome / meta files); ignores lines without '='."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            k = k.strip()
            if k:
                out[k] = v.strip()
    return out


def preflight_failures(text: str) -> list[str]:
    """The failing lines of a preflight report (ERROR_CODE=, ERROR:, reason_code=, …)."""
    return [ln.strip() for ln in text.splitlines() if _FAIL_LINE.search(ln) and "PASSED" not in ln]


def parse_started(text: str) -> dict[str, str]:
    """``started beads=ID provider=P pid=N log=PATH`` → dict (empty when absent)."""
    m = None
    for m in _STARTED.finditer(text):  # noqa: B007 - the last "started" line counts
        pass
    if not m:
        return {}
    return dict(tok.split("=", 1) for tok in m.group(1).split() if "=" in tok)


def parse_check(text: str) -> dict[str, Any] | None:
    """The JSON object of ``check --json`` (last line that parses as an object), or None."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                return obj
    return None


def parse_report(text: str) -> dict[str, Any] | None:
    """The pretty JSON of ``report --format json``, or None when empty/unparseable."""
    text = text.strip()
    if not text:
        return None
    start = text.find("{")
    if start < 0:
        return None
    try:
        obj = json.loads(text[start:])
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def as_int(value: Any) -> int | None:
    """Runner numbers arrive as strings (``"0"``, ``"-"``): int or None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        return None


class DxRunner:
    """Typed calls to one dx-runner (or the simulator), every one with a timeout."""

    def __init__(
        self,
        argv_prefix: list[str],
        *,
        outcome_dir: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        preflight_timeout_s: float = 120.0,
        start_timeout_s: float = 120.0,
        check_timeout_s: float = 20.0,
        report_timeout_s: float = 30.0,
        stop_timeout_s: float = 30.0,
        cancel: threading.Event | None = None,
    ) -> None:
        self.argv_prefix = list(argv_prefix)
        self.outcome_dir = Path(outcome_dir) if outcome_dir else DEFAULT_OUTCOME_DIR
        self.env = {**os.environ, **(env or {})}
        self.preflight_timeout_s = preflight_timeout_s
        self.start_timeout_s = start_timeout_s
        self.check_timeout_s = check_timeout_s
        self.report_timeout_s = report_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.cancel = cancel or threading.Event()

    # ------------------------------------------------------------------ plumbing

    def call(self, args: list[str], timeout_s: float, *, honour_cancel: bool = True) -> Call:
        """Run ``argv_prefix + args`` with output to temporary files; kill its group on timeout."""
        argv = self.argv_prefix + args
        t0 = time.monotonic()
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=self.env, start_new_session=True
                )
            except OSError as e:
                return Call(argv, None, "", f"cannot run {argv[0]}: {e}", time.monotonic() - t0)
            deadline = t0 + max(timeout_s, 0.01)
            rc, timed_out, cancelled = _wait(proc, deadline, self.cancel if honour_cancel else None)
            out.seek(0)
            err.seek(0)
            stdout = out.read().decode("utf-8", "replace")
            stderr = err.read().decode("utf-8", "replace")
        return Call(argv, rc, stdout, stderr, time.monotonic() - t0, timed_out, cancelled)

    def job_file(self, provider: str, beads: str, suffix: str) -> Path:
        return self.outcome_dir / provider / f"{beads}{suffix}"

    # ------------------------------------------------------------------ commands

    def preflight(self, provider: str) -> PreflightResult:
        """``dx-runner preflight --provider P``: exit 0 pass (warnings allowed), else fail."""
        c = self.call(["preflight", "--provider", provider], self.preflight_timeout_s)
        text = c.stdout + "\n" + c.stderr
        failing = [redact(ln) or "" for ln in preflight_failures(text)]
        if c.timed_out:
            failing.append(f"preflight did not answer within {self.preflight_timeout_s:g} s")
        elif c.returncode not in (0,) and not failing:
            tail = [ln for ln in text.strip().splitlines() if ln.strip()][-3:]
            failing = [redact(ln) or "" for ln in tail] or [f"preflight exited {c.returncode}"]
        m = _REASON.search(text)
        reason = m.group(1) if m else ("NO_AUTH_SOURCE" if "NO_AUTH_SOURCE" in text else None)
        return PreflightResult(provider, c.ok, c.returncode, failing, reason, c.duration_s, c.timed_out)

    def start(self, beads: str, provider: str, prompt_file: Path, worktree: Path) -> StartResult:
        """``dx-runner start``; the call time is taken just before the process is spawned."""
        t_mono, t_wall = time.monotonic(), time.time()
        c = self.call(
            ["start", "--beads", beads, "--provider", provider, "--prompt-file", str(prompt_file), "--worktree", str(worktree)],
            self.start_timeout_s,
        )
        text = c.stdout + "\n" + c.stderr
        started = parse_started(c.stdout)
        m = _REASON.search(text)
        reason = m.group(1) if m else ("non_worktree_path" if "DENIED:non_worktree_path" in text else None)
        rc = None if c.timed_out else c.returncode
        return StartResult(
            returncode=rc,
            meaning="timeout" if c.timed_out else START_EXITS.get(c.returncode or 0, f"exit_{c.returncode}"),
            pid=as_int(started.get("pid")),
            log_path=started.get("log"),
            reason_code=reason,
            output=redact(text.strip()[-2000:]) or "",
            t_call_mono=t_mono,
            t_call_wall=t_wall,
            timed_out=c.timed_out,
        )

    def check(self, beads: str, timeout_s: float | None = None) -> CheckResult:
        """``dx-runner check --beads ID --json``; a hung check is cut at its timeout."""
        c = self.call(["check", "--beads", beads, "--json"], timeout_s or self.check_timeout_s)
        if c.timed_out:
            return CheckResult(None, None, None, None, None, error="timeout")
        if c.cancelled:
            return CheckResult(None, None, None, None, None, error="cancelled")
        obj = parse_check(c.stdout)
        if obj is None:
            return CheckResult(c.returncode, None, None, None, None, error="unparseable", text=redact(c.stdout[-500:]) or "")
        state = obj.get("state") or ("start_failed" if c.returncode == 1 else None)
        return CheckResult(
            c.returncode, state, obj.get("reason_code"), obj.get("selected_model"), obj.get("fallback_reason"), raw=obj
        )

    def report(self, beads: str) -> dict[str, Any] | None:
        """``dx-runner report --beads ID --format json`` → dict, None for an unknown id."""
        c = self.call(["report", "--beads", beads, "--format", "json"], self.report_timeout_s, honour_cancel=False)
        return parse_report(c.stdout) if c.returncode == 0 else None

    def stop(self, beads: str, provider: str) -> dict[str, Any]:
        """``dx-runner stop`` then kill the provider's process group from ``<ID>.pid``."""
        c = self.call(["stop", "--beads", beads], self.stop_timeout_s, honour_cancel=False)
        killed = self.kill_provider_group(provider, beads)
        return {"stop_returncode": c.returncode, "stop_timed_out": c.timed_out, "killed_pgid": killed}

    # ------------------------------------------------------------------ files

    def kill_provider_group(self, provider: str, beads: str) -> int | None:
        """SIGTERM then SIGKILL the process group named in ``<ID>.pid`` (None when none)."""
        pid = as_int(_read_text(self.job_file(provider, beads, ".pid")))
        if not pid or pid <= 1:
            return None
        try:
            pgid = os.getpgid(pid)
        except ProcessLookupError:
            return None
        if pgid in (os.getpgrp(), 0, 1):
            return None
        kill_group(pgid, grace_s=2.0)
        return pgid

    def read_outcome(self, provider: str, beads: str, attempts: int = 5, pause_s: float = 0.1) -> dict[str, str] | None:
        """The ``.outcome`` file, re-read until complete (it is written non-atomically)."""
        path = self.job_file(provider, beads, ".outcome")
        last: dict[str, str] | None = None
        for _ in range(attempts):
            text = _read_text(path)
            if text is None:
                return None
            kv = parse_kv(text)
            if {"exit_code", "state"} <= kv.keys() and text.endswith("\n"):
                return kv
            last = kv
            time.sleep(pause_s)
        return last

    def rc_mtime(self, provider: str, beads: str) -> float | None:
        """Wall-clock mtime of ``<ID>.rc`` (the provider's exit instant), None if absent."""
        try:
            return self.job_file(provider, beads, ".rc").stat().st_mtime_ns / 1e9
        except OSError:
            return None

    def log_tail(self, provider: str, beads: str, max_bytes: int = 4096, log_path: str | None = None) -> str:
        """The redacted tail of the job's provider log (the only place a failure's detail appears)."""
        path = Path(log_path) if log_path else self.job_file(provider, beads, ".log")
        try:
            with open(path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - max_bytes))
                data = fh.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return redact(data.strip()) or ""


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


CANCEL_CHECK_S = 0.25  # how often a waiting call looks at the cancel event


def _wait(proc: subprocess.Popen[bytes], deadline: float, cancel: threading.Event | None) -> tuple[int | None, bool, bool]:
    """Wait for ``proc`` until ``deadline`` without busy polling (a pidfd where the kernel has
    them); on timeout or cancel its process group is killed. Returns (rc, timed_out, cancelled)."""
    pidfd = _pidfd(proc.pid)
    try:
        while True:
            now = time.monotonic()
            if now >= deadline or (cancel is not None and cancel.is_set()):
                timed_out = now >= deadline
                stop_child(proc, term=False)
                return None, timed_out, not timed_out
            slice_s = min(deadline - now, CANCEL_CHECK_S)
            if pidfd is not None:
                select.select([pidfd], [], [], slice_s)
                rc = proc.poll()
            else:
                try:
                    rc = proc.wait(timeout=slice_s)
                except subprocess.TimeoutExpired:
                    rc = None
            if rc is not None:
                return rc, False, False
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)  # type: ignore[attr-defined,unused-ignore]
    except (AttributeError, OSError):
        return None

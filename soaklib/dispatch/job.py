"""One job through dx-runner: start (with backoff on the concurrency cap), poll, finalize,
classify; retries for transient failures. Every attempt becomes a row of ``jobs.parquet``.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from soaklib.dispatch.dx_runner import TERMINAL_STATES, CheckResult, DxRunner, as_int
from soaklib.dispatch.policy import (  # noqa: F401 - REASON_CODES re-exported: the job's vocabulary
    REASON_CODES,
    classify_failure,
    model_policy_violation,
    transient,
)
from soaklib.redact import redact
from soaklib.store import utc_now

MAX_UNPARSEABLE_CHECKS = 3
CAP_BACKOFF_S = (0.25, 0.5, 1.0, 2.0, 4.0)


@dataclass(frozen=True)
class JobSpec:
    """What to run: the seed's ``job_spec`` fields."""

    beads_id: str
    provider: str
    prompt_id: str
    prompt: str
    success_hint: str
    model: str
    worktree: str
    round_num: int
    job_index: int


@dataclass
class Attempt:
    """One attempt of a job: a row of ``jobs.parquet``."""

    attempt: int
    status: str = "pending"
    reason_code: str | None = None
    runner_reason_code: str | None = None
    success: bool = False
    completion: bool = False
    selected_model: str | None = None
    fallback_reason: str | None = None
    outcome_state: str | None = None
    exit_code: int | None = None
    latency_ms: float | None = None
    latency_source: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    detail: str = ""
    stdout: str = ""
    raw_outcome: dict[str, Any] = field(default_factory=dict)
    stop: dict[str, Any] | None = None
    cap_waits: int = 0  # exit-26 (concurrency cap) refusals of ``start`` before this attempt launched
    cap_wait_s: float = 0.0  # seconds waited on those refusals
    backoff_s: float = 0.0  # seconds waited before this attempt (retry backoff; 0 for attempt 0)
    first_start_at: datetime | None = None  # the attempt's first ``start`` call (``started_at``: the one that launched)
    t_first_mono: float | None = None  # monotonic time of the first ``start`` call
    t_start_mono: float | None = None  # monotonic time of the launching ``start`` call

    def as_dict(self) -> dict[str, Any]:
        """The attempt as a JSON row (``jobs[k].attempts[i]``); times UTC ISO, latency in ms."""
        return {
            "attempt": self.attempt,
            "success": self.success,
            "status": self.status,
            "reason_code": self.reason_code,
            "runner_reason_code": self.runner_reason_code,
            "selected_model": self.selected_model,
            "exit_code": self.exit_code,
            "latency_ms": _ms(self.latency_ms),
            "latency_source": self.latency_source,
            "first_start_at": _iso(self.first_start_at),
            "started_at": _iso(self.started_at),
            "completed_at": _iso(self.completed_at),
            "backoff_s": round(self.backoff_s, 3),
            "cap_backoffs": self.cap_waits,
            "cap_wait_s": round(self.cap_wait_s, 3),
            "detail": self.detail[-500:],
        }


def _ms(v: float | None) -> int | None:
    return None if v is None else int(round(v))


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


@dataclass
class JobOutcome:
    """A job after all its attempts; the last attempt decides."""

    spec: JobSpec
    attempts: list[Attempt]

    @property
    def final(self) -> Attempt:
        return self.attempts[-1]

    @property
    def job_latency_ms(self) -> float | None:
        """The whole job: its first ``start`` call to the final attempt's provider exit, with
        every failed attempt, retry backoff and concurrency-cap wait in between (monotonic
        offsets plus the final attempt's ``latency_ms``); None when the final one has none."""
        first, a = self.attempts[0], self.final
        if a.latency_ms is None or a.t_start_mono is None or first.t_first_mono is None:
            return None
        return (a.t_start_mono - first.t_first_mono) * 1000.0 + a.latency_ms

    @property
    def cap_backoffs(self) -> int:
        """Exit-26 refusals of ``start`` over all attempts."""
        return sum(a.cap_waits for a in self.attempts)

    def waits(self) -> dict[str, float]:
        """Seconds waited by the job: on the concurrency cap, between attempts, in all."""
        cap = sum(a.cap_wait_s for a in self.attempts)
        retry = sum(a.backoff_s for a in self.attempts)
        return {"cap_wait_s": round(cap, 3), "retry_wait_s": round(retry, 3), "wait_s": round(cap + retry, 3)}

    def to_seed_dict(self) -> dict[str, Any]:
        """The seed's JobResult fields, plus (added keys) ``runner_reason_code``, ``latency_source``,
        ``job_latency_ms``, ``attempts`` (one row per attempt), ``cap_backoffs`` and the waits.

        ``latency_ms`` keeps its meaning: the final attempt, from the ``start`` call that
        launched it to the provider's exit."""
        a = self.final
        return {
            "job_spec": asdict(self.spec),
            "success": a.success,
            "status": a.status,
            "reason_code": a.reason_code,
            "runner_reason_code": a.runner_reason_code,
            "selected_model": a.selected_model,
            "fallback_reason": a.fallback_reason,
            "latency_ms": _ms(a.latency_ms),
            "latency_source": a.latency_source,
            "completion": a.completion,
            "retries": len(self.attempts) - 1,
            "outcome_state": a.outcome_state,
            "exit_code": a.exit_code,
            "stdout": a.stdout,
            "stderr": a.detail,
            "started_at": _iso(a.started_at),
            "completed_at": _iso(a.completed_at),
            "raw_outcome": a.raw_outcome,
            "stop": a.stop,
            "job_latency_ms": _ms(self.job_latency_ms),
            "first_started_at": _iso(self.attempts[0].first_start_at or self.attempts[0].started_at),
            "attempts": [x.as_dict() for x in self.attempts],
            "cap_backoffs": self.cap_backoffs,
            **self.waits(),
        }


def is_transient(a: Attempt) -> bool:
    """Worth another attempt: not auth / permission / model policy, or a rate or capacity limit."""
    return not a.success and transient(a.reason_code, a.runner_reason_code)


class JobRunner:
    """Runs jobs through one ``DxRunner``; thread-safe (no shared mutable state)."""

    def __init__(
        self,
        runner: DxRunner,
        *,
        timeout_s: float,
        canonical_models: dict[str, str],
        no_op_is_success: bool = True,
        max_retries: int = 0,
        retry_backoff_s: float = 1.0,
        poll_min_s: float = 0.05,
        poll_max_s: float = 2.0,
        max_concurrent_starts: int = 8,
    ) -> None:
        self.runner = runner
        self.timeout_s = timeout_s
        self.canonical_models = canonical_models
        self.no_op_is_success = no_op_is_success
        self.max_retries = max_retries
        self.retry_backoff_s = retry_backoff_s
        self.poll_min_s = poll_min_s
        self.poll_max_s = poll_max_s
        self._start_slots = threading.BoundedSemaphore(max_concurrent_starts)

    def run(self, spec: JobSpec, prompt_file: Path, on_attempt: Callable[[Attempt], None] | None = None) -> JobOutcome:
        """All attempts of one job (1 + retries for transient failures)."""
        attempts: list[Attempt] = []
        for n in range(self.max_retries + 1):
            waited_s = 0.0
            if n:
                t0 = time.monotonic()
                self._sleep(self.retry_backoff_s * (2 ** (n - 1)))
                waited_s = time.monotonic() - t0
            a = self.attempt(spec, prompt_file, n)
            a.backoff_s = waited_s
            attempts.append(a)
            if on_attempt:
                on_attempt(a)
            if a.success or not is_transient(a) or a.status == "interrupted":
                break
        return JobOutcome(spec, attempts)

    def _sleep(self, seconds: float) -> None:
        self.runner.cancel.wait(seconds)

    def attempt(self, spec: JobSpec, prompt_file: Path, n: int) -> Attempt:
        a = Attempt(attempt=n, started_at=utc_now())
        if self.runner.cancel.is_set():
            a.status, a.reason_code, a.detail = "interrupted", "interrupted", "interrupted before start"
            a.completed_at = a.started_at
            return a
        try:
            start, deadline = self._start(spec, prompt_file, a)
            if start is None:
                return a
            self._follow(spec, a, start.t_call_mono, start.t_call_wall, start.log_path, deadline)
        except Exception as e:
            a.status, a.reason_code = "executor_exception", "executor_exception"
            a.detail = redact(f"{type(e).__name__}: {e}") or ""
            self._stop(spec, a)
        a.completed_at = a.completed_at or utc_now()
        return a

    def _start(self, spec: JobSpec, prompt_file: Path, a: Attempt) -> tuple[Any, float]:
        """``start`` (at most ``max_concurrent_starts`` at once: each reruns preflight), backing
        off on exit 26; the job's deadline runs from the first start call."""
        deadline = 0.0  # set at the first start call
        for wait_s in (*CAP_BACKOFF_S, *([CAP_BACKOFF_S[-1]] * 1000)):
            while not self._start_slots.acquire(timeout=0.25):
                if self.runner.cancel.is_set():
                    a.status, a.reason_code, a.detail = "interrupted", "interrupted", "interrupted before start"
                    a.completed_at = utc_now()
                    return None, 0.0
            try:
                deadline = deadline or time.monotonic() + self.timeout_s
                a.started_at = utc_now()
                s = self.runner.start(spec.beads_id, spec.provider, prompt_file, Path(spec.worktree))
            finally:
                self._start_slots.release()
            a.t_start_mono = s.t_call_mono
            if a.first_start_at is None:
                a.first_start_at, a.t_first_mono = a.started_at, s.t_call_mono
            if s.returncode == 26 and time.monotonic() + wait_s < deadline and not self.runner.cancel.is_set():
                a.cap_waits += 1
                t0 = time.monotonic()
                self._sleep(wait_s)
                a.cap_wait_s += time.monotonic() - t0
                continue
            break
        if s.returncode == 0:
            return s, deadline
        if s.returncode is None:  # start cut (timeout / Ctrl-C): the runner may have launched it
            self._stop(spec, a)
        a.status = "start_failed"
        a.runner_reason_code = s.reason_code or s.meaning
        a.detail = s.output
        a.completed_at = utc_now()
        if s.returncode == 22:
            a.reason_code = "permission_denied"
        elif s.returncode == 21:
            a.reason_code = classify_failure(None, s.reason_code, s.output)
            a.reason_code = a.reason_code if a.reason_code in ("auth_error", "model_unavailable") else "start_failed"
        elif self.runner.cancel.is_set():
            a.status, a.reason_code = "interrupted", "interrupted"
        else:
            a.reason_code = "start_failed"
        return None, deadline

    def _follow(
        self, spec: JobSpec, a: Attempt, t_mono: float, t_wall: float, log_path: str | None, deadline: float
    ) -> None:
        """Poll until a terminal state: ``check`` calls back off from fast to slow, while a cheap
        stat of ``<ID>.rc`` every ``poll_min_s`` triggers an immediate check when the provider exits."""
        interval, bad_checks = 4 * self.poll_min_s, 0
        c: CheckResult | None = None
        last: CheckResult | None = None
        terminal_mono: float | None = None
        rc_seen, stat_s = False, self.poll_min_s
        next_check = time.monotonic() + interval
        while True:
            now = time.monotonic()
            if self.runner.cancel.is_set():
                a.status, a.reason_code = "interrupted", "interrupted"
                a.detail = "interrupted before the job ended; job stopped"
                self._stop(spec, a)
                return
            if now >= deadline:
                break
            if not rc_seen and self.runner.rc_mtime(spec.provider, spec.beads_id) is not None:
                rc_seen, next_check = True, now
            if now >= next_check:
                c = self.runner.check(spec.beads_id, timeout_s=min(self.runner.check_timeout_s, deadline - now + 0.05))
                if c.error == "unparseable":
                    bad_checks += 1
                    if bad_checks >= MAX_UNPARSEABLE_CHECKS:
                        a.status, a.reason_code = "runner_error", "runner_error"
                        a.detail = f"dx-runner check answered no JSON {bad_checks} times: {c.text!r}"
                        self._stop(spec, a)
                        return
                elif c.state:
                    bad_checks, last = 0, c
                    if c.state in TERMINAL_STATES:
                        terminal_mono = time.monotonic()
                        break
                # after the provider exited, the runner finalizes on its next tick: poll steadily
                interval = 0.25 if rc_seen else min(interval * 1.5, self.poll_max_s)
                next_check = time.monotonic() + interval
            # the .rc mtime is the latency, so noticing it later costs nothing but finalize time
            stat_s = min(stat_s * 1.25, 0.5)
            self.runner.cancel.wait(max(0.0, min(stat_s, next_check - now, deadline - now)))
        if terminal_mono is None:
            a.status, a.reason_code = "wait_timeout", "wait_timeout"
            a.runner_reason_code = last.reason_code if last else ("check_timeout" if c and c.error == "timeout" else None)
            a.detail = f"no terminal state within {self.timeout_s:g} s (last state {last.state if last else None!r}); job stopped"
            self._stop(spec, a)
            self._latency(spec, a, t_mono, t_wall, None)
            return
        assert last is not None
        self._finalize(spec, a, last, t_mono, t_wall, terminal_mono, log_path)

    def _finalize(
        self, spec: JobSpec, a: Attempt, c: CheckResult, t_mono: float, t_wall: float, terminal_mono: float, log_path: str | None
    ) -> None:
        report = self.runner.report(spec.beads_id) or {}
        outcome = self.runner.read_outcome(spec.provider, spec.beads_id) or {}
        a.completion = True
        a.status = c.state or "unknown"
        a.selected_model = c.selected_model or report.get("selected_model") or outcome.get("selected_model") or None
        a.fallback_reason = c.fallback_reason or report.get("fallback_reason") or outcome.get("fallback_reason") or None
        a.outcome_state = report.get("outcome_state") or outcome.get("state")
        a.exit_code = as_int(report.get("exit_code")) if report.get("exit_code") not in (None, "-") else as_int(outcome.get("exit_code"))
        a.runner_reason_code = c.reason_code or report.get("reason_code") or outcome.get("reason_code")
        a.raw_outcome = {k: redact(v) for k, v in outcome.items()}
        tail = self.runner.log_tail(spec.provider, spec.beads_id, log_path=log_path)
        a.stdout = tail[-2000:]
        self._latency(spec, a, t_mono, t_wall, terminal_mono)
        if c.state in ("stalled", "no_op", "blocked"):  # may still be running: stop it
            self._stop(spec, a)
        ok_state = c.state == "exited_ok" or (c.state == "no_op_success" and self.no_op_is_success)
        if ok_state and a.exit_code in (0, None):
            violation = model_policy_violation(a.selected_model, a.fallback_reason, self.canonical_models[spec.provider])
            if violation:
                a.reason_code, a.detail = "model_policy_violation", violation
            else:
                a.success, a.exit_code = True, 0
            return
        details = report.get("details")
        detail = redact(details if isinstance(details, str) else (str(details) if details else "")) or tail
        a.detail = detail[-2000:]
        if c.state == "no_op_success":
            a.reason_code = "no_op"
        else:
            a.reason_code = classify_failure(c.state, a.runner_reason_code, detail)

    def _latency(self, spec: JobSpec, a: Attempt, t_mono: float, t_wall: float, terminal_mono: float | None) -> None:
        """Start call → provider exit: the ``.rc`` mtime when present, else first terminal observation."""
        rc_wall = self.runner.rc_mtime(spec.provider, spec.beads_id)
        if rc_wall is not None and rc_wall >= t_wall - 0.001:
            a.latency_ms, a.latency_source = (rc_wall - t_wall) * 1000.0, "rc_mtime"
            a.completed_at = datetime.fromtimestamp(rc_wall, timezone.utc)
        elif terminal_mono is not None:
            a.latency_ms, a.latency_source = (terminal_mono - t_mono) * 1000.0, "observed"
            a.completed_at = utc_now()

    def _stop(self, spec: JobSpec, a: Attempt) -> None:
        a.stop = self.runner.stop(spec.beads_id, spec.provider)
        # a launch in flight may write <ID>.pid just after stop: look once more
        time.sleep(0.2)
        late = self.runner.kill_provider_group(spec.provider, spec.beads_id)
        if late is not None and a.stop.get("killed_pgid") is None:
            a.stop["killed_pgid"] = late


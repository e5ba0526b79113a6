"""Soak B, sequential request handling: nothing lost, nothing run twice, everything routed right.

After the protocol check, the driver stages the ``requests:`` mix (default the plan's 5
selfplay, 3 learning_loop, 2 selfplay) with zero-padded names, so filename order is FIFO
order, and waits until the queue drains or ``drain_timeout_s`` passes. Optionally
(``batch_argv`` of the profile, e.g. ``--process-requests``) it runs the daemon's batch
mode again and again instead of waiting for its loop. Its checks (plan section 5):
archived N/N, pending 0, duplicates 0 (a request handled more than once, by file name),
misrouted 0 (request type → dispatch type, per profile), one decision entry per request as
the profile defines it, FIFO order, errors 0. A bad-JSON request in the queue is reported
as corrupt. The per-request table goes to ``{run_dir}/requests.parquet``.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import pandas as pd

from soaklib.errors import ParameterError
from soaklib.watcher.protocol import (
    Profile,
    QueueState,
    build_request,
    classify,
    dispatch_type_of,
    parse_decision_line,
    request_key,
    scan_queue,
    write_request,
)
from soaklib.watcher.operator_files import AfterSoak
from soaklib.watcher.check import ProtocolCheck, entry_source, is_probe_entry, timeout_for
from soaklib.observe.readers import IncrementalReader
from soaklib.store import utc_now, write_table

if TYPE_CHECKING:
    from soaklib.soak.harness import SoakContext

SOURCE = "soak_test_B"
PREFIX = "soak_B"
REQUESTS_TABLE = "requests.parquet"
#: The plan's mix (section 5): 5 selfplay (2, 3, 2, 1, 2 episodes), 3 learning loops, 2 selfplay.
PLAN_MIX: list[dict[str, Any]] = [
    {"request_type": "selfplay", "count": 5, "episodes": [2, 3, 2, 1, 2], "policy_conditioned": True},
    {"request_type": "learning_loop", "count": 3, "scope": "steps_3_5_6"},
    {"request_type": "selfplay", "count": 2, "episodes": [2, 3], "policy_conditioned": True},
]
BATCH_TIMEOUT_S = 300.0
_MIX_KEYS = ("request_type", "count", "episodes", "scope", "reason")


@dataclass
class RequestSpec:
    """One request of the mix, before it is written."""

    logical_type: str
    episodes: int | None = None
    scope: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None


def _cycle(key: str, value: Any, i: int, kind: type) -> Any:
    if value is None:
        return None
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, kind) and not isinstance(v, bool) for v in values):
        raise ParameterError(f"{key} = {value!r} is invalid: expected a {kind.__name__} or a list of them",
                             key=key, value=value)
    return values[i % len(values)]


def expand_mix(mix: Sequence[Mapping[str, Any]], profile: Profile) -> list[RequestSpec]:
    """The ``requests:`` mix as one spec per request (``episodes`` / ``scope`` lists cycle).

    Each item is ``{request_type, count, episodes | scope, reason, extra fields...}``; the
    request type is checked against the profile (logical or the daemon's own name).
    """
    specs: list[RequestSpec] = []
    for i, item in enumerate(mix):
        where = f"requests[{i}]"
        if not isinstance(item, Mapping) or not isinstance(item.get("request_type"), str):
            raise ParameterError(f"{where} = {item!r} is invalid: expected {{request_type, count, episodes | scope}}",
                                 key=where, value=item)
        profile.request_type(item["request_type"])  # ParameterError naming the allowed types
        count = item.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ParameterError(f"{where}.count = {count!r} is invalid: expected an integer >= 1",
                                 key=f"{where}.count", value=count)
        extra = {k: v for k, v in item.items() if k not in _MIX_KEYS}
        for j in range(count):
            specs.append(RequestSpec(
                logical_type=item["request_type"],
                episodes=_cycle(f"{where}.episodes", item.get("episodes"), j, int),
                scope=_cycle(f"{where}.scope", item.get("scope"), j, str),
                extra=dict(extra),
                reason=item.get("reason") if isinstance(item.get("reason"), str) else None,
            ))
    if not specs:
        raise ParameterError("requests is an empty mix: give at least one request (or [] for the plan's mix)",
                             key="requests")
    return specs


@dataclass
class Staged:
    """A staged request and what became of it."""

    seq: int
    name: str
    logical_type: str
    request_type: str
    episodes: int | None
    scope: str | None
    staged_t_s: float
    lines: list[tuple[int, str, str | None, float]] = field(default_factory=list)  # (index, type, status, t_s)
    archive: list[tuple[str | None, str]] = field(default_factory=list)
    archived_t_s: float | None = None
    pending: bool = True


class QueueLedger:
    """Staged requests matched with decision lines and archive entries (pure bookkeeping).

    Lines are matched by request file name (``details.request_path``, watcher-v2) or by
    sequence number with the soak's ``source`` (plan); probe lines and other sources are
    counted apart.
    """

    def __init__(self, profile: Profile, source: str = SOURCE) -> None:
        self.profile = profile
        self.source = source
        self.requests: list[Staged] = []
        self._by_key: dict[str, Staged] = {}
        self.line_index = 0
        self.bad_lines: list[str] = []
        self.probe_lines = 0
        self.other_lines = 0

    def add(self, staged: Staged) -> None:
        self.requests.append(staged)
        self._by_key[staged.name] = staged
        self._by_key[f"seq:{staged.seq}"] = staged

    def _match(self, entry: Mapping[str, Any]) -> Staged | None:
        key = request_key(entry)
        if key is None:
            return None
        if key in self._by_key:
            return self._by_key[key]
        if entry_source(entry) == self.source and key.isdigit():
            return self._by_key.get(f"seq:{int(key)}")
        return None

    def observe_line(self, text: str, t_s: float) -> None:
        """Account one decision-log line."""
        if not text.strip():
            return
        self.line_index += 1
        entry = parse_decision_line(text)
        if entry is None:
            self.bad_lines.append(text.strip()[:200])
            return
        if is_probe_entry(entry):
            self.probe_lines += 1
            return
        staged = self._match(entry)
        dtype = dispatch_type_of(entry)
        if staged is None or classify(entry, self.profile) != "dispatch" or dtype is None:
            self.other_lines += 1
            return
        status = entry.get("status")
        staged.lines.append((self.line_index, dtype, status.upper() if isinstance(status, str) else None, t_s))

    def observe_queue(self, state: QueueState, t_s: float) -> None:
        """Account a scan of the queue: pending names and archive entries by original name."""
        pending = set(state.pending)
        for r in self.requests:
            r.pending = r.name in pending
            archived = state.archived.get(r.name, [])
            if archived and r.archived_t_s is None:
                r.archived_t_s = t_s
            r.archive = list(archived)

    # ------------------------------------------------------------------ verdicts

    def expected(self, r: Staged) -> int:
        return self.profile.expected_entries(r.logical_type)

    def handled_times(self, r: Staged) -> int:
        """Times the request was handled: archive entries, or complete sets of decision lines."""
        return max(len(r.archive), len(r.lines) // max(1, self.expected(r)))

    def misrouted_types(self, r: Staged) -> list[str]:
        return sorted({t for _, t, s, _ in r.lines if s != "UNKNOWN_TYPE" and not self.profile.routes_ok(r.logical_type, t)})

    def status(self, r: Staged) -> str | None:
        statuses = [s for s, _ in r.archive if s]
        if statuses:
            return statuses[-1]
        line_statuses = [s for _, _, s, _ in r.lines if s]
        return line_statuses[-1] if line_statuses else None

    def fifo(self) -> tuple[bool, list[str]]:
        """Dispatch order (first line of each request) against filename order; the requests out of order."""
        dispatched = sorted((r.lines[0][0], r.seq, r.name) for r in self.requests if r.lines)
        late, top = [], None
        for _, seq, name in dispatched:
            if top is not None and seq < top[0]:
                late.append(f"{name} dispatched after {top[1]}")
            if top is None or seq > top[0]:
                top = (seq, name)
        return not late, late

    def table(self) -> pd.DataFrame:
        """One row per staged request (the notebook's per-request table)."""
        fifo_rank = {r.name: i + 1 for i, r in enumerate(sorted((r for r in self.requests if r.lines),
                                                                 key=lambda r: r.lines[0][0]))}
        rows = []
        for r in self.requests:
            rows.append({
                "seq": r.seq, "name": r.name, "logical_type": r.logical_type, "request_type": r.request_type,
                "episodes": r.episodes, "scope": r.scope, "staged_t_s": r.staged_t_s,
                "first_dispatch_t_s": r.lines[0][3] if r.lines else None, "archived_t_s": r.archived_t_s,
                "status": self.status(r), "archive_names": ", ".join(n for _, n in r.archive),
                "pending": r.pending, "decision_lines": len(r.lines), "expected_lines": self.expected(r),
                "dispatch_types": ", ".join(t for _, t, _, _ in r.lines), "handled_times": self.handled_times(r),
                "misrouted": bool(self.misrouted_types(r)), "dispatch_rank": fifo_rank.get(r.name),
            })
        return pd.DataFrame(rows)

    def observations(self) -> dict[str, Any]:
        """The soak-B metrics by id, with the names behind every non-zero count in ``details``."""
        reqs = self.requests
        archived = [r for r in reqs if r.archive]
        pending = [r for r in reqs if r.pending]
        dups = [r for r in reqs if self.handled_times(r) > 1]
        misrouted = [r for r in reqs if self.misrouted_types(r)]
        entries = [r for r in reqs if len(r.lines) >= self.expected(r)]
        failed = [r for r in reqs if self.status(r) in ("FAILED", "UNKNOWN_TYPE", "INVALID")]
        fifo_ok, late = self.fifo()
        statuses: dict[str, int] = {}
        for r in reqs:
            key = self.status(r) or ("PENDING" if r.pending else "UNKNOWN")
            statuses[key] = statuses.get(key, 0) + 1
        details = {
            "archived": [f"{r.name} not archived" for r in reqs if not r.archive],
            "pending": [f"{r.name} still pending" for r in pending],
            "duplicates": [f"{r.name} handled {self.handled_times(r)} times" for r in dups],
            "misrouted": [f"{r.name} ({r.logical_type} → {', '.join(self.misrouted_types(r))})" for r in misrouted],
            "decision_entries": [f"{r.name}: {len(r.lines)} of {self.expected(r)} line(s)"
                                 for r in reqs if len(r.lines) < self.expected(r)],
            "failed_requests": [f"{r.name} {self.status(r)}" for r in failed],
            "fifo": late,
        }
        return {
            "staged": len(reqs),
            "archived": len(archived),
            "pending": len(pending),
            "duplicates": len(dups),
            "misrouted": len(misrouted),
            "decision_entries": len(entries),
            "failed_requests": len(failed),
            "fifo_ok": fifo_ok,
            "decision_bad_lines": len(self.bad_lines),
            "statuses": statuses,
            "details": {k: v for k, v in details.items() if v},
        }


class QueueSoak:
    """The soak-B driver (``soak watcher b``); see the module docstring.

    ``batch_argv`` (default: the profile's) switches to batch mode: each pass runs the
    target's command without ``--daemon`` plus these arguments, until the queue drains.
    """

    soak = "b"

    def __init__(self, *, batch_argv: Sequence[str] | None = None, check_protocol: bool = True) -> None:
        self.batch_argv = list(batch_argv) if batch_argv is not None else None
        self.check_protocol = check_protocol
        self.ledger: QueueLedger | None = None
        self.protocol: dict[str, Any] | None = None
        self.corrupt: dict[str, float] = {}
        self.drained_at: float | None = None
        self.staged_at: float | None = None
        self.timed_out = False
        self.stopped = False
        self.batch: dict[str, Any] = {"passes": 0, "returncodes": [], "timeouts": 0}
        self._proc: subprocess.Popen | None = None
        self._proc_deadline = 0.0
        self._after: AfterSoak | None = None
        self._reader: IncrementalReader | None = None
        self._ticks_drained = 0

    # ------------------------------------------------------------------ setup

    def setup(self, ctx: SoakContext) -> None:
        profile: Profile = ctx.profile
        specs = expand_mix(ctx.params.requests or PLAN_MIX, profile)
        if self.batch_argv is None and profile.batch_argv is not None:
            self.batch_argv = list(profile.batch_argv)
        self._after = AfterSoak(ctx.target)
        self._after.add("stop batch pass", self._kill_batch)
        log = profile.path(ctx.project_dir, "decision_log")
        assert log is not None
        self._reader = IncrementalReader(log, from_end=True)  # before the probe: nothing old counts
        self.ledger = QueueLedger(profile)
        if self.check_protocol:
            check = ProtocolCheck(ctx.project_dir, profile, timeout_s=timeout_for(ctx.reference, ctx.params.sim))
            ctx.echo("soak b: protocol check (one probe request)")
            result = check.run(stop_event=ctx.stop_event, alive=ctx.target.is_running,
                               kick=(lambda: self._kick(ctx, force=True)) if self.batch_argv else None)
            if result is None:
                self.stopped = True
                return
            self.protocol = result.to_dict()
            ctx.event("protocol_check", **self.protocol, message=f"protocol check passed: {check.name} → "
                      f"{result.status} in {result.elapsed_s:.1f} s")
        self._stage(ctx, specs)

    def _stage(self, ctx: SoakContext, specs: list[RequestSpec]) -> None:
        assert self.ledger is not None
        width = max(2, len(str(len(specs))))
        base = utc_now().replace(microsecond=0)
        names = []
        for i, spec in enumerate(specs, start=1):
            name, body = build_request(
                ctx.profile, spec.logical_type, i, source=SOURCE, episodes=spec.episodes, scope=spec.scope,
                extra=spec.extra, stamp=base + timedelta(seconds=i), prefix=PREFIX, width=width,
                reason=spec.reason or f"Soak B — request {i:0{width}d} ({spec.logical_type})",
            )
            write_request(ctx.project_dir, ctx.profile, name, body)
            self.ledger.add(Staged(i, name, spec.logical_type, body["request_type"], spec.episodes, spec.scope,
                                   ctx.elapsed_s()))
            names.append(name)
        self.staged_at = time.monotonic()
        ctx.event("requests_staged", count=len(names), names=names,
                  message=f"{len(names)} requests staged ({names[0]} … {names[-1]})")
        ctx.echo(f"soak b: {len(names)} requests staged")

    # ------------------------------------------------------------------ each tick

    def _poll(self, ctx: SoakContext) -> QueueState:
        assert self.ledger is not None and self._reader is not None
        t_s = ctx.elapsed_s()
        for line in self._reader.read_lines():
            self.ledger.observe_line(line, t_s)
        state = scan_queue(ctx.project_dir, ctx.profile, check_bodies=True)
        self.ledger.observe_queue(state, t_s)
        for name in state.corrupt:
            if name not in self.corrupt:
                self.corrupt[name] = t_s
                ctx.event("corrupt_request", name=name, message=f"pending request {name} is not a JSON object")
        for original, entries in state.archived.items():
            if any(s == "INVALID" for s, _ in entries) and original not in self.corrupt and \
                    original not in {r.name for r in self.ledger.requests}:
                self.corrupt[original] = t_s
                ctx.event("corrupt_request", name=original, message=f"the daemon archived {original} as INVALID")
        return state

    def tick(self, ctx: SoakContext, row: dict[str, Any]) -> bool:
        if self.stopped or self.ledger is None:
            return True
        self._poll(ctx)
        reqs = self.ledger.requests
        drained = all(r.archive and not r.pending for r in reqs)
        now = time.monotonic()
        if drained:
            if self.drained_at is None:
                self.drained_at = now
                ctx.event("queue_drained", seconds=now - (self.staged_at or now),
                          message=f"queue drained: {len(reqs)} of {len(reqs)} archived")
            self._ticks_drained += 1
            return self._ticks_drained >= 2 and (self._proc is None or self._proc.poll() is not None)
        if self.batch_argv:
            self._kick(ctx)
        if self.staged_at is not None and now - self.staged_at >= ctx.params.drain_timeout_s:
            self.timed_out = True
            left = [r.name for r in reqs if r.pending or not r.archive]
            ctx.event("drain_timeout", left=left, message=f"queue not drained after {ctx.params.drain_timeout_s:g} s: "
                      f"{len(left)} request(s) left")
            return True
        return False

    # ------------------------------------------------------------------ batch mode

    def batch_command(self, ctx: SoakContext) -> list[str]:
        """The target's argv without ``--daemon``, plus the batch arguments."""
        return [a for a in ctx.target.argv if a != "--daemon"] + list(self.batch_argv or [])

    def _kick(self, ctx: SoakContext, *, force: bool = False) -> None:
        """Start one batch pass when none runs (and work is pending); reap a finished one."""
        if self._proc is not None:
            rc = self._proc.poll()
            if rc is None and time.monotonic() < self._proc_deadline:
                return
            if rc is None:
                self.batch["timeouts"] += 1
                self._kill_batch()
                rc = self._proc.returncode
            self.batch["returncodes"].append(rc)
            self._proc = None
        if not force and not any(r.pending for r in (self.ledger.requests if self.ledger else [])):
            return
        out = open(Path(ctx.run_dir) / "batch.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            self._proc = subprocess.Popen(self.batch_command(ctx), cwd=ctx.project_dir, stdin=subprocess.DEVNULL,
                                          stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                          env={**os.environ, **ctx.params.target.env})
        finally:
            out.close()
        self._proc_deadline = time.monotonic() + min(BATCH_TIMEOUT_S, ctx.params.drain_timeout_s)
        self.batch["passes"] += 1
        ctx.event("batch_pass", n=self.batch["passes"], pid=self._proc.pid, message="batch pass started")

    def _kill_batch(self) -> None:
        p = self._proc
        if p is None or p.poll() is not None:
            return
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=5)

    # ------------------------------------------------------------------ the end

    def finish(self, ctx: SoakContext) -> dict[str, Any]:
        if self.ledger is not None and self._reader is not None and self.drained_at is None:
            self._poll(ctx)  # a last look: lines and archive entries since the last tick
        if self._proc is not None:
            if self._proc.poll() is None:
                try:
                    self._proc.wait(timeout=max(0.0, self._proc_deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self.batch["timeouts"] += 1
            self._kill_batch()
            self.batch["returncodes"].append(self._proc.returncode)
            self._proc = None
        self.close(ctx)
        out: dict[str, Any] = {"protocol_check": self.protocol, "corrupt_requests": sorted(self.corrupt),
                               "drain_timeout": self.timed_out, "batch": self.batch if self.batch_argv else None}
        if self.ledger is None or self.stopped:
            out["notes"] = ["the soak stopped before the requests were staged"]
            return out
        out.update(self.ledger.observations())
        out["drain_s"] = (self.drained_at - self.staged_at) if self.drained_at and self.staged_at else None
        out["probe_lines"] = self.ledger.probe_lines
        table = self.ledger.table()
        write_table(Path(ctx.run_dir) / REQUESTS_TABLE, table)
        out["requests"] = table.to_dict("records")
        return out

    def close(self, ctx: SoakContext | None = None) -> None:
        """Stop a batch pass still running (idempotent; also runs when the soak ends otherwise)."""
        if self._after is not None:
            self._after.run()

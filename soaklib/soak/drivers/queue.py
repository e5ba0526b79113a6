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
import subprocess
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from soaklib.proc.group import stop_child
from soaklib.soak.drivers.ledger import (
    PLAN_MIX,
    PREFIX,
    REQUESTS_TABLE,
    SOURCE,
    QueueLedger,
    RequestSpec,
    Staged,
    expand_mix,
)
from soaklib.store import utc_now, write_table
from soaklib.watcher.check import ProtocolCheck, timeout_for
from soaklib.watcher.decisions import DecisionStream
from soaklib.watcher.operator_files import AfterSoak
from soaklib.watcher.protocol import Profile, QueueState, build_request, scan_queue, write_request

if TYPE_CHECKING:
    from soaklib.soak.context import SoakContext

BATCH_TIMEOUT_S = 300.0


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
        self._proc: subprocess.Popen[bytes] | None = None
        self._proc_deadline = 0.0
        self._after: AfterSoak | None = None
        self._stream: DecisionStream | None = None
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
        self._stream = DecisionStream(log, profile, from_end=True)  # before the probe: nothing old counts
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
        assert self.ledger is not None and self._stream is not None
        t_s = ctx.elapsed_s()
        for d in self._stream.poll():
            self.ledger.observe(d, t_s)
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
        stop_child(p, grace_s=5.0)

    # ------------------------------------------------------------------ the end

    def finish(self, ctx: SoakContext) -> dict[str, Any]:
        if self.ledger is not None and self._stream is not None and self.drained_at is None:
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

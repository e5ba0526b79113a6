"""Soak C on the real system (``soak watcher csys``): the Chapter 13 orchestrator detects the
draws, the WATCHER daemon executes the approvals.

Before the processes start (the orchestrator reads its policies once, at start) the driver
backs up the operator's files (``lottery_history.json``, ``watcher_policies.json``,
``new_draw.flag``, ``pending_approval.json``), bootstraps a synthetic history when there is
none, and sets test mode, synthetic injection and the ``policies`` keys (e.g.
``auto_approve_in_test_mode``, ``approval_route``). Everything is restored byte for byte
after the processes stopped, however the soak ends (unless ``keep_changes``).

The first minute is a protocol check: the first injected draw must show up as a line of
``chapter13_cycle_history.jsonl`` (else the soak stops naming what to change), and with a
process named ``watcher`` a cycle's ``pending_approval.json`` must be picked up by it. Then a
draw is injected every ``injection.interval_s``; cycles are counted from the lines appended
to the history (by outcome and trigger type), draws are accounted ingested / merged / pending
/ lost (:func:`soaklib.watcher.orchestrator.account_draws`), approvals from the archive. At
the end every process is halted in reverse start order, each timed (``halts``).
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from soaklib.errors import ProtocolError
from soaklib.params import SoakParams
from soaklib.proc.targets import TargetGroup
from soaklib.store import atomic_write_text, write_table
from soaklib.watcher import draws as injector
from soaklib.watcher.draws import bootstrap_history, inject_draws
from soaklib.watcher.operator_files import POLICIES_FILE, AfterSoak, OperatorFiles, enable_test_mode, history_values
from soaklib.watcher.orchestrator import (
    APPROVAL_OUTCOMES,
    CycleHistory,
    Injection,
    OrchestratorFiles,
    account_draws,
    archived_approval_names,
    scan_approvals,
)

if TYPE_CHECKING:
    from soaklib.soak.context import SoakContext
    from soaklib.soak.plan import RunPlan

BACKUP_DIR = "operator_backup"
LOOP_TABLE = "loop.parquet"
REAL_POLL_S = 30.0  # the orchestrator's default poll interval
MIN_CHECK_S = 10.0


def merge_keys(data: dict[str, Any], keys: dict[str, Any]) -> dict[str, Any]:
    """``keys`` merged into ``data`` (mappings merge, other values replace)."""
    for k, v in keys.items():
        if isinstance(v, dict) and isinstance(data.get(k), dict):
            merge_keys(data[k], v)
        else:
            data[k] = v
    return data


def orchestrator_poll_s(params: SoakParams, policies: dict[str, Any]) -> float:
    """The orchestrator's poll interval: its ``--poll-interval`` (command or knob), else the policies'."""
    for p in params.targets:
        if p.name != "orchestrator":
            continue
        argv = list(p.command or [])
        for flag in ("--poll-interval", "poll_interval"):
            if flag in argv[:-1]:
                return float(argv[argv.index(flag) + 1])
        if "poll_interval" in p.sim:
            return float(p.sim["poll_interval"])
    settings = policies.get("daemon_settings")
    return float((settings if isinstance(settings, dict) else {}).get("poll_interval_seconds", REAL_POLL_S))


class SystemLoopSoak:
    """The driver of soak C on the real system (see the module docstring)."""

    soak = "csys"

    def __init__(self) -> None:
        self.files: OperatorFiles | None = None
        self.orch = OrchestratorFiles()
        self.history: CycleHistory | None = None
        self.injections: list[Injection] = []
        self.injection_errors: list[str] = []
        self.rows: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.protocol: dict[str, Any] | None = None
        self.start_length = 0
        self.poll_s = REAL_POLL_S
        self.layout = "v1"
        self._after = AfterSoak(None)
        self._archived_before: frozenset[str] = frozenset()
        self._t_inject0 = 0.0
        self._slots = 0
        self._last_write = 0.0
        self._project: Path | None = None
        self._check_t0 = 0.0

    # ------------------------------------------------------------------ before the processes start

    def before_start(self, params: SoakParams, plan: RunPlan, echo: Callable[[str], None]) -> None:
        inj, profile = params.injection, plan.profile
        project = self._project = plan.project_dir
        names = [profile.history_file, injector.HISTORY_FILE, POLICIES_FILE, profile.new_draw_flag,
                 injector.FLAG_FILE, self.orch.approval_file]
        self.files = OperatorFiles(project, plan.run_dir / BACKUP_DIR, names, fresh=params.project_dir is None,
                                   keep_changes=params.keep_changes)
        self.files.backup()
        self._after.add("restore operator files", self._restore)
        self.layout = "v2" if any(p.name == "watcher" for p in params.targets) else "v1"
        with self.files.lock:
            if not self.files.path(profile.history_file).exists():
                bootstrap_history(project, inj.bootstrap_draws, seed=inj.seed, mod=inj.mod, prng=inj.prng)
                echo(f"soak {params.soak}: bootstrapped a synthetic history of {inj.bootstrap_draws} draws")
            enable_test_mode(self.files.path(POLICIES_FILE), inj.interval_s, inj.seed)
            path = self.files.path(POLICIES_FILE)
            data = json.loads(path.read_text(encoding="utf-8"))
            merge_keys(data, json.loads(json.dumps(params.policies)))
            atomic_write_text(path, json.dumps(data, indent=2) + "\n")
            for stale in (injector.FLAG_FILE, self.orch.approval_file):  # backed up: the soak starts clean
                self.files.path(stale).unlink(missing_ok=True)
        self.policies = data
        self.poll_s = orchestrator_poll_s(params, data)
        self.start_length = len(history_values(self.files.path(profile.history_file)) or [])
        self.history = CycleHistory(self.orch.path(project, "cycle_history"), from_end=True)
        self._archived_before = archived_approval_names(project, self.orch)

    # ------------------------------------------------------------------ setup: the protocol check

    def setup(self, ctx: SoakContext) -> None:
        if self.files is None:  # run without before_start (a harness that has no hook)
            raise ProtocolError("soak csys needs the harness's before_start hook", what="setup")
        ctx.event("test_mode_enabled", policies=ctx.params.policies, poll_s=self.poll_s, layout=self.layout,
                  message=f"{POLICIES_FILE}: test_mode, synthetic injection and {sorted(ctx.params.policies)} set")
        limit = max(MIN_CHECK_S, 3.0 * self.poll_s + 5.0)
        t0 = self._check_t0 = time.monotonic()
        ctx.echo(f"soak {ctx.params.soak}: protocol check (one injected draw, up to {limit:.0f} s)")
        self._inject_now(ctx, 1)
        assert self.history is not None
        while not self.history.cycles:
            self._check_wait(ctx, t0, limit, "no_cycle", (
                f"the orchestrator wrote no line to {self.orch.cycle_history} within {limit:.0f} s of a draw "
                f"injection: check that it runs with its working folder = project_dir ({self._project}), that "
                f"no halt file pauses it ({self.orch.halt_file}, /tmp/agent_halt), that it watches "
                f"{injector.FLAG_FILE}, and that its poll interval ({self.poll_s:g} s) is what the soak assumes"))
            self.history.poll()
        first = self.history.cycles[0]
        result: dict[str, Any] = {"cycle_id": first.cycle_id, "outcome": first.outcome,
                                  "cycle_s": time.monotonic() - t0}
        if self.layout == "v2" and first.outcome in APPROVAL_OUTCOMES:
            t0 = time.monotonic()  # the daemon gets the same bound from the first cycle on
            while True:
                st = scan_approvals(ctx.project_dir, self.orch, exclude=self._archived_before)
                if st.pending_status not in ("pending",) or st.archived_count:
                    break
                self._check_wait(ctx, t0, limit, "approval_unread", (
                    f"the WATCHER daemon did not read {self.orch.approval_file} within {limit:.0f} s "
                    "(its status stayed 'pending'): start the daemon from project_dir with its approval polling "
                    "(WATCHER v2.0 _poll_pending_approval), and set test_mode and auto_approve_in_test_mode in "
                    f"{POLICIES_FILE} (policies) so that it executes and archives approvals"))
            result["approval"] = "read by the daemon"
        result["elapsed_s"] = time.monotonic() - self._check_t0
        self.protocol = result
        ctx.event("protocol_check", **result, message=f"protocol check passed: {first.cycle_id} → {first.outcome} "
                  f"in {result['elapsed_s']:.1f} s")
        self._t_inject0 = time.monotonic()
        self._slots = 1

    def _check_wait(self, ctx: SoakContext, t0: float, limit: float, what: str, message: str) -> None:
        if time.monotonic() - t0 > limit:
            raise ProtocolError(message, what=what, elapsed_s=time.monotonic() - t0)
        if not ctx.target.is_running():
            who = getattr(ctx.target, "exited_name", None) or "the target"
            raise ProtocolError(f"{who} exited during the protocol check: read target-{who}.log in the run folder",
                                what="exited", elapsed_s=time.monotonic() - t0)
        if ctx.stop_event.wait(0.05):
            raise KeyboardInterrupt

    # ------------------------------------------------------------------ each tick

    def _inject_now(self, ctx: SoakContext, count: int) -> None:
        inj = ctx.params.injection
        assert self.files is not None
        with self.files.lock:
            if self.files.restored:
                return
            try:
                new = inject_draws(ctx.project_dir, count, seed=inj.seed, mod=inj.mod, prng=inj.prng)
            except Exception as e:
                self.injection_errors.append(f"{type(e).__name__}: {e}")
                ctx.event("injection_failed", message=f"draw injection failed: {e}")
                return
        length = self.start_length + len(self.injections) + len(new)
        self.injections.append(Injection(length, datetime.now(timezone.utc)))
        ctx.event("draw_injected", count=len(new), history_length=length, value=new[-1]["value"],
                  total=len(self.injections), message=f"draw {new[-1]['value']} injected (history {length})")

    def tick(self, ctx: SoakContext, row: dict[str, Any]) -> bool:
        if self.history is None:
            return True
        due = int((time.monotonic() - self._t_inject0) // ctx.params.injection.interval_s) + 1
        if due > self._slots:
            self._slots = due
            self._inject_now(ctx, 1)
        self.history.poll()
        st = scan_approvals(ctx.project_dir, self.orch, exclude=self._archived_before)
        outcomes = self.history.outcomes()
        self.rows.append({"t_s": ctx.elapsed_s(), "cycles": len(self.history.cycles),
                          "draws_injected": len(self.injections), "approvals_archived": st.archived_count,
                          "approval_pending": st.pending_status == "pending",
                          **{f"outcome_{k}": v for k, v in outcomes.items()}})
        if time.monotonic() - self._last_write >= ctx.params.sampling.flush_s:
            self._write_loop(ctx)
        return False

    def _write_loop(self, ctx: SoakContext) -> None:
        frame = pd.DataFrame(self.rows)
        if not frame.empty:
            write_table(Path(ctx.run_dir) / LOOP_TABLE, frame.fillna(0))
        self._last_write = time.monotonic()

    # ------------------------------------------------------------------ the end

    def _restore(self) -> None:
        if self.files is not None:
            self.files.restore()

    def finish(self, ctx: SoakContext) -> dict[str, Any]:
        out: dict[str, Any] = {"protocol_check": self.protocol, "notes": self.notes, "layout": self.layout,
                               "poll_s": self.poll_s}
        if self.history is None or self.protocol is None:
            self.close(ctx)
            return out | {"notes": self.notes + ["the soak stopped before the loop started"]}
        end = datetime.now(timezone.utc)
        self.history.poll()
        st = scan_approvals(ctx.project_dir, self.orch, exclude=self._archived_before)
        self._write_loop(ctx)
        halts: list[dict[str, Any]] = []
        target = ctx.target
        if isinstance(target, TargetGroup):
            ctx.echo(f"soak {ctx.params.soak}: halting {', '.join(reversed(target.names))} (reverse start order)")
            for h in target.halt_all(ctx.project_dir, max_timeout_s=ctx.params.target.halt.timeout_s):
                halts.append(h.to_dict())
                ctx.event("process_halted", **h.to_dict(), message=f"{h.name} halted: {h.result.halt_s} s "
                          f"({h.result.method}{', forced' if h.result.forced else ''})")
        self.history.poll()  # a cycle that ended while the processes stopped
        self.close(ctx)
        out.update(self._observe(ctx, end, st))
        out["halts"] = halts
        out["operator_files"] = (self.files.report if self.files is not None else None) or {}
        return out

    def _observe(self, ctx: SoakContext, end: datetime, st: Any) -> dict[str, Any]:
        assert self.history is not None
        cycles = self.history.cycles
        grace = self.poll_s + 2.0 * ctx.params.sampling.interval_s + 1.0
        acc = account_draws(self.injections, cycles, start_length=self.start_length, end=end, grace_s=grace)
        outcomes = self.history.outcomes()
        requested = sum(outcomes.get(o, 0) for o in APPROVAL_OUTCOMES)
        completed = st.archived_with("completed_by_watcher")
        auto = outcomes.get("auto_executed_test_mode", 0)
        injected = len(self.injections)
        seen = acc.count("ingested") + acc.count("merged")
        stuck = None
        if self.layout == "v2":
            stuck = int(st.pending_status in ("pending", "processing_by_watcher") and (st.pending_age_s or 0) > grace)
        errors = [c.error for c in cycles if c.outcome == "error" and c.error]
        return {
            "cycles": len(cycles), "outcomes": outcomes, "trigger_types": self.history.trigger_types(),
            "draws_injected": injected, "draws_ingested": seen, "draws_merged": acc.count("merged"),
            "draws_pending": acc.count("pending"), "draws_lost": acc.count("lost"),
            "draws_ingested_delta": abs(injected - seen), "draw_status": acc.status,
            "cycles_without_new_draws": acc.cycles_without_new_draws,
            "cycle_errors": outcomes.get("error", 0), "cycle_error_texts": errors[:5],
            "escalations": outcomes.get("escalated", 0), "auto_executed": auto,
            "approvals_requested": requested, "approvals_archived": st.archived_count,
            "approvals_completed": completed, "approvals_failed": st.archived_with("failed_by_watcher"),
            "dispatches": auto + completed,
            "double_executions": len(st.double_executions) if self.layout == "v2" else None,
            "approvals_stuck": stuck,
            "heuristic_fallbacks": sum(c.heuristic for c in cycles),
            "history_bad_lines": self.history.bad_lines, "injection_errors": self.injection_errors,
            "start_history_draws": self.start_length,
        }

    def close(self, ctx: SoakContext | None = None) -> None:
        """Restore the operator's files now (idempotent; also runs when the soak ends otherwise);
        the loop table gets its last rows (a partial run is judged from it)."""
        self._after.run()
        if ctx is not None and self.rows:
            self._write_loop(ctx)

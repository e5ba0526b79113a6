"""The soak type ``csys``: soak C on the real system (orchestrator + WATCHER daemon), its
criteria, observed values and signoff line.

It is a soak type of its own rather than soak ``c`` with a parameter because what it judges
differs: cycles come from the orchestrator's cycle history (not the daemon's decision log),
draws are accounted with merged flags, escalations are the operators' v1 gate, and every
process has its own resource rows. Soak ``c`` (one daemon that watches the flag and
dispatches) keeps its rows and its place in the combined signoff; ``csys`` stands beside it.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from soaklib.analysis import Criterion
from soaklib.analysis.criteria import DEFAULT_CRITERIA
from soaklib.analysis.units import format_value as v
from soaklib.runs import Run
from soaklib.soak.drivers.system_loop import SystemLoopSoak
from soaklib.soak.registry import SoakType
from soaklib.soak.system import observe_processes, process_criteria

HOUR = 3600.0
DEFAULT_NAMES = ("orchestrator", "watcher")
_C = {c.metric: c for c in DEFAULT_CRITERIA["c"]}
_HISTORY = "chapter13_cycle_history.jsonl"


def base_criteria() -> list[Criterion]:
    """The rows of the system soak that do not depend on the process names."""
    from soaklib.soak.observers import TARGET_ALIVE

    return [
        Criterion("cycles", "Completed cycles: ≥ 5 over 2 hours (lines appended to the cycle history)", "cycles",
                  5, 1, "min", per_hours=2.0, count=True, triage=f"Cycles stalled: read the last lines of {_HISTORY}, "
                  "check new_draw.flag is written by the injector and that no halt file (.chapter13_halt, "
                  "/tmp/agent_halt) pauses the orchestrator (its log says 'Safety check failed, waiting...')."),
        Criterion("draws_ingested_delta", "Draws ingested (merged flags included) match injections (± 2)", "draws",
                  2, 2, "max", triage="Compare the draw account (observations: draw_status) with the cycles' "
                  "draw_id: a draw no cycle read was lost; replayed or missing draws point at the history writes."),
        Criterion("draws_lost", "Draws lost: 0 (a draw in the history that no cycle ever read)", "draws", 0, 0,
                  "eq", triage="An injected flag triggered no cycle: the orchestrator was paused (halt file), "
                  "stopped polling, or deleted the flag without a cycle."),
        Criterion("cycles_without_new_draws", "Flag consumption: every cycle reads a new draw (0 idle cycles)",
                  "cycles", 0, 0, "eq", triage="Cycles ran without a new draw: the orchestrator does not delete "
                  "new_draw.flag after its cycle (_clear_new_draw_flag), or something else rewrites the flag."),
        Criterion("cycle_errors", "Cycle errors: 0 cycles with outcome error", "cycles", 0, 0, "eq",
                  triage=f"A cycle raised: its 'error' field in {_HISTORY} (observations: cycle_error_texts) and "
                  "the traceback in target-orchestrator.log name the step."),
        Criterion("escalations", "Escalations: 0 (the operators' v1 gate)", "cycles", 0, 0, "eq",
                  triage="Proposals were escalated to a human: read steps.validation of the escalated cycles; "
                  "skip_escalation_in_test_mode in watcher_policies.json is the operators' test-mode switch."),
        Criterion("dispatches", "Dispatches: ≥ 1 auto-execution or approval executed by the daemon", "dispatches",
                  1, 1, "min", triage="Nothing was executed: with approval_route watcher the daemon must archive "
                  "approvals completed_by_watcher (test_mode and auto_approve_in_test_mode); with --no-llm every "
                  "triggered cycle only asks for approval."),
        Criterion("double_executions", "Double executions: 0 approvals archived twice", "approvals", 0, 0, "eq",
                  optional=True, triage="An approval was executed twice: the daemon must mark it "
                  "processing_by_watcher before running the steps."),
        Criterion("approvals_stuck", "Approvals: none left pending at the end", "approvals", 0, 0, "eq",
                  optional=True, triage="pending_approval.json stayed pending: the daemon does not poll it, or "
                  "test mode / auto-approval is off in watcher_policies.json."),
        Criterion("pending", "Request queue: no request left in watcher_requests/ at the end", "requests", 0, 0,
                  "eq", optional=True, triage="Requests stayed in watcher_requests/: the daemon stopped processing "
                  "its queue; read the last lines of target-watcher.log."),
        Criterion("heuristic_fallbacks", "Heuristic fallbacks: 0 (fail: > 2, LLM connection issues)", "count",
                  0, 2, "max", triage=_C["heuristic_fallbacks"].triage),
        Criterion("errors", "Errors: 0 tracebacks in the processes' logs", "count", 0, 0, "eq",
                  triage="Read the first traceback in target-<name>.log in the run folder."),
        TARGET_ALIVE,
    ]


def system_criteria() -> list[Criterion]:
    """The soak type's criteria: the base rows and optional rows for the default process names."""
    return base_criteria() + process_criteria(list(DEFAULT_NAMES), optional=True)


def run_system_criteria(names: list[str]) -> list[Criterion]:
    """The criteria of a run of these processes (their rows are required)."""
    return base_criteria() + process_criteria(names)


def target_names(run: Run) -> list[str]:
    targets = (run.manifest.get("parameters") or {}).get("targets") or []
    return [str(t.get("name")) for t in targets if isinstance(t, Mapping) and t.get("name")]


def observe_csys(run: Run, analysis: dict[str, Any] | None = None) -> dict[str, Any]:
    """Observed values: the driver's scalars, tracebacks over every log, and the per-process rows."""
    from soaklib.soak.observers import _observe_driver, analyze, read_observations

    a = analysis if analysis is not None else analyze(run)
    out = _observe_driver(run, a)
    driver = read_observations(run).get("observations") or {}
    names = target_names(run)
    out.update(observe_processes(run, names, float(a.get("warmup_s") or 0.0), float(a.get("duration_h") or 0.0),
                                 driver.get("halts") or []))
    per = [out.get(f"{n}_errors") for n in names]
    out["errors"] = sum(int(x) for x in per if x is not None) if any(x is not None for x in per) else out.get("errors")
    if "cycles" not in driver:  # a partial run: the driver never finished; loop.parquet has the counts so far
        from soaklib.store import read_table

        out.update(dict.fromkeys(("cycles", "draws_ingested_delta", "draws_lost", "dispatches")))
        loop = read_table(run.path / "loop.parquet")
        if not loop.empty:
            last = loop.iloc[-1]
            out.update(cycles=int(last["cycles"]), draws_injected=int(last["draws_injected"]),
                       escalations=int(last.get("outcome_escalated", 0) or 0),
                       cycle_errors=int(last.get("outcome_error", 0) or 0))
    return out


def summary_csys(o: Mapping[str, Any], made_on: str) -> list[str]:
    return [f"{v(o.get('cycles'))} cycles", made_on,
            f"draws {v(o.get('draws_injected'))} injected / {v(o.get('draws_ingested'))} ingested "
            f"({v(o.get('draws_merged'))} merged, {v(o.get('draws_lost'))} lost)",
            f"{v(o.get('dispatches'))} dispatches", f"{v(o.get('escalations'))} escalated"]


SYSTEM_C = SoakType("csys", "Sustained autonomous loop, orchestrator + WATCHER daemon", SystemLoopSoak,
                    system_criteria, observe_csys, (2 * HOUR, None), "2+ h", summary=summary_csys, in_combined=False)

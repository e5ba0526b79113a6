"""The reference Chapter 13 orchestrator: draw detection, diagnostics, triggers, approvals.

It does towards its files what ``chapter_13_orchestrator.py --daemon`` does:

- every poll (``--poll-interval``, else ``daemon_settings.poll_interval_seconds`` of the
  policies, else 30 s) it checks the global halt file (``/tmp/agent_halt``; ``--halt-file``
  moves it) and ``.chapter13_halt``: either one **pauses** it ("Safety check failed,
  waiting..."); then ``new_draw.flag``: on a flag it runs one cycle and deletes the flag
  **afterwards**, so flags written during a cycle merge into that cycle;
- a cycle logs ``CHAPTER 13 CYCLE — cycle_<YYYYmmdd_HHMMSS>``, reads the draw history
  (diagnostics: ``draw_id`` is ``draw_<history length>``), evaluates a trigger from the
  newest draw, and appends one JSON line to ``chapter13_cycle_history.jsonl`` with its
  ``outcome``; a triggered cycle without an accepted auto-execution writes
  ``pending_approval.json`` (``request_id: ch13_<stamp>``, ``status: pending``, ``steps_to_run``);
- SIGTERM / SIGINT set a flag read after the current ``time.sleep(poll_interval)``: exiting
  may take one poll interval.

Outcomes are driven by the newest draw's value ``v``: ``v % 10 == 0`` → no flags,
``no_action_needed``; otherwise a ``hit_rate_collapse`` trigger (``learning_loop``, steps
3, 5, 6). With ``--no-llm`` the trigger-based action asks for approval (``pending_approval``);
otherwise a built-in advisor proposes (rejected when ``v % 13 == 0``), and an accepted
proposal is ``auto_executed_test_mode`` (test mode + ``auto_approve_in_test_mode`` +
``approval_route: orchestrator``), routed to the WATCHER daemon (``approval_route: watcher``:
``pending_approval``), or waits for a human (``v1_approval_required.retrain_execution``).

    python -m soaklib.sim.orchestrator --project-dir DIR --daemon --no-llm --poll-interval 0.2
    python -m soaklib.sim.orchestrator --project-dir DIR --status --json
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

log = logging.getLogger("soaklib.sim.orchestrator")

NEW_DRAW_FLAG = "new_draw.flag"
GLOBAL_HALT = "/tmp/agent_halt"
CHAPTER13_HALT = ".chapter13_halt"
CYCLE_HISTORY = "chapter13_cycle_history.jsonl"
APPROVAL_FILE = "pending_approval.json"
HISTORY_FILE = "lottery_history.json"
POLICIES_FILE = "watcher_policies.json"
DEFAULT_POLL_S = 30.0
OUTCOMES = ("no_action_needed", "proposal_accepted", "auto_executed_test_mode", "pending_approval",
            "auto_execute_disabled", "escalated", "proposal_rejected", "error")
LEARNING_STEPS = [3, 5, 6]
LEAK_CHUNK_BYTES = 256 * 1024


def _stamp(ts: datetime) -> str:
    return ts.strftime("%Y%m%d_%H%M%S")


class Orchestrator:
    """One orchestrator process (see the module docstring)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dir = Path(args.project_dir)
        self.policies = self._load_policies()  # read once at start, as the real one does
        self.global_halt = Path(args.halt_file) if args.halt_file else Path(GLOBAL_HALT)
        if not self.global_halt.is_absolute():
            self.global_halt = self.dir / self.global_halt
        self.running = False
        self.cycles_completed = 0
        self.triggered = 0
        self.t0 = time.monotonic()
        self._leaked: list[bytearray] = []
        self._leaked_bytes = 0

    def _load_policies(self) -> dict[str, Any]:
        path = Path(self.args.policies)
        path = path if path.is_absolute() else self.dir / path
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    # ------------------------------------------------------------------ safety and flag

    def check_safety(self) -> bool:
        if self.global_halt.exists():
            log.warning("Global halt file exists: %s", self.global_halt)
            return False
        if (self.dir / CHAPTER13_HALT).exists():
            log.warning("Chapter 13 halt file exists: %s", CHAPTER13_HALT)
            return False
        return True

    def take_flag(self) -> dict[str, Any] | None:
        path = self.dir / NEW_DRAW_FLAG
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as e:
            return {"source": "flag", "error": str(e)}
        try:
            data = json.loads(text)
            return data if isinstance(data, dict) else {"source": "flag", "content": text}
        except ValueError:
            return {"source": "flag", "content": text}

    def clear_flag(self) -> None:
        if self.args.keep_flag:
            return  # fault knob: the flag stays, so every poll runs another cycle
        try:
            (self.dir / NEW_DRAW_FLAG).unlink()
        except FileNotFoundError:
            pass

    # ------------------------------------------------------------------ one cycle

    def diagnostics(self) -> dict[str, Any]:
        data = json.loads((self.dir / HISTORY_FILE).read_text(encoding="utf-8"))
        draws = data["draws"]
        latest = draws[-1] if draws else {}
        value = int(latest.get("value", 0)) if draws else 0
        flags = [] if value % 10 == 0 else ["RETRAIN_RECOMMENDED", "HIT_RATE_COLLAPSE"]
        return {"draw_id": latest.get("draw_id", f"draw_{len(draws)}"), "summary_flags": flags, "value": value}

    def run_cycle(self) -> dict[str, Any]:
        start = datetime.now(timezone.utc)
        cycle_id = f"cycle_{_stamp(start)}"
        log.info("=" * 60)
        log.info("CHAPTER 13 CYCLE — %s", cycle_id)
        log.info("=" * 60)
        result: dict[str, Any] = {"cycle_id": cycle_id, "started_at": start.isoformat(), "steps": {}, "outcome": None}
        try:
            self._cycle(result)
        except Exception as e:  # as the real one: the outcome is "error" and the traceback is printed
            log.error("Cycle error: %s", e)
            result["outcome"] = "error"
            result["error"] = str(e)
            traceback.print_exc()
        end = datetime.now(timezone.utc)
        result["completed_at"] = end.isoformat()
        result["duration_seconds"] = (end - start).total_seconds()
        with open(self.dir / CYCLE_HISTORY, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(result) + "\n")
        self.cycles_completed += 1
        return result

    def _cycle(self, result: dict[str, Any]) -> None:
        a = self.args
        log.info("Step 1: Generating diagnostics...")
        if a.cycle_s:
            time.sleep(a.cycle_s)  # the diagnostics' work: flags written meanwhile merge into this cycle
        diag = self.diagnostics()
        result["steps"]["diagnostics"] = {"success": True, "draw_id": diag["draw_id"], "flags": diag["summary_flags"]}
        n = self.cycles_completed + 1
        if a.raise_every and n % a.raise_every == 0:
            raise RuntimeError(f"simulated failure in cycle {n} (--raise-every {a.raise_every})")
        log.info("Step 2: Evaluating triggers...")
        fired = bool(diag["summary_flags"])
        trig = {"should_trigger": fired, "trigger_type": "hit_rate_collapse" if fired else None,
                "action": "learning_loop" if fired else None, "confidence": 0.9 if fired else 0.0,
                "reasoning": "hit rate below threshold" if fired else "no triggers", "metrics": {"value": diag["value"]},
                "requires_approval": fired, "cooldown_remaining": 0}
        result["steps"]["triggers"] = trig
        if not fired:
            log.info("No triggers fired - system healthy")
            result["outcome"] = "no_action_needed"
            return
        self.triggered += 1
        log.info("Trigger fired: hit_rate_collapse")
        if a.no_llm:
            log.info("Step 3: LLM analysis skipped (disabled)")
            log.info("Step 4: Using trigger-based action (no LLM proposal)")
            self.request_approval(trig)
            result["outcome"] = "pending_approval"
            return
        heuristic = a.llm_down
        if heuristic:
            log.info("Using heuristic analysis (LLM unavailable)")
        result["steps"]["llm_analysis"] = {"recommended_action": "RETRAIN", "confidence": 0.6 if heuristic else 0.85,
                                           "model_id": "heuristic_v1" if heuristic else "reference_advisor"}
        log.info("Step 4: Validating proposal...")
        if a.escalate_every and self.triggered % a.escalate_every == 0:
            log.info("Proposal ESCALATED to human review")
            self.request_approval(trig)
            result["outcome"] = "escalated"
            return
        if diag["value"] % 13 == 0:
            log.info("Proposal REJECTED: parameter delta too large")
            result["outcome"] = "proposal_rejected"
            return
        log.info("Proposal ACCEPTED")
        p = self.policies
        route = p.get("approval_route", "orchestrator")
        route = route if route in ("orchestrator", "watcher") else "orchestrator"
        if p.get("test_mode") and p.get("auto_approve_in_test_mode") and route == "orchestrator":
            log.info("Auto-executing (test mode, orchestrator route)")
            result["outcome"] = "auto_executed_test_mode"
        elif route == "watcher":
            log.info("Routing to WATCHER daemon for approval")
            self.request_approval(trig)
            result["outcome"] = "pending_approval"
        elif (p.get("v1_approval_required") or {}).get("retrain_execution", True):
            log.info("v1 mode: Requesting human approval...")
            self.request_approval(trig)
            result["outcome"] = "pending_approval"
        else:
            result["outcome"] = "auto_execute_disabled"

    def request_approval(self, trigger: dict[str, Any]) -> None:
        now = datetime.now(timezone.utc)
        body = {"request_id": f"ch13_{_stamp(now)}", "created_at": now.isoformat(), "status": "pending",
                "evaluation": trigger, "diagnostics_file": "chapter13_diagnostics.json",
                "action_required": trigger.get("action"), "steps_to_run": list(LEARNING_STEPS),
                "approval_instructions": "python -m soaklib.sim.orchestrator --status"}
        tmp = self.dir / f".{APPROVAL_FILE}.tmp"
        tmp.write_text(json.dumps(body, indent=2), encoding="utf-8")
        os.replace(tmp, self.dir / APPROVAL_FILE)
        log.info("Approval request created: %s", APPROVAL_FILE)

    # ------------------------------------------------------------------ the daemon

    def _leak(self) -> None:
        if self.args.leak_mb_per_h:
            target = int(self.args.leak_mb_per_h * 1024 * 1024 * (time.monotonic() - self.t0) / 3600.0)
            while self._leaked_bytes < target:
                n = min(LEAK_CHUNK_BYTES, target - self._leaked_bytes)
                self._leaked.append(bytearray(b"\x01") * n)
                self._leaked_bytes += n

    def run_daemon(self) -> int:
        poll = self.args.poll_interval
        if poll is None:
            poll = float((self.policies.get("daemon_settings") or {}).get("poll_interval_seconds", DEFAULT_POLL_S))
        log.info("CHAPTER 13 DAEMON STARTING (pid %d)", os.getpid())
        log.info("Poll interval: %gs", poll)
        log.info("LLM enabled: %s", not self.args.no_llm)
        self.running = True

        def on_signal(_sig: int, _frame: object) -> None:
            log.info("Shutdown signal received...")
            self.running = False  # read after the current sleep: exiting may take one poll interval

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        while self.running:
            try:
                self._leak()
                if not self.check_safety():
                    log.warning("Safety check failed, waiting...")
                    time.sleep(poll)
                    continue
                if self.take_flag() is not None:
                    log.info("New draw detected!")
                    result = self.run_cycle()
                    self.clear_flag()
                    log.info("Cycle complete: %s", result.get("outcome", "unknown"))
                time.sleep(poll)
            except Exception as e:
                log.error("Daemon error: %s", e)
                time.sleep(poll)
        log.info("Daemon stopped")
        return 0

    def status(self) -> dict[str, Any]:
        outcomes: dict[str, int] = {}
        cycles = 0
        try:
            with open(self.dir / CYCLE_HISTORY, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        outcome = json.loads(line).get("outcome", "unknown")
                    except (ValueError, AttributeError):
                        continue
                    cycles += 1
                    outcomes[outcome] = outcomes.get(outcome, 0) + 1
        except FileNotFoundError:
            pass
        approval = None
        try:
            approval = json.loads((self.dir / APPROVAL_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
        return {"cycles_in_history": cycles, "new_draw_flag_present": (self.dir / NEW_DRAW_FLAG).exists(),
                "halt_active": (self.dir / CHAPTER13_HALT).exists(), "recent_outcomes": outcomes,
                "pending_approval": isinstance(approval, dict) and approval.get("status") == "pending"}


def knob_flags() -> dict[str, str]:
    """The options by name (argparse dest) with their flag: what a soak's process ``sim:`` may set."""
    return {a.dest: a.option_strings[-1] for a in build_parser()._actions if a.option_strings and a.dest != "help"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m soaklib.sim.orchestrator", description=(__doc__ or "").split("\n")[0])
    p.add_argument("--project-dir", default=".", help="the project folder (default: the working folder)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--daemon", action="store_true", help="watch new_draw.flag and run a cycle per flag")
    mode.add_argument("--once", action="store_true", help="run one cycle now and exit")
    mode.add_argument("--status", action="store_true", help="print the status and exit")
    mode.add_argument("--clear-halt", action="store_true", help="remove .chapter13_halt")
    p.add_argument("--json", action="store_true", help="--status as JSON")
    p.add_argument("--no-llm", action="store_true", help="no advisor: the trigger-based action asks for approval")
    p.add_argument("--poll-interval", type=float, help="seconds between polls (default: the policies', else 30)")
    p.add_argument("--policies", default=POLICIES_FILE, help="policies file (default watcher_policies.json)")
    p.add_argument("--halt-file", help="global halt file (default /tmp/agent_halt)")
    f = p.add_argument_group("fault knobs")
    f.add_argument("--cycle-s", type=float, default=0.0, help="extra seconds each cycle takes (diagnostics work)")
    f.add_argument("--keep-flag", action="store_true", help="never delete new_draw.flag (every poll runs a cycle)")
    f.add_argument("--raise-every", type=int, default=0, help="every Nth cycle raises (outcome error, traceback)")
    f.add_argument("--escalate-every", type=int, default=0, help="every Nth triggered cycle escalates")
    f.add_argument("--llm-down", action="store_true", help="the advisor falls back to its heuristic")
    f.add_argument("--leak-mb-per-h", type=float, default=0.0, help="retain memory so RSS grows at this rate")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one mode; exit 0 on success, 1 on failure, 2 for bad arguments."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.poll_interval is not None and args.poll_interval <= 0:
        parser.error("--poll-interval must be > 0")
    if args.cycle_s < 0 or args.raise_every < 0 or args.escalate_every < 0 or args.leak_mb_per_h < 0:
        parser.error("fault knobs must be >= 0")
    if not Path(args.project_dir).is_dir():
        parser.error(f"--project-dir {args.project_dir} is not a folder")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s [%(levelname)s] %(message)s")
    orch = Orchestrator(args)
    if args.clear_halt:
        (orch.dir / CHAPTER13_HALT).unlink(missing_ok=True)
        print("Chapter 13 halt file cleared")
        return 0
    if args.status:
        st = orch.status()
        print(json.dumps(st, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in st.items()))
        return 0
    if args.once:
        result = orch.run_cycle()
        print(f"Outcome: {result.get('outcome')}")
        return 0 if result.get("outcome") != "error" else 1
    return orch.run_daemon()

"""The reference WATCHER daemon: a real program that speaks the WATCHER file protocol.

It is the default target of the soaks, so each soak runs on a fresh machine, and its fault
knobs (leaks, crash, ignored halt, stalled queue, misrouting, ...) let the toolkit's own
tests show that a soak catches each failure class. Every cycle (``--poll-s``, on a
monotonic schedule): halt check, all pending requests in filename order, then an
autonomous cycle when ``new_draw.flag`` signals new draws. Logs go to stderr
(``%(asctime)s [%(levelname)s] %(message)s``); profile ``plan`` also writes
``logs/watcher_agent.log``.

    python -m soaklib.sim.watcher --project-dir DIR --daemon --poll-s 1 --llm-url http://127.0.0.1:8080
    python -m soaklib.sim.watcher --project-dir DIR --halt "soak A complete"
    python -m soaklib.sim.watcher --project-dir DIR --stop
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from soaklib.sim.watcher.approvals import Approvals
from soaklib.sim.watcher.learning import Learner
from soaklib.sim.watcher.protocol import (
    PROFILES,
    LlmClient,
    Request,
    RequestFaults,
    RequestHandler,
    atomic_write_json,
    atomic_write_text,
    utc_compact,
    utc_iso,
)

log = logging.getLogger("soaklib.sim.watcher")

PID_FILE = "watcher.pid"
STATE_FILE = "daemon_state.json"
PLAN_HALT_FLAG = "watcher_halt.flag"
V2_HALT_FILE = "/tmp/agent_halt"
STATE_EVERY_CYCLES = 10
STOP_WAIT_S = 5.0
LEARNING_EVERY = 3  # every 3rd autonomous cycle also runs a learning loop
AUTONOMOUS_EPISODES = 5
LEAK_CHUNK_BYTES = 256 * 1024


class Daemon:
    """One daemon process: its loop, halt handling, state file and fault knobs."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.project_dir = Path(args.project_dir)
        self.profile = args.profile
        self.halt_file = halt_path(args)
        self.handler = RequestHandler(
            self.project_dir, self.profile, LlmClient(args.llm_url, args.llm_timeout_s),
            RequestFaults(args.duplicate_every, args.misroute, args.unknown_types),
        )
        saved = self._load_state()
        self.learner = Learner(self.project_dir, args.search_width_start, saved=saved.get("learning"))
        self.approvals = Approvals(self.project_dir, self.approved_steps) if args.approvals else None
        self.stop = threading.Event()
        self.state = "RUNNING"
        self.cycles_completed = 0
        self.errors = 0
        self.t0 = time.monotonic()
        self._leaked: list[bytearray] = []
        self._leaked_bytes = 0
        self._leaked_fds: list[int] = []
        self._next_traceback_s = args.traceback_every_s

    # ------------------------------------------------------------------ state

    def _load_state(self) -> dict[str, Any]:
        try:
            data = json.loads((self.project_dir / STATE_FILE).read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def save_state(self) -> None:
        atomic_write_json(self.project_dir / STATE_FILE, {
            "state": self.state, "cycles_completed": self.cycles_completed,
            "requests_processed": self.handler.requests_processed, "errors": self.errors + self.handler.errors,
            "updated_at": utc_iso(), "pid": os.getpid(), "profile": self.profile,
            "learning": self.learner.state(),
        })

    # ------------------------------------------------------------------ loop

    def run(self) -> int:
        if not self.args.ignore_halt:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        else:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        (self.project_dir / "watcher_requests").mkdir(parents=True, exist_ok=True)
        pid_file = self.project_dir / PID_FILE
        other = running_daemon(self.project_dir)
        if other is not None:
            log.error("another WATCHER daemon (pid %d) runs in %s: not starting a second one", other, self.project_dir)
            return 1
        atomic_write_text(pid_file, f"{os.getpid()}\n")
        log.info("WATCHER daemon started (pid %d, profile %s, poll %.2f s, halt file %s)",
                 os.getpid(), self.profile, self.args.poll_s, self.halt_file)
        self.learner.start()
        try:
            next_tick = time.monotonic()
            while not self.stop.is_set():
                if self.cycle() == "exit":
                    break
                self.cycles_completed += 1
                if self.cycles_completed % STATE_EVERY_CYCLES == 0:
                    self.save_state()
                next_tick += self.args.poll_s
                now = time.monotonic()
                if next_tick < now:  # a long cycle: skip the missed ticks, never burst
                    next_tick = now
                self.stop.wait(next_tick - now)
            if self.state != "HALTED":
                self.state = "STOPPED"
            self.save_state()
            log.info("WATCHER daemon stopped after %d cycles", self.cycles_completed)
            return 0
        finally:
            try:
                if pid_file.read_text().strip() == str(os.getpid()):
                    pid_file.unlink()
            except OSError:
                pass

    def _on_signal(self, signum: int, _frame: object) -> None:
        log.info("received %s: saving state and exiting", signal.Signals(signum).name)
        self.stop.set()

    def elapsed_s(self) -> float:
        return time.monotonic() - self.t0

    def cycle(self) -> str:
        """One poll cycle; returns ``"exit"`` when the daemon must stop (plan halt flag)."""
        args = self.args
        if args.crash_after_s is not None and self.elapsed_s() >= args.crash_after_s:
            raise RuntimeError(f"simulated crash after {args.crash_after_s} s (--crash-after-s)")
        self._faults()
        if not args.ignore_halt and self.halt_file.exists():
            reason = read_halt_reason(self.halt_file)
            if self.profile == "plan":
                log.warning("halt flag %s found (%s): exiting", self.halt_file, reason)
                self.state = "HALTED"
                return "exit"
            if self.state != "HALTED":
                log.warning("halt requested (%s): pausing until %s is removed", reason, self.halt_file)
                self.state = "HALTED"
                self.save_state()
            return "halted"
        if self.state == "HALTED":
            log.info("halt file removed: resuming")
            self.state = "RUNNING"
            self.save_state()
        run_id = utc_compact()
        try:
            stalled = args.stall_queue_after_s is not None and self.elapsed_s() >= args.stall_queue_after_s
            if not stalled:
                self.handler.process_all(run_id, self.stop.is_set)
            if self.approvals is not None and not self.stop.is_set():
                self.approvals.poll()
            if not args.no_draws and not self.stop.is_set() and self.learner.take_flag():
                self.autonomous_cycle(run_id)
        except Exception:
            self.errors += 1
            log.exception("cycle failed")
        return "ok"

    def autonomous_cycle(self, run_id: str) -> None:
        """New draws: diagnostics → trigger → dispatch(es) → policy candidate + telemetry."""
        ingested = self.learner.ingest()
        log.info("diagnostics: cycle %d, %d new draw(s), hit rate %.2f, best seed %s",
                 self.learner.cycles, ingested, self.learner.hit_rate, self.learner.best_seed)
        kinds = ["selfplay"] + (["learning_loop"] if self.learner.cycles % LEARNING_EVERY == 0 else [])
        log.info("trigger: %s", " + ".join(kinds))
        models = 0
        for kind in kinds:
            rtype = {"selfplay": "selfplay_retrain" if self.profile == "watcher-v2" else "selfplay"}.get(kind, kind)
            req = Request(kind=kind, request_type=rtype, source="autonomous", episodes=AUTONOMOUS_EPISODES)
            if self.handler.dispatch(kind, req, run_id) == "COMPLETED":
                models += 1
        telemetry = self.learner.record(models)
        log.info("autonomous cycle %d done: %d model(s), total %d", self.learner.cycles, models, telemetry["total_models"])

    def approved_steps(self, steps: list[int]) -> None:
        """An approval of the orchestrator's (``--approvals``): the learning steps on the current history."""
        ingested = self.learner.ingest()
        self.handler.work(0.05 * len(steps))
        telemetry = self.learner.record(1)
        log.info("pipeline steps %s done: %d new draw(s), hit rate %.2f, total %d model(s)",
                 steps, ingested, self.learner.hit_rate, telemetry["total_models"])

    # ------------------------------------------------------------------ faults

    def _faults(self) -> None:
        args = self.args
        if args.leak_mb_per_h:
            target = int(args.leak_mb_per_h * 1024 * 1024 * self.elapsed_s() / 3600.0)
            while self._leaked_bytes < target:
                n = min(LEAK_CHUNK_BYTES, target - self._leaked_bytes)
                self._leaked.append(bytearray(b"\x01") * n)  # touched: counts in RSS
                self._leaked_bytes += n
        for _ in range(args.fd_leak_per_cycle):
            self._leaked_fds.append(os.open(os.devnull, os.O_RDONLY))
        if self._next_traceback_s is not None and self.elapsed_s() >= self._next_traceback_s:
            self._next_traceback_s += args.traceback_every_s
            try:
                raise ValueError("simulated failure inside a cycle (--traceback-every-s)")
            except ValueError:
                self.errors += 1
                log.exception("caught an exception in the cycle")


# ---------------------------------------------------------------------- commands


def halt_path(args: argparse.Namespace) -> Path:
    """The halt file: ``--halt-file``, else ``/tmp/agent_halt`` (watcher-v2) or the plan's flag."""
    if args.halt_file:
        p = Path(args.halt_file)
        return p if p.is_absolute() else Path(args.project_dir) / p
    return Path(args.project_dir) / PLAN_HALT_FLAG if args.profile == "plan" else Path(V2_HALT_FILE)


def read_halt_reason(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return "no reason"
    try:
        return str(json.loads(text).get("reason", text))
    except (ValueError, AttributeError):
        return text or "no reason"


def write_halt(args: argparse.Namespace) -> int:
    path = halt_path(args)
    atomic_write_json(path, {"reason": args.halt, "timestamp": utc_iso(), "requested_by": "cli"})
    log.info("halt requested: wrote %s (%s)", path, args.halt)
    return 0


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def running_daemon(project_dir: Path) -> int | None:
    """The pid of a live WATCHER daemon recorded in ``watcher.pid`` (None: none or stale)."""
    try:
        pid = int((project_dir / PID_FILE).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    if pid == os.getpid() or not _alive(pid) or b"watcher" not in cmdline:
        return None
    return pid


def stop_daemon(project_dir: Path) -> int:
    """``--stop``: SIGTERM the pid in ``watcher.pid`` and wait up to 5 s for it to exit."""
    pid_file = project_dir / PID_FILE
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        log.error("no daemon to stop: %s is missing or unreadable", pid_file)
        return 1
    if not _alive(pid):
        log.warning("daemon pid %d is not running (stale %s): removing it", pid, pid_file)
        pid_file.unlink(missing_ok=True)
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT_S
    while time.monotonic() < deadline:
        if not _alive(pid):
            log.info("daemon pid %d stopped", pid)
            return 0
        time.sleep(0.05)
    log.error("daemon pid %d did not exit within %.0f s of SIGTERM", pid, STOP_WAIT_S)
    return 1


def knob_flags() -> dict[str, str]:
    """The daemon's options by name (argparse dest) with their flag, e.g. ``leak_mb_per_h``
    → ``--leak-mb-per-h``: what a soak's ``sim:`` parameters may set."""
    return {a.dest: a.option_strings[-1] for a in build_parser()._actions if a.option_strings and a.dest != "help"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m soaklib.sim.watcher", description=__doc__.split("\n")[0])
    p.add_argument("--project-dir", required=True, help="the daemon's project folder")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--daemon", action="store_true", help="run the daemon loop (default)")
    mode.add_argument("--process-requests", action="store_true", help="one pass over the request queue, then exit")
    mode.add_argument("--halt", metavar="REASON", help="write the halt file with REASON and exit")
    mode.add_argument("--stop", action="store_true", help="SIGTERM the running daemon and wait up to 5 s")
    p.add_argument("--poll-s", type=float, default=1.0, help="seconds between cycles (default 1)")
    p.add_argument("--llm-url", default="http://127.0.0.1:8080", help="LLM server base URL")
    p.add_argument("--llm-timeout-s", type=float, default=2.0, help="timeout of one LLM evaluation")
    p.add_argument("--halt-file", help="halt file (default /tmp/agent_halt; plan: DIR/watcher_halt.flag)")
    p.add_argument("--profile", choices=PROFILES, default="watcher-v2", help="protocol profile")
    p.add_argument("--search-width-start", type=int, default=2048, help="seeds searched in the first cycle")
    p.add_argument("--approvals", action="store_true",
                   help="poll the orchestrator's pending_approval.json each cycle (WATCHER v2.0)")
    p.add_argument("--no-draws", action="store_true",
                   help="leave new_draw.flag to the Chapter 13 orchestrator (no autonomous cycles of its own)")
    f = p.add_argument_group("fault knobs")
    f.add_argument("--leak-mb-per-h", type=float, default=0.0, help="retain memory so RSS grows at this rate (MiB/h)")
    f.add_argument("--fd-leak-per-cycle", type=int, default=0, help="open this many files per cycle and keep them")
    f.add_argument("--crash-after-s", type=float, help="raise an uncaught exception after this many seconds (exit 1)")
    f.add_argument("--ignore-halt", action="store_true", help="ignore SIGTERM, SIGINT and the halt file")
    f.add_argument("--traceback-every-s", type=float, help="log a caught exception with traceback this often")
    f.add_argument("--duplicate-every", type=int, default=0, help="dispatch every Nth request twice")
    f.add_argument("--misroute", action="store_true", help="dispatch learning_loop requests as selfplay")
    f.add_argument("--stall-queue-after-s", type=float, help="stop processing requests after this many seconds")
    f.add_argument("--unknown-types", action="store_true", help="know no request type (all UNKNOWN_TYPE)")
    return p


def _check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.poll_s <= 0:
        p.error("--poll-s must be > 0")
    if args.llm_timeout_s <= 0:
        p.error("--llm-timeout-s must be > 0")
    if args.leak_mb_per_h < 0 or args.fd_leak_per_cycle < 0 or args.duplicate_every < 0:
        p.error("fault rates must be >= 0")
    if args.traceback_every_s is not None and args.traceback_every_s <= 0:
        p.error("--traceback-every-s must be > 0")
    if not Path(args.project_dir).is_dir() and not (args.halt or args.stop):
        p.error(f"--project-dir {args.project_dir} is not a folder")


def setup_logging(args: argparse.Namespace) -> None:
    fmt = logging.Formatter("%(asctime)s [%(levelname)s] %(message)s")
    log.handlers.clear()
    log.setLevel(logging.INFO)
    log.propagate = False
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if args.profile == "plan" and Path(args.project_dir).is_dir():
        (Path(args.project_dir) / "logs").mkdir(exist_ok=True)
        handlers.append(logging.FileHandler(Path(args.project_dir) / "logs" / "watcher_agent.log", encoding="utf-8"))
    for h in handlers:
        h.setFormatter(fmt)
        log.addHandler(h)


def main(argv: list[str] | None = None) -> int:
    """Run one mode; exit 0 on success, 1 on failure, 2 for bad arguments."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    setup_logging(args)
    if args.halt is not None:
        return write_halt(args)
    if args.stop:
        return stop_daemon(Path(args.project_dir))
    daemon = Daemon(args)
    if args.process_requests:
        n = daemon.handler.process_all(utc_compact())
        log.info("processed %d request(s)", n)
        return 0
    return daemon.run()


if __name__ == "__main__":
    sys.exit(main())

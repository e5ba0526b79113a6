"""A dx-runner v2.0.0 simulator: same commands, files, output formats and exit codes.

Run it exactly like the real runner::

    python -m soaklib.sim.dx_runner preflight --provider P
    python -m soaklib.sim.dx_runner start --beads ID --provider P --prompt-file F --worktree W
    python -m soaklib.sim.dx_runner check --beads ID --json
    python -m soaklib.sim.dx_runner report --beads ID --format json
    python -m soaklib.sim.dx_runner stop --beads ID

It reproduces the real runner's hazards on purpose: ``start`` leaves a detached monitor
holding its stdout/stderr until the job ends (callers using pipes hang), the monitor
notices the provider's exit only at its tick and writes ``.outcome`` in two writes, and
``stop`` kills the monitor but not the provider's process group. Settings come from the
environment (DX_SIM_*; see ``scenarios.SimConfig``). Standard library only.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

try:
    from . import scenarios as sc
except ImportError:  # run by path (the monitor and provider processes): no package
    import scenarios as sc  # type: ignore[no-redef,import-not-found]

VERSION = "2.0.0"
BEADS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
START_WAIT_S = 10.0  # how long start waits for the monitor to launch the provider
STOP_WAIT_S = 2.0
SELF = os.path.abspath(__file__)  # monitor and provider run by path: no package import cost
CHECK_EXIT = {
    "launching": 0, "slow_start": 0, "waiting_first_output": 0, "healthy": 0,
    "awaiting_finalize": 0, "exited_ok": 0, "no_op_success": 0, "stopped": 0,
    "stalled": 2, "exited_err": 3, "blocked": 3, "no_op": 23,
}


def _utc_iso(epoch: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if epoch is None else epoch, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- commands


def cmd_preflight(cfg: sc.SimConfig, provider: str) -> int:
    """Print the preflight report; 0 passed, 1 failed, 20 unknown provider."""
    if provider not in sc.PROVIDERS:
        _err(f"ERROR: unknown provider '{provider}' (known: {', '.join(sc.PROVIDERS)})")
        return 20
    time.sleep(cfg.preflight_s)
    lines, errors = sc.preflight_report(cfg, provider)
    print("\n".join(lines), flush=True)
    return 1 if errors else 0


def worktree_refusal(worktree: str, prefixes: tuple[str, ...]) -> str:
    """The reason_code refusing a worktree, or '' when it is allowed."""
    path = Path(worktree)
    if not path.is_dir():
        return "worktree_missing"
    real = os.path.realpath(path)
    for prefix in prefixes:
        root = os.path.realpath(prefix)
        if real.startswith(root.rstrip("/") + "/"):
            return ""
    return "canonical_worktree_forbidden"


def cmd_start(
    cfg: sc.SimConfig, beads: str, provider: str, prompt_file: str, worktree: str
) -> int:
    """Preflight, validate, launch the monitor, wait for the provider's pid, print `started`."""
    code = cmd_preflight(cfg, provider)
    if code:
        return 21 if code == 1 else code
    try:
        prompt = Path(prompt_file).read_text(errors="replace")
    except OSError as exc:
        _err(f"ERROR: prompt file not readable: {prompt_file} ({exc.strerror})")
        return 1
    refusal = worktree_refusal(worktree, cfg.worktree_prefixes)
    if refusal:
        print(f"reason_code={refusal}\nrejected_path={worktree}\npolicy=workspace_first",
              flush=True)
        _err(f"ERROR: worktree refused ({refusal}): {worktree}; allowed under "
             + ", ".join(cfg.worktree_prefixes))
        return 22
    job = sc.Job(cfg.state_dir, provider, beads)
    job.dir.mkdir(parents=True, exist_ok=True)
    with _locked(job.dir / ".start.lock"):
        if job.active():
            _err(f"ERROR: job already running: beads={beads} provider={provider}")
            return 1
        cap = cfg.caps.get(provider)
        metas = job.dir.glob("*.meta")
        running = sum(sc.Job(cfg.state_dir, provider, m.name[:-5]).active() for m in metas)
        if cap is not None and running >= cap:
            print(f"reason_code=concurrency_cap_exceeded\nprovider={provider}\ncap={cap}\n"
                  f"running={running}", flush=True)
            _err(f"ERROR: concurrency cap exceeded for {provider} ({running}/{cap}); retry later")
            return 26
        pid = _launch(cfg, job, prompt, worktree)
    if pid is None:
        return 1
    print(f"started beads={beads} provider={provider} pid={pid} log={job.log}", flush=True)
    return 0


def _launch(cfg: sc.SimConfig, job: sc.Job, prompt: str, worktree: str) -> int | None:
    """Write the meta, fork the detached monitor (it inherits stdout/stderr); the provider pid."""
    attempt = (job.read_int(job.attempts) or 0) + 1
    sc.write_atomic(job.attempts, f"{attempt}\n")
    for stale in (job.outcome, job.rc, job.pid, job.monitor_pid, job.truth, job.log):
        stale.unlink(missing_ok=True)
    plan = sc.plan_job(cfg, job.provider, job.beads, attempt)
    meta = {
        "beads": job.beads, "provider": job.provider, "runner_version": VERSION,
        "scenario": cfg.scenario, "seed": str(cfg.seed), "worktree": os.path.abspath(worktree),
        "started_at": _utc_iso(), "started_at_epoch": repr(time.time()),
        "started_monotonic": repr(time.monotonic()), "answer": sc.answer_for(prompt),
        "mutate": "1" if sc.MUTATE_MARKER in prompt else "0", **plan.to_meta(),
    }
    sc.write_atomic(job.meta, sc.kv_text(meta))
    sys.stdout.flush()
    sys.stderr.flush()
    monitor = subprocess.Popen(
        [sys.executable, SELF, "_monitor", str(cfg.state_dir), job.provider, job.beads],
        stdin=subprocess.DEVNULL, start_new_session=True, close_fds=True,
    )  # stdout/stderr inherited on purpose: the real runner's monitor holds them
    deadline = time.monotonic() + START_WAIT_S
    while time.monotonic() < deadline:
        pid = job.read_int(job.pid)
        if pid is not None:
            meta.update(monitor_pid=str(monitor.pid), pid=str(pid))
            sc.write_atomic(job.meta, sc.kv_text(meta))
            return pid
        if monitor.poll() is not None:
            break
        time.sleep(0.01)
    _err(f"ERROR: launcher failed: no provider pid for beads={job.beads} "
         f"within {START_WAIT_S:.0f}s")
    try:
        os.killpg(monitor.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    monitor.wait(timeout=STOP_WAIT_S)
    return None


def classify(cfg: sc.SimConfig, job: sc.Job) -> dict[str, object]:
    """The job's health as ``check --json`` reports it (no delay, never hangs)."""
    meta = job.read_meta()
    outcome = job.read_outcome()
    pid = job.read_int(job.pid)
    mutations = int((outcome or {}).get("mutation_count", "0") or 0)
    if outcome is not None:
        state = {"killed": "stopped", "no_op": "no_op", "failed": "exited_err"}.get(
            outcome["state"], "exited_ok" if mutations > 0 else "no_op_success")
        if outcome["state"] == "success" and outcome["exit_code"] != "0":
            state = "exited_err"
        reason = outcome["reason_code"]
    elif job.rc.exists():
        state, reason = "awaiting_finalize", "rc_present_outcome_pending"
    elif pid is not None and sc.alive(pid):
        elapsed_s = time.monotonic() - float(meta.get("started_monotonic", "0"))
        if meta.get("live_state") and elapsed_s >= cfg.stall_after_s:
            state, reason = meta["live_state"], meta.get("live_reason", "")
        elif not job.log.exists():
            state, reason = "launching", "no_log_yet"
        elif job.log.stat().st_size == 0:
            state, reason = "waiting_first_output", "no_output_yet"
        else:
            state, reason = "healthy", "process_running"
    elif pid is None:
        up = job.monitor_alive()
        state, reason = ("launching", "no_pid_yet") if up else ("exited_err", "start_failed")
    elif job.monitor_alive():
        state, reason = "awaiting_finalize", "rc_grace_window"
    else:
        state, reason = "exited_err", "late_finalize_no_rc"
    return {
        "beads": job.beads, "provider": job.provider, "state": state, "reason_code": reason,
        "selected_model": (outcome or meta).get("selected_model", ""),
        "fallback_reason": (outcome or meta).get("fallback_reason", ""),
        "mutation_count": mutations, "pid": pid, "started_at": meta.get("started_at", ""),
        "retries": max(int(meta.get("attempt", "1")) - 1, 0), "log": str(job.log),
    }


def cmd_check(cfg: sc.SimConfig, beads: str, as_json: bool) -> int:
    """One health line (JSON with --json); the exit code encodes the state."""
    time.sleep(cfg.check_s)
    job = sc.Job.find(cfg.state_dir, beads)
    if job is None:
        status: dict[str, object] = {
            "beads": beads, "state": "missing", "reason_code": "no_meta", "selected_model": "",
            "fallback_reason": "", "mutation_count": 0, "pid": None,
        }
        code = 1
    else:
        if job.read_meta().get("check_hangs") == "1":
            time.sleep(sc.LONG_RUN_S)  # the real runner's check can wedge; callers must time out
        status = classify(cfg, job)
        code = CHECK_EXIT.get(str(status["state"]), 3)
    if as_json:
        print(json.dumps(status), flush=True)
    else:
        print(" ".join(f"{k}={'' if v is None else v}" for k, v in status.items()), flush=True)
    return code


def cmd_report(cfg: sc.SimConfig, beads: str) -> int:
    """Pretty JSON with exit_code and duration_sec as strings; unknown id: exit 1, no stdout."""
    job = sc.Job.find(cfg.state_dir, beads)
    if job is None:
        _err(f"ERROR: no metadata for beads={beads}")
        return 1
    status = classify(cfg, job)
    outcome = job.read_outcome() or {}
    report = {
        "beads": beads, "provider": job.provider, "state": status["state"],
        "reason_code": status["reason_code"], "started_at": status["started_at"],
        "duration_sec": outcome.get("duration_sec", "-"), "retries": status["retries"],
        "exit_code": outcome.get("exit_code", "-"), "outcome_state": outcome.get("state", "-"),
        "outcome_reason_code": outcome.get("reason_code", "-"),
        "selected_model": status["selected_model"], "fallback_reason": status["fallback_reason"],
        "mutation_count": status["mutation_count"], "log": str(job.log),
        "worktree": job.read_meta().get("worktree", ""),
    }
    print(json.dumps(report, indent=2), flush=True)
    return 0


def cmd_stop(cfg: sc.SimConfig, beads: str) -> int:
    """Kill the monitor only (the provider's group survives, as with the real runner)."""
    job = sc.Job.find(cfg.state_dir, beads)
    if job is None or not job.monitor_alive():
        _err(f"ERROR: no active process for beads={beads}")
        return 1
    monitor = job.read_int(job.monitor_pid) or 0
    try:
        os.kill(monitor, signal.SIGTERM)
    except ProcessLookupError:  # the job finished on its own meanwhile
        _err(f"ERROR: no active process for beads={beads}")
        return 1
    deadline = time.monotonic() + STOP_WAIT_S
    while sc.alive(monitor) and time.monotonic() < deadline:
        time.sleep(0.02)
    if sc.alive(monitor):
        os.kill(monitor, signal.SIGKILL)
    meta = job.read_meta()
    sc.write_atomic(job.outcome, sc.kv_text({
        "exit_code": "143", "state": "killed", "reason_code": "manual_stop",
        "completed_at": _utc_iso(), "duration_sec": _duration_sec(meta, time.time()),
        "retries": str(max(int(meta.get("attempt", "1")) - 1, 0)),
        "selected_model": meta.get("selected_model", ""),
        "fallback_reason": meta.get("fallback_reason", ""), "mutation_count": "0",
    }))
    print(f"stopped beads={beads} provider={job.provider} monitor_pid={monitor}", flush=True)
    return 0


def _duration_sec(meta: dict[str, str], end_epoch: float) -> str:
    return str(max(int(end_epoch - float(meta.get("started_at_epoch", end_epoch))), 0))


# --------------------------------------------------------------------------- detached processes


def run_monitor(cfg: sc.SimConfig, provider: str, beads: str) -> int:
    """Launch the provider in its own group, notice its exit at a tick, write the outcome."""
    job = sc.Job(cfg.state_dir, provider, beads)
    sc.write_atomic(job.monitor_pid, f"{os.getpid()}\n")
    with open(job.log, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, SELF, "_provider", str(cfg.state_dir), provider, beads],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True,
        )
    sc.write_atomic(job.pid, f"{proc.pid}\n")
    next_tick = time.monotonic() + cfg.tick_s
    while True:
        time.sleep(max(next_tick - time.monotonic(), 0.0))
        if proc.poll() is not None:
            break
        next_tick += cfg.tick_s
    meta = job.read_meta()
    rc = job.read_int(job.rc)
    truth = sc.read_json(job.truth)
    exited_at = truth.get("provider_exited_at", time.time())
    if not isinstance(exited_at, (int, float, str)):
        raise TypeError(f"{job.truth}: provider_exited_at is {exited_at!r}, not a number")
    end_epoch = float(exited_at)
    code = proc.returncode
    exit_code = rc if rc is not None else (128 - code if code < 0 else code)
    if rc is None:
        state, reason = "failed", "monitor_no_rc_file"
    elif rc == 0:
        state, reason = meta.get("outcome_state_planned", "success"), meta.get("runner_reason", "")
    else:
        state, reason = "failed", meta.get("runner_reason") or "process_exit_with_rc"
    if rc not in (None, 0) and reason == "outcome_exit_0":
        reason = "process_exit_with_rc"
    lines = [f"exit_code={exit_code}", f"state={state}", f"reason_code={reason}",
             f"completed_at={_utc_iso(end_epoch)}",
             f"duration_sec={_duration_sec(meta, end_epoch)}",
             f"retries={max(int(meta.get('attempt', '1')) - 1, 0)}",
             f"selected_model={meta.get('selected_model', '')}",
             f"fallback_reason={meta.get('fallback_reason', '')}",
             f"mutation_count={truth.get('mutation_count', 0)}"]
    with open(job.outcome, "w") as out:  # two writes with a pause: readers see half a file
        out.write("".join(f"{line}\n" for line in lines[:4]))
        out.flush()
        time.sleep(cfg.outcome_pause_s)
        out.write("".join(f"{line}\n" for line in lines[4:]))
    return 0


def run_provider(cfg: sc.SimConfig, provider: str, beads: str) -> int:
    """The 'agent': sleep the planned latency, answer, write truth.json and .rc, exit with rc."""
    started_at = time.time()
    job = sc.Job(cfg.state_dir, provider, beads)
    meta = job.read_meta()
    print(f"[{provider}] model={meta.get('selected_model', '')} beads={beads} "
          f"attempt={meta.get('attempt', '1')}", flush=True)
    mutations = 0
    if meta.get("mutate") == "1":
        Path(meta["worktree"], "sim_mutation.txt").write_text(f"{beads}\n")
        mutations = 1
    time.sleep(float(meta.get("latency_s", "0")))
    rc = int(meta.get("planned_rc", "0"))
    failure = sc.log_lines_for(cfg, meta)
    print("\n".join(failure) if failure else meta.get("answer", "OK"), flush=True)
    truth = {"beads": beads, "provider": provider, "attempt": int(meta.get("attempt", "1")),
             "latency_s": float(meta.get("latency_s", "0")), "rc": rc, "mutation_count": mutations,
             "provider_started_at": started_at, "provider_exited_at": time.time()}
    sc.write_atomic(job.truth, json.dumps(truth) + "\n")
    sc.write_atomic(job.rc, f"{rc}\n")
    return rc


# --------------------------------------------------------------------------- entry point


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dx-runner", description=f"dx-runner {VERSION} simulator")
    parser.add_argument("--version", action="version", version=f"dx-runner {VERSION} (soaklib simulator)")
    sub = parser.add_subparsers(dest="command", required=True)
    pre = sub.add_parser("preflight", help="check a provider's runtime, auth and model")
    pre.add_argument("--provider", required=True)
    start = sub.add_parser("start", help="launch a job (detached)")
    for flag in ("--beads", "--provider", "--prompt-file", "--worktree"):
        start.add_argument(flag, required=True)
    check = sub.add_parser("check", help="one job's health; the exit code encodes the state")
    check.add_argument("--beads", required=True)
    check.add_argument("--json", action="store_true")
    report = sub.add_parser("report", help="one job's report")
    report.add_argument("--beads", required=True)
    report.add_argument("--format", choices=("json",), default="json")
    stop = sub.add_parser("stop", help="stop a job's launcher and monitor")
    stop.add_argument("--beads", required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one dx-runner command; returns its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        cfg = sc.SimConfig.from_env()
    except sc.ConfigError as exc:
        _err(f"ERROR: {exc}")
        return 2
    if argv and argv[0] in ("_monitor", "_provider") and len(argv) == 4:
        cfg = sc.SimConfig(**{**cfg.__dict__, "state_dir": Path(argv[1])})
        runner = run_monitor if argv[0] == "_monitor" else run_provider
        return runner(cfg, argv[2], argv[3])
    args = _parser().parse_args(argv)
    beads = getattr(args, "beads", None)
    if beads is not None and not BEADS_RE.match(beads):
        _err(f"ERROR: invalid beads id {beads!r} (letters, digits, '.', '_', '-')")
        return 2
    if args.command == "preflight":
        return cmd_preflight(cfg, args.provider)
    if beads is None:  # argparse requires --beads for every other command
        _err(f"ERROR: {args.command} needs --beads")
        return 2
    if args.command == "start":
        return cmd_start(cfg, beads, args.provider, args.prompt_file, args.worktree)
    if args.command == "check":
        return cmd_check(cfg, beads, args.json)
    if args.command == "report":
        return cmd_report(cfg, beads)
    return cmd_stop(cfg, beads)


if __name__ == "__main__":
    sys.exit(main())

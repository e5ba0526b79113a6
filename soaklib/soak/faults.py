"""What a soak says about faults of the machine and of the target's own output.

Pure helpers used by the harness and the signoff: the halt row judged by the exit code
after a requested halt, the row of a daemon that halted itself (HALTED with no halt
requested: the WATCHER daemon's KillSwitch), the notes on the bounded copy of the target's
output and on the sampler's cost, and the one-line error of a full disk.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from soaklib.analysis.criteria import CriterionRow
from soaklib.errors import DiskFullError
from soaklib.observe.recorder import DISK_FULL_ERRNOS
from soaklib.observe.sources import LogSource
from soaklib.soak.context import SoakContext, SoakObservations

MIB = 2**20
USUAL_SAMPLE_COST_MS = 10.0  # a full sample costs a few ms (bench/RESULTS.md); above this, a note says why
BUSY_LOG_BYTES = MIB  # more new log output than this between two samples: a note says what watching cost
DEFAULT_NORMAL_EXIT_CODES = (0, -15)  # target.halt.normal_exit_codes: exited, or ended by the SIGTERM itself
HALT_EXIT_TRIAGE = (
    "The daemon stopped with an exit code that is not its normal stop: read the end of target.log "
    "(a traceback from the shutdown handler, a failed flush of its state) and fix the stop path; if the "
    "code is the daemon's normal stop, list it in target.halt.normal_exit_codes."
)


def halt_exit_abnormal(halt: Mapping[str, Any] | None, normal_codes: Iterable[int] | None = None) -> bool:
    """True when the target exited after the requested halt with a code not in ``normal_codes``."""
    if not halt or not halt.get("exited") or halt.get("forced") or halt.get("returncode") is None:
        return False
    return halt["returncode"] not in tuple(DEFAULT_NORMAL_EXIT_CODES if normal_codes is None else normal_codes)


def judge_halt_exit(rows: Sequence[Any], halt: Mapping[str, Any] | None,
                    normal_codes: Iterable[int] | None = None) -> None:
    """Make the ``halt_s`` row FAIL (with triage) when the target's exit code after the
    requested halt is not one of ``normal_codes``; the row's note names the code either way."""
    if not halt or not halt.get("exited") or halt.get("forced"):
        return
    code = halt.get("returncode")
    if code is None:  # an attached daemon: only its parent can read its exit status
        return
    normal = tuple(DEFAULT_NORMAL_EXIT_CODES if normal_codes is None else normal_codes)
    for row in rows:
        if row["metric"] != "halt_s":
            continue
        if code in normal:
            row["note"] = "; ".join(x for x in (f"exit code {code} (normal stop)", row["note"]) if x)
            continue
        row["status"] = "FAIL"
        row["note"] = "; ".join(x for x in (f"exit code {code} after the halt request: not the daemon's normal "
                                            f"stop ({', '.join(map(str, normal))}; target.halt.normal_exit_codes)",
                                            row["note"]) if x)
        row["triage"] = " ".join(x for x in (HALT_EXIT_TRIAGE, row["triage"]) if x)


SELF_HALT_TRIAGE = (
    "The daemon paused itself (state HALTED) with no halt requested: the WATCHER daemon's KillSwitch halts it "
    "below 10 GB free on / or at 95% memory use. Check df -h / and free -m on the soak machine and the reason "
    "in daemon_state.json and its log; free space or memory, clear the halt file, and run the soak again."
)


STOP_EVENTS = ("halt_requested", "target_stopped", "process_halted", "interrupted")


def daemon_halted_row(samples: pd.DataFrame, events: pd.DataFrame, *, last_words: bool = False) -> CriterionRow | None:
    """A FAIL row when the daemon was seen HALTED before the soak asked it to stop (None
    otherwise); ``last_words``: the last sample was taken after the target exited (left out)."""
    if samples.empty or "daemon_state" not in samples or "t_s" not in samples:
        return None
    if last_words:
        samples = samples.iloc[:-1]
    before = float("inf")
    if not events.empty and "kind" in events and "t_s" in events:
        requested = events.loc[events["kind"].isin(STOP_EVENTS), "t_s"]
        before = float(requested.min()) if len(requested) else before
    halted = samples[(samples["daemon_state"] == "HALTED") & (samples["t_s"] < before)]
    if halted.empty:
        return None
    first_s = float(halted["t_s"].min())
    return CriterionRow(metric="daemon_halted", label="The daemon did not halt itself during the soak",
                        observed=True, unit="bool", pass_bound=False, fail_bound=False, status="FAIL",
                        note=f"daemon_state HALTED from {first_s:.1f} s with no halt requested ({len(halted)} "
                             "sample(s)); queue and cycle rows after that read a paused daemon",
                        triage=SELF_HALT_TRIAGE, direction="eq")


def stop_exit_row(events: pd.DataFrame, normal_codes: Iterable[int] | None = None) -> CriterionRow | None:
    """A FAIL row when the harness stopped the target (soaks B and C: SIGTERM at the end) and it
    exited with a code that is not its normal stop; None otherwise (soak A's is its halt row)."""
    if events.empty or "kind" not in events or "data" not in events:
        return None
    normal = tuple(DEFAULT_NORMAL_EXIT_CODES if normal_codes is None else normal_codes)
    for data in events.loc[events["kind"] == "target_stopped", "data"]:
        stop = json.loads(data) if isinstance(data, str) and data else {}
        code = stop.get("returncode")
        if stop.get("exited") and not stop.get("forced") and code is not None and code not in normal:
            return CriterionRow(metric="stop_exit_code", label="The daemon stopped cleanly when the soak stopped it",
                                observed=code, unit="exit code", pass_bound=list(normal), fail_bound=None,
                                status="FAIL", note=f"exit code {code} after the soak's SIGTERM: not the daemon's "
                                f"normal stop ({', '.join(map(str, normal))}; target.halt.normal_exit_codes)",
                                triage=HALT_EXIT_TRIAGE, direction="in")
    return None


def output_notes(copy_stats: Mapping[str, Any] | None, log_max_mb: float,
                 costs: Sequence[tuple[Any, ...]]) -> list[str]:
    """Notes on the bounded copy of the target's output (what it dropped) and on what
    watching cost when it rose above its usual figure: a sample's median cost above a few
    ms, or more than ``BUSY_LOG_BYTES`` of new output taken in by one sample (then the
    harness's CPU, which the copy's counting is part of). ``costs`` are ``(t_s,
    sample_cost_ms, bytes_read, harness_cpu_pct)`` per sample."""
    notes: list[str] = []
    st = copy_stats or {}
    if st.get("bytes_dropped"):
        first = st.get("first_rotation_s")
        at = f"{first:.0f} s" if first is not None else "the start"
        notes.append(f"target.log is a bounded copy: {st['bytes_dropped'] / MIB:.1f} MiB of the target's "
                     f"{st.get('bytes_total', 0) / MIB:.1f} MiB of output were dropped from its middle "
                     f"({st.get('rotations')} rotation(s) from {at} on, sampling.target_log_max_mb = "
                     f"{log_max_mb:g}); error and traceback counts cover all of it")
    if st.get("write_error"):
        notes.append(f"the copy of the target's output stopped: {st['write_error']}")
    ms = sorted(float(c[1]) for c in costs if c[1] is not None)
    busy = [c for c in costs if c[2] is not None and c[2] > BUSY_LOG_BYTES]
    if ms and (ms[len(ms) // 2] > USUAL_SAMPLE_COST_MS or busy):
        slow = [c for c in costs if c[1] is not None and c[1] > USUAL_SAMPLE_COST_MS]
        first_t = min((float(c[0]) for c in slow + busy if c[0] is not None), default=0.0)
        most = max((int(c[2]) for c in costs if c[2] is not None), default=0)
        cpu = sorted(float(c[3]) for c in costs if len(c) > 3 and c[3] is not None)
        cpu_txt = f"; the harness used p50 {cpu[len(cpu) // 2]:.0f}% of a core" if cpu else ""
        notes.append(f"watching cost more than usual from {first_t:.0f} s on: a sample took p50 "
                     f"{ms[len(ms) // 2]:.1f} ms, max {ms[-1]:.0f} ms, and up to {most / MIB:.1f} MiB of new "
                     f"log output came in between two samples{cpu_txt}")
    return notes


def last_words(ctx: SoakContext, target: Any, logs: LogSource, obs: SoakObservations, timeout_s: float) -> None:
    """After the target exited: wait up to ``timeout_s`` for the last writer of its output,
    then take one more sample with every reader going to the end, so what it wrote while
    stopping (a traceback of its shutdown, the last error lines) is counted."""
    recorder = ctx.recorder
    if recorder is None or target.is_running():
        return
    copy = getattr(target, "log_copy", None)
    if copy is not None and not copy.close(timeout_s).closed:
        obs.notes.append(f"a process of the target still held its output open {timeout_s:g} s after it exited: "
                         "lines it writes later are not counted")
    reason = str(obs.sampling.get("end_reason") or "stopped")
    if recorder.last_words(target.pid) is not None:
        for line in logs.new_error_lines:
            ctx.event("log_error", message=line)
        obs.first_error_lines = list(logs.first_errors)
        obs.sampling = recorder.end(reason).to_dict() | {"last_words": True}


def end_notes(obs: SoakObservations, copy: Any, log_max_mb: float, costs: Sequence[tuple[Any, ...]]) -> list[str]:
    """The harness's notes at the end (the copy's stats kept in ``obs.sampling``): what the
    bounded ``target.log`` dropped, what watching cost, samples a full disk kept from disk."""
    if copy is not None:
        obs.sampling["target_log"] = dict(vars(copy.stats()))
    stats = obs.sampling.get("target_log")
    notes = output_notes(stats if isinstance(stats, dict) else None, log_max_mb, costs)
    unflushed = obs.sampling.get("samples_unflushed")
    if isinstance(unflushed, int) and unflushed:
        notes.append(f"{unflushed} sample(s) taken after the disk filled could not be written")
    return notes


def as_disk_full(err: BaseException, run_dir: Path) -> DiskFullError | None:
    """``err`` as a ``DiskFullError`` when it is one or an ``ENOSPC`` / ``EDQUOT``; else None."""
    if isinstance(err, DiskFullError):
        return err
    if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
        return DiskFullError(f"the disk under {run_dir} is full ({os.strerror(err.errno)}): the soak stopped",
                             path=str(run_dir))
    return None


def tell_disk_full(e: DiskFullError, run_dir: Path) -> DiskFullError:
    """The error's message completed with what to do next (one line)."""
    e.run_dir = str(run_dir)
    if "soak analyze" not in e.message:
        e.message = (f"{e.message}; the target was stopped. Free space under {run_dir.parent}, then run: "
                     f"soak analyze {run_dir}")
    return e

"""Soak C on the real system: several named processes, each sampled and judged on its own.

A run with ``targets`` starts its processes in order (:class:`~soaklib.proc.targets.TargetGroup`):
a process without ``command`` is the reference program of its name (``orchestrator``:
:mod:`soaklib.sim.orchestrator`; ``watcher``: the reference WATCHER daemon polling the
orchestrator's approvals and leaving ``new_draw.flag`` to it). Each process logs to
``target-{name}.log`` in the run folder and is sampled as its own tree, in columns of its own:
``proc_{name}_alive``, ``proc_{name}_tree_rss_bytes``, ``proc_{name}_tree_num_fds``,
``proc_{name}_threads``, ... (one sample row per tick, as in every run: a ``process`` key
would double the rows and every existing reader of the samples). The run-wide process columns
(``rss_bytes``, ``tree_rss_bytes``, ...) are those of the first process, so a single-process run
is unchanged. Per-process rows: memory growth, FD range, threads, tracebacks and the halt.
"""
from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from soaklib.analysis import Criterion
from soaklib.analysis.criteria import BOUNDS_SUFFIX
from soaklib.analysis.growth import fd_stability, judged_bounds, memory_growth
from soaklib.analysis.units import finite_or_none as _num
from soaklib.errors import ParameterError
from soaklib.observe.sources import BOOL, F64, I64, Column, Tick, columns
from soaklib.params import ProcessParams, SoakParams
from soaklib.proc.targets import ProcessSpec
from soaklib.proc.tree import ProcessTree
from soaklib.sim.orchestrator import knob_flags as orchestrator_knobs
from soaklib.sim.watcher import knob_flags as watcher_knobs

if TYPE_CHECKING:
    from soaklib.runs import Run
    from soaklib.soak.plan import RunPlan

REFERENCE_PROGRAMS = {"orchestrator": "soaklib.sim.orchestrator", "watcher": "soaklib.sim.watcher"}
REFERENCE_HALT_FILE = "agent_halt"  # project-local: the operator's /tmp/agent_halt is never touched
_HARNESS_FLAGS = {"project_dir", "daemon", "once", "status", "clear_halt", "json", "halt_file", "policies", "halt",
                  "stop", "process_requests", "profile", "llm_url", "approvals", "no_draws"}
PROCESS_METRICS = ("alive", "rss_bytes", "tree_rss_bytes", "tree_num_fds", "threads", "tree_cpu_pct")
_TYPES = {"alive": (BOOL, "bool"), "rss_bytes": (I64, "bytes"), "tree_rss_bytes": (I64, "bytes"),
          "tree_num_fds": (I64, "count"), "threads": (I64, "count"), "tree_cpu_pct": (F64, "%")}
TRACEBACK_RE = re.compile(r"Traceback \(most recent call last\)")


def column(name: str, metric: str) -> str:
    """The sample column of one process's metric: ``proc_{name}_{metric}``."""
    return f"proc_{name}_{metric}"


def process_log(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / f"target-{name}.log"


# --------------------------------------------------------------------------- planning


def is_reference(p: ProcessParams) -> bool:
    return p.command is None and p.pid is None and p.match is None


def knob_argv(p: ProcessParams) -> list[str]:
    """The reference program's knobs (``sim``) as flags; unknown knobs are refused (exit 2)."""
    if p.sim and not is_reference(p):
        raise ParameterError(f"targets[{p.name}].sim: knobs apply to a reference program only (no command/pid/match)",
                             key=f"targets.{p.name}.sim")
    if not p.sim:
        return []
    if p.name not in REFERENCE_PROGRAMS:
        raise ParameterError(f"targets[{p.name}]: no reference program of that name; name it one of "
                             f"{', '.join(REFERENCE_PROGRAMS)} or give its command", key=f"targets.{p.name}")
    known = orchestrator_knobs() if p.name == "orchestrator" else watcher_knobs()
    argv: list[str] = []
    for name, value in p.sim.items():
        key = name.replace("-", "_")
        if key not in known or key in _HARNESS_FLAGS or key == "help":
            allowed = sorted(k for k in known if k not in _HARNESS_FLAGS and k != "help")
            raise ParameterError(f"targets[{p.name}].sim.{name}: unknown knob; allowed are {', '.join(allowed)}",
                                 key=f"targets.{p.name}.sim.{name}", value=value)
        if value is True:
            argv.append(known[key])
        elif value is not False and value is not None:
            argv += [known[key], str(value)]
    return argv


def check_targets(params: SoakParams) -> None:
    """Refuse before anything starts: a reference process of an unknown name, unknown knobs."""
    for p in params.targets:
        if is_reference(p) and p.name not in REFERENCE_PROGRAMS:
            raise ParameterError(f"targets[{p.name}] has no command and there is no reference program of that name: "
                                 f"give its command or name it one of {', '.join(REFERENCE_PROGRAMS)}",
                                 key=f"targets.{p.name}.command")
        knob_argv(p)


def reference_argv(p: ProcessParams, project_dir: Path, llm_url: str | None) -> list[str]:
    halt = str(project_dir / REFERENCE_HALT_FILE)
    argv = [sys.executable, "-m", REFERENCE_PROGRAMS[p.name], "--project-dir", str(project_dir), "--daemon",
            "--halt-file", halt]
    if p.name == "watcher":
        argv += ["--profile", "watcher-v2", "--approvals", "--no-draws"] + (["--llm-url", llm_url] if llm_url else [])
    return argv + knob_argv(p)


def process_specs(params: SoakParams, plan: RunPlan, llm_url: str | None) -> list[ProcessSpec]:
    """The processes of the run, in start order."""
    specs = []
    for p in params.targets:
        cwd = plan.project_dir if p.cwd is None else (Path(p.cwd) if Path(p.cwd).is_absolute() else plan.project_dir / p.cwd)
        argv = reference_argv(p, plan.project_dir, llm_url) if is_reference(p) else (list(p.command) if p.command else None)
        specs.append(ProcessSpec(p.name, argv, cwd, dict(p.env), p.pid, p.match, p.halt.method, p.halt.command,
                                 p.halt.flag, p.halt.timeout_s, process_log(plan.run_dir, p.name)))
    return specs


# --------------------------------------------------------------------------- sampling


class ProcessGroupSource:
    """Each named process's tree, in columns of its own (``proc_{name}_{metric}``)."""

    name = "processes"

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self.trees = {n: ProcessTree() for n in self.pids}
        self.columns: tuple[Column, ...] = columns(
            [(column(n, m), *_TYPES[m]) for n in self.pids for m in PROCESS_METRICS])

    def read(self, tick: Tick) -> Mapping[str, Any]:
        row: dict[str, Any] = {}
        for n, pid in self.pids.items():
            got = self.trees[n].read(pid)
            row.update({column(n, m): got.get(m) for m in PROCESS_METRICS})
        return row


# --------------------------------------------------------------------------- judging


_MEM = ("Memory grows in this process: compare its proc_{n}_tree_rss_bytes with the other process's; "
        "a steady slope after the warm-up is a leak (tracemalloc / objgraph in that program).")


def process_criteria(names: list[str], *, optional: bool = False) -> list[Criterion]:
    """Per-process rows: memory growth, FD range, threads, tracebacks and the halt of each process."""
    rows: list[Criterion] = []
    for n in names:
        rows += [
            Criterion(f"{n}_memory_growth_mb", f"{n}: memory growth < 100 MB over 2 hours (fail: > 300 MB)", "MiB",
                      100.0, 300.0, "max", per_hours=2.0, triage=_MEM.format(n=n), optional=optional),
            Criterion(f"{n}_fd_range", f"{n}: file descriptors stable ±5", "FDs", 5, 20, "max", optional=optional,
                      triage=f"FDs of {n} change: list /proc/<pid>/fd of that process at two times."),
            Criterion(f"{n}_threads_range", f"{n}: threads stable ±2", "threads", 2, 8, "max", optional=optional,
                      triage=f"Threads of {n} grow: py-spy dump the process and look for threads started per cycle."),
            Criterion(f"{n}_errors", f"{n}: 0 tracebacks in its log", "count", 0, 0, "eq", optional=optional,
                      triage=f"Read the first traceback in target-{n}.log in the run folder."),
            Criterion(f"{n}_halt_s", f"{n}: stops within 30 s of the halt request" + (
                      " (it reads SIGTERM after its poll sleep: up to one poll interval)" if n == "orchestrator" else ""),
                      "s", 30.0, 30.0, "max",
                      optional=optional, triage=f"{n} did not stop in time: its halt row's note says how it was asked "
                      "(SIGTERM, flag or command); a daemon that reads SIGTERM only after its poll sleep needs a "
                      "poll interval under 30 s."),
        ]
    return rows


def count_tracebacks(path: Path) -> int | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return sum(1 for line in fh if TRACEBACK_RE.search(line))
    except OSError:
        return None


def observe_processes(run: Run, names: list[str], warmup_s: float, duration_h: float,
                      halts: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Observed values of the per-process rows, from the samples, the logs and the halts."""
    s: pd.DataFrame = run.samples
    out: dict[str, Any] = {}
    by_name = {h.get("name"): h for h in halts}
    for n in names:
        alive_col = column(n, "alive")
        alive = s[s[alive_col].fillna(False).astype(bool)] if alive_col in s else s.iloc[0:0]
        rss, fds, threads = column(n, "tree_rss_bytes"), column(n, "tree_num_fds"), column(n, "threads")
        mem = (memory_growth(alive, rss, warmup_s=warmup_s, verdict="segmented")
               if rss in alive and alive[rss].notna().sum() > 1 else None)
        slope = _num(mem["slope_mb_per_h"]) if mem else None
        out[f"{n}_memory_growth_mb"] = slope * duration_h if slope is not None else None
        bounds = judged_bounds(mem)
        if bounds is not None:  # judged like the run's memory rows: FAIL and PASS bounds
            out[f"{n}_memory_growth_mb{BOUNDS_SUFFIX}"] = [bounds[0] * duration_h, bounds[1] * duration_h]
        out[f"{n}_memory_raw_mb"] = _num(mem["raw_growth_mb"]) if mem else None
        out[f"{n}_rss_mb_first"] = _num(alive[rss].dropna().iloc[0] / 2**20) if mem else None
        out[f"{n}_rss_mb_last"] = _num(alive[rss].dropna().iloc[-1] / 2**20) if mem else None
        fd = fd_stability(alive, fds, warmup_s=warmup_s) if fds in alive and alive[fds].notna().sum() > 1 else None
        out[f"{n}_fd_range"] = fd["fd_range"] if fd else None
        th = fd_stability(alive, threads, warmup_s=warmup_s, tolerance=2) \
            if threads in alive and alive[threads].notna().sum() > 1 else None
        out[f"{n}_threads_range"] = th["fd_range"] if th else None
        out[f"{n}_errors"] = count_tracebacks(process_log(run.path, n))
        h = by_name.get(n) or {}
        out[f"{n}_halt_s"] = h.get("halt_s") if h and not h.get("forced") else None
    return out


def halt_paths(params: SoakParams, project_dir: Path) -> list[Path]:
    """Halt files the soak may leave behind: the orchestrator's ``.chapter13_halt`` and each flag halt."""
    from soaklib.watcher.orchestrator import CHAPTER13_HALT

    out = [project_dir / CHAPTER13_HALT] if any(p.name == "orchestrator" for p in params.targets) else []
    for p in params.targets:
        if p.halt.method == "flag" and p.halt.flag:
            flag = Path(p.halt.flag)
            out.append(flag if flag.is_absolute() else project_dir / flag)
    return out

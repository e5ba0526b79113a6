"""A target of several named processes: started in order, halted in reverse, never left behind.

Soak C on the real system runs two programs side by side (the Chapter 13 orchestrator and
the WATCHER daemon). :class:`TargetGroup` holds one :class:`~soaklib.proc.target.Target` per
named process, each started (in its own session, so its tree can always be found) or
attached to by pid / pattern. It reads as a single target where the harness needs one —
``pid`` is the first process's, ``poll`` reports the first member seen gone, ``stop`` and
``terminate_tree`` reach every member — and adds per-process halts (:meth:`halt_all`, in
reverse start order, each with its own method and timeout). A member that fails to start
stops the ones already started before the error goes up.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

from soaklib.errors import ParameterError
from soaklib.proc.target import ExitInfo, HaltMethod, HaltResult, Target
from soaklib.store import utc_now


@dataclass(frozen=True)
class ProcessSpec:
    """One named process of a target group: how to start (or find) it and how to halt it."""

    name: str
    argv: list[str] | None = None  # None: attach by pid / match
    cwd: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    pid: int | None = None
    match: str | None = None
    halt_method: HaltMethod = "signal"
    halt_command: list[str] | None = None
    halt_flag: str | None = None
    halt_timeout_s: float = 30.0
    log_path: Path | None = None


@dataclass(frozen=True)
class ProcessHalt:
    """The halt of one member: its name, pid, the bound it was given and the outcome."""

    name: str
    pid: int
    timeout_s: float
    result: HaltResult

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "pid": self.pid, "timeout_s": self.timeout_s, **self.result.to_dict()}


class TargetGroup:
    """Named processes under test (see the module docstring). Use as a context manager."""

    def __init__(self, members: list[tuple[ProcessSpec, Target]]) -> None:
        if not members:
            raise ParameterError("a target group needs at least one process", key="targets")
        self.members = members
        self.exited_name: str | None = None
        self.log_copy: Any = None  # each member's output goes to its own log file

    @classmethod
    def start(cls, specs: list[ProcessSpec]) -> TargetGroup:
        """Start (or attach to) each process in order; on an error stop the started ones, then raise."""
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ParameterError(f"targets name a process twice: {names}", key="targets")
        members: list[tuple[ProcessSpec, Target]] = []
        try:
            for spec in specs:
                if spec.argv is None:
                    target = Target.attach(pid=spec.pid, match=spec.match)
                else:
                    target = Target.start(spec.argv, cwd=spec.cwd, env=spec.env, log_path=spec.log_path)
                members.append((spec, target))
        except BaseException:
            if members:
                cls(members).terminate_tree(2.0)
            raise
        return cls(members)

    # ------------------------------------------------------------------ as one target

    @property
    def names(self) -> list[str]:
        return [s.name for s, _ in self.members]

    def member(self, name: str) -> Target:
        for spec, target in self.members:
            if spec.name == name:
                return target
        raise ParameterError(f"no process named {name!r} in the target (processes: {', '.join(self.names)})",
                             key="targets", value=name)

    def pids(self) -> dict[str, int]:
        return {spec.name: target.pid for spec, target in self.members}

    @property
    def pid(self) -> int:
        return self.members[0][1].pid

    @property
    def argv(self) -> list[str]:
        return self.members[0][1].argv

    @property
    def started(self) -> bool:
        return any(t.started for _, t in self.members)

    def poll(self) -> ExitInfo | None:
        """None while every member runs; the exit of the first member seen gone otherwise."""
        for spec, target in self.members:
            info = target.poll()
            if info is not None:
                self.exited_name = self.exited_name or spec.name
                return info
        return None

    def is_running(self) -> bool:
        return self.poll() is None

    def tree(self) -> list[psutil.Process]:
        return [p for _, t in self.members for p in t.tree()]

    # ------------------------------------------------------------------ halting

    def halt_all(self, project_dir: str | os.PathLike[str] | None = None, *, grace_s: float = 2.0,
                 max_timeout_s: float | None = None) -> list[ProcessHalt]:
        """Halt each member in reverse start order with its own method and timeout (bounded by
        ``max_timeout_s``); an attached member is asked too (its halt is what is measured)."""
        out: list[ProcessHalt] = []
        for spec, target in reversed(self.members):
            timeout = spec.halt_timeout_s if max_timeout_s is None else min(spec.halt_timeout_s, max_timeout_s)
            result = target.halt(spec.halt_method, command=spec.halt_command, flag=spec.halt_flag,
                                 timeout_s=timeout, project_dir=spec.cwd or project_dir, grace_s=grace_s)
            out.append(ProcessHalt(spec.name, target.pid, timeout, result))
        return out

    def stop(self, timeout_s: float = 10.0, grace_s: float = 5.0) -> HaltResult:
        """SIGTERM every started member in reverse order (each waited up to ``timeout_s``)."""
        requested = utc_now()
        results = [t.stop(timeout_s=timeout_s, grace_s=grace_s) for _, t in reversed(self.members) if t.started]
        if not results:
            return HaltResult("signal", requested, None, False, False, None, "no started process to stop")
        times = [r.halt_s for r in results]
        errors = [f"{spec.name}: {r.error}" for (spec, _), r in zip(reversed(self.members), results) if r.error]
        return HaltResult("signal", requested, None if None in times else max(t for t in times if t is not None),
                          all(r.exited for r in results), any(r.forced for r in results), results[-1].returncode,
                          "; ".join(errors) or None)

    def terminate_tree(self, grace_s: float = 5.0) -> list[int]:
        """Terminate every started member's tree, group and session (reverse order); the pids signalled."""
        signalled: list[int] = []
        for _, target in reversed(self.members):
            if target.started:
                signalled += target.terminate_tree(grace_s)
        return sorted(signalled)

    def __enter__(self) -> TargetGroup:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.terminate_tree()

    def __repr__(self) -> str:
        return "<TargetGroup " + ", ".join(f"{s.name}={t.pid}" for s, t in self.members) + ">"

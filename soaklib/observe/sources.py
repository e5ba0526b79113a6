"""Metric sources: what one sample reads, behind one small interface.

A source has a ``name``, the ``columns`` it fills (each with an Arrow type and a unit) and a
``read(tick)`` that returns them. The :class:`~soaklib.observe.sampler.Sampler` reads its
sources in order into one flat row; a source that fails makes its columns null in that row,
its reason noted once (degrade per metric, never per sample). ``tick.metric`` gives a
source the same per-metric degradation for the parts it reads (see the WATCHER source).
A source that reads growing files reports ``bytes_read`` (the sample's self-check).

The sources here know nothing of the WATCHER protocol: that one lives in
:mod:`soaklib.watcher.source`, and a soak composes the sources it needs.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa

from soaklib.observe.health import HealthProbe
from soaklib.observe.readers import LogScanner, StatCache, check_probe, dir_bytes, json_probe
from soaklib.proc.tree import TREE_KEYS, ProcessTree

I64, F64, BOOL, STR = pa.int64(), pa.float64(), pa.bool_(), pa.string()


@dataclass(frozen=True)
class Column:
    """One column of a sample row: name, Arrow type and unit (``bytes``, ``count``, ``s``,
    ``ms``, ``%``, ``bool``, ``HTTP status``, or ``""`` for a label)."""

    name: str
    type: pa.DataType
    unit: str = ""


def columns(spec: Iterable[tuple[str, pa.DataType, str]]) -> tuple[Column, ...]:
    return tuple(Column(n, t, u) for n, t, u in spec)


@dataclass
class Tick:
    """What one sample knows while its sources are read."""

    root_pid: int | None
    t_mono: float
    notes: dict[str, str]  # metric → first reason it could not be read (shared by all ticks)
    pids: list[int] = field(default_factory=list)  # the target's tree, once the process source read it
    final: bool = False  # the last words: the target has exited, read everything it left

    def metric(self, name: str, keys: Iterable[str], read: Callable[[], Mapping[str, Any]]) -> dict[str, Any]:
        """``read()`` restricted to ``keys``; on any error the keys are null and the reason noted once."""
        keys = tuple(keys)
        try:
            out = read()
            return {k: out.get(k) for k in keys}
        except Exception as e:
            self.notes.setdefault(name, f"{type(e).__name__}: {e}")
            return dict.fromkeys(keys)


@runtime_checkable
class Source(Protocol):
    """A metric source (see the module docstring)."""

    name: str
    columns: tuple[Column, ...]

    def read(self, tick: Tick) -> Mapping[str, Any]: ...


PROCESS_COLUMNS = columns([
    ("alive", BOOL, "bool"), ("rss_bytes", I64, "bytes"), ("vms_bytes", I64, "bytes"), ("uss_bytes", I64, "bytes"),
    ("threads", I64, "count"), ("num_fds", I64, "count"), ("cpu_pct", F64, "%"), ("children", I64, "count"),
    ("tree_rss_bytes", I64, "bytes"), ("tree_num_fds", I64, "count"), ("tree_cpu_pct", F64, "%"),
])
assert tuple(c.name for c in PROCESS_COLUMNS[1:]) == TREE_KEYS


class ProcessSource:
    """The target's process tree from ``/proc`` (root, and summed over its descendants)."""

    name = "process"
    columns = PROCESS_COLUMNS

    def __init__(self, *, uss: bool = False) -> None:
        self.tree = ProcessTree(uss=uss)

    def read(self, tick: Tick) -> Mapping[str, Any]:
        row = self.tree.read(tick.root_pid)
        tick.pids = list(self.tree.pids)
        return row


GPU_COLUMNS = columns([
    ("gpu_available", BOOL, "bool"), ("gpu_used_bytes", I64, "bytes"), ("gpu_total_bytes", I64, "bytes"),
    ("gpu_util_pct", F64, "%"), ("gpu_target_bytes", I64, "bytes"),
])


class GpuSource:
    """Device memory and the VRAM of the target's tree, from an NVML reader (``read(pids)``)."""

    name = "gpu"
    columns = GPU_COLUMNS

    def __init__(self, reader: Any) -> None:
        self.reader = reader

    def read(self, tick: Tick) -> Mapping[str, Any]:
        return dict(self.reader.read(tick.pids))


class DiskSource:
    """Free disk under ``base`` and the bytes under the watched folders (the target's output
    copy counted as all the target wrote, see :meth:`attach_copy`).

    The folders are walked at most every ``interval_s`` (a walk costs one stat per file, and
    an archive only grows during a soak).
    """

    name = "disk"
    columns = columns([("disk_free_bytes", I64, "bytes"), ("watched_bytes", I64, "bytes")])

    def __init__(self, base: Path, watch_paths: Iterable[Path], interval_s: float = 10.0) -> None:
        self.base = base
        self.watch_paths = list(watch_paths)
        self.interval_s = interval_s
        self._watched: tuple[float, int] | None = None
        self.copy: Any = None  # a bounded copy of the target's output, counted by what the target wrote

    def attach_copy(self, copy: Any) -> None:
        """Count a bounded copy of the target's output (a :class:`~soaklib.proc.logcopy.LogCopy`)
        as every byte the target wrote, not as the copy's size: a flood is growth."""
        path = Path(copy.path).absolute()
        self.watch_paths = [p for p in self.watch_paths if Path(p).absolute() != path]
        self._watched = None
        self.copy = copy

    def read(self, tick: Tick) -> Mapping[str, Any]:
        row = tick.metric("disk_free", ("disk_free_bytes",), lambda: {"disk_free_bytes": shutil.disk_usage(self.base).free})
        if self._watched is None or tick.t_mono - self._watched[0] >= self.interval_s:
            self._watched = (tick.t_mono, dir_bytes(self.watch_paths))
        row["watched_bytes"] = self._watched[1] + (int(self.copy.bytes_total) if self.copy is not None else 0)
        return row


class LogSource:
    """Error and traceback lines of the target's log, counted incrementally.

    ``new_error_lines`` are the error lines the last read kept first (for events);
    ``heuristics`` counts heuristic-fallback lines when a regex for them is given. A log
    that is a bounded copy of the target's output (:meth:`attach_copy`) is counted as the
    copy receives it, so the counts cover what the copy drops. ``bytes_read`` is what the
    last read took in (the copy's bytes are claimed by the sample that reads them); a
    ``final`` tick reads every file to its end.
    """

    name = "logs"
    columns = columns([("log_errors", I64, "count"), ("log_tracebacks", I64, "count")])

    def __init__(self, paths: Iterable[Path], error_regex: str, traceback_regex: str, *,
                 heuristic_regex: str | None = None, from_end: bool = True) -> None:
        self.scanner = LogScanner(list(paths), error_regex, traceback_regex, heuristic_regex=heuristic_regex,
                                  from_end=from_end)
        self.new_error_lines: list[str] = []
        self._claimed = self.scanner.bytes_read

    def attach_copy(self, copy: Any) -> None:
        """Count a :class:`~soaklib.proc.logcopy.LogCopy`'s lines instead of re-reading its file."""
        path = Path(copy.path).absolute()
        self.scanner.readers = [r for r in self.scanner.readers if Path(r.path).absolute() != path]
        copy.attach(self.scanner.feed)

    @property
    def bytes_read(self) -> int:
        return self._claimed

    @property
    def heuristics(self) -> int:
        return self.scanner.heuristics

    @property
    def first_errors(self) -> list[str]:
        return self.scanner.first_errors

    def read(self, tick: Tick) -> Mapping[str, Any]:
        self.new_error_lines = []
        self.new_error_lines = self.scanner.scan(drain=tick.final)
        self._claimed = self.scanner.bytes_read
        return {"log_errors": self.scanner.errors, "log_tracebacks": self.scanner.tracebacks}


def _state_of(path: Path) -> str | None:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    state = data.get("state") if isinstance(data, dict) else None
    return str(state) if state is not None else None


class StateSource:
    """The daemon's own state (``state`` in its state file: RUNNING, HALTED, ...), re-read
    only when the file changes; no file, no value."""

    name = "state"
    columns = columns([("daemon_state", STR, "")])

    def __init__(self, path: Path | None, cache: StatCache | None = None) -> None:
        self.path = path
        self.cache = cache or StatCache()

    def read(self, tick: Tick) -> Mapping[str, Any]:
        if self.path is None:
            return {}
        return {"daemon_state": self.cache.get(self.path, "daemon_state", _state_of)}


class HealthSource:
    """The latest answer of an LLM health probe (status 0 = no answer)."""

    name = "llm"
    columns = columns([("llm_status", I64, "HTTP status"), ("llm_latency_ms", F64, "ms")])

    def __init__(self, probe: HealthProbe | None) -> None:
        self.probe = probe

    def read(self, tick: Tick) -> Mapping[str, Any]:
        if self.probe is None:
            return {}
        status, latency_ms, _ = self.probe.latest()
        return {"llm_status": status, "llm_latency_ms": latency_ms}


class ProbeSource:
    """JSON probes: ``probe_<name>`` = a value read from a JSON file of the target, re-parsed
    only when the file's stat changes (``{name: {file, path, reduce}}``)."""

    name = "probes"

    def __init__(self, probes: Mapping[str, Mapping[str, Any]], base: Path, cache: StatCache | None = None) -> None:
        self.probes = dict(probes)
        for name, spec in self.probes.items():
            check_probe(name, spec)
        self.cache = cache or StatCache()
        self.paths = {name: p if (p := Path(spec["file"])).is_absolute() else base / p
                      for name, spec in self.probes.items()}
        self.columns = columns((f"probe_{n}", F64, "") for n in self.probes)

    def _one(self, name: str, spec: Mapping[str, Any]) -> float | None:
        path, reduce = spec.get("path"), spec.get("reduce", "value")
        value: float | None = self.cache.get(self.paths[name], f"probe:{path}:{reduce}",
                                             lambda q: json_probe(q, path, reduce))
        return value

    def _reading(self, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        return {"v": self._one(name, spec)}

    def read(self, tick: Tick) -> Mapping[str, Any]:
        return {f"probe_{n}": tick.metric(f"probe_{n}", ("v",), functools.partial(self._reading, n, s))["v"]
                for n, s in self.probes.items()}


class HarnessSource:
    """The harness's own memory and CPU (the observer's self-check), read the cheap way."""

    name = "harness"
    columns = columns([("harness_rss_bytes", I64, "bytes"), ("harness_cpu_pct", F64, "%")])

    def __init__(self) -> None:
        self._me = ProcessTree()
        self._me.read_one(os.getpid())

    def read(self, tick: Tick) -> Mapping[str, Any]:
        me = self._me.read_one(os.getpid(), fds=False)
        return {"harness_rss_bytes": me["rss_bytes"], "harness_cpu_pct": me["cpu_pct"]}

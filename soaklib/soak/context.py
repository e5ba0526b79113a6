"""What a soak driver works with: the context of a running soak, its events, the Driver
protocol, and the observations a soak leaves in ``observations.json``.

A driver implements ``setup``, ``tick`` and ``finish``; it is constructed without arguments
and gets everything through the :class:`SoakContext`. ``finish`` returns the driver's own
observed values (JSON-ready), and a driver that halts the target records the
:class:`~soaklib.proc.target.HaltResult` with :meth:`SoakContext.record_halt`.
"""
from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Union

import pandas as pd
import pyarrow as pa

from soaklib.observe.recorder import Recorder
from soaklib.params import SoakParams
from soaklib.parts import host_folder
from soaklib.proc.target import HaltResult, Target
from soaklib.store import atomic_write_json, read_json_object, utc_now, write_table
from soaklib.watcher.protocol import Profile

JSONValue = Union[None, bool, int, float, str, list["JSONValue"], dict[str, "JSONValue"]]  # noqa: UP007 - a recursive alias needs Union
JSONObject = dict[str, JSONValue]

OBSERVATIONS = "observations.json"
EVENTS = "events.parquet"
EVENT_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("ts", pa.timestamp("us", tz="UTC")), ("t_s", pa.float64()),
    ("kind", pa.string()), ("message", pa.string()), ("data", pa.string()),
])


class Events:
    """The events of a run (probe injected, halt requested, target exited, LLM down/up,
    first error lines), rewritten atomically at each flush as one file of the host's
    partition, ``events/host={host}/part-00000.parquet`` (``events.parquet`` when no host is
    given: the first layout)."""

    def __init__(self, run_dir: Path, run_id: str, t0: float, host: str | None = None) -> None:
        self.path = run_dir / EVENTS if host is None else host_folder(run_dir / "events", host) / "part-00000.parquet"
        self.run_id = run_id
        self.t0 = t0
        self.rows: list[dict[str, Any]] = []

    def add(self, kind: str, at_s: float | None = None, **fields: Any) -> None:
        """Record an event (``message`` is its text, other fields go to its JSON ``data``)."""
        message = str(fields.pop("message", "") or "")
        self.rows.append({
            "run_id": self.run_id, "ts": utc_now(),
            "t_s": float(time.monotonic() - self.t0 if at_s is None else at_s), "kind": kind,
            "message": message, "data": json.dumps(fields, default=str, sort_keys=True),
        })

    def flush(self) -> None:
        write_table(self.path, pa.Table.from_pylist(self.rows, schema=EVENT_SCHEMA))


@dataclass
class SoakContext:
    """What a driver may use: parameters, folders, the protocol profile, the target, events."""

    params: SoakParams
    run_id: str
    run_dir: Path
    project_dir: Path
    profile: Profile
    target: Target
    t0: float
    echo: Callable[[str], None]
    stop_event: threading.Event
    events: Events
    recorder: Recorder | None = None
    reference: bool = False  # the target is the built-in reference daemon
    llm_url: str | None = None  # base URL the daemon uses (the stub's, when the harness started one)
    halt: HaltResult | None = None

    def elapsed_s(self) -> float:
        """Seconds since the soak started (monotonic)."""
        return time.monotonic() - self.t0

    def event(self, kind: str, **fields: Any) -> None:
        """Record an event now (``message`` is its text, other fields its JSON ``data``)."""
        self.events.add(kind, **fields)

    def samples(self) -> pd.DataFrame:
        """Every sample so far: the flushed part files plus the rows not yet flushed."""
        return self.recorder.frame() if self.recorder is not None else pd.DataFrame()

    def record_halt(self, result: HaltResult) -> None:
        """Keep the outcome of halting the target (soak A's ``halt_s`` row)."""
        self.halt = result


class Driver(Protocol):
    """The soak-specific part of a soak; see the module docstring."""

    soak: str

    def setup(self, ctx: SoakContext) -> None: ...

    def tick(self, ctx: SoakContext, row: dict[str, Any]) -> bool: ...

    def finish(self, ctx: SoakContext) -> JSONObject: ...


@dataclass
class SoakObservations:
    """``observations.json``: what the harness and the driver saw, for the signoff.

    The file keeps its keys (``soak observations notes halt target_exit interrupted error
    preflight_failed reset gpu_notes llm sampling sampler_notes first_error_lines``, and
    ``limits stop_on_fail`` added);
    ``observations`` holds the driver's own values.
    """

    soak: str
    observations: JSONObject = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    halt: JSONObject | None = None
    target_exit: JSONObject | None = None
    interrupted: bool = False
    error: str | None = None
    preflight_failed: list[JSONObject] = field(default_factory=list)
    reset: JSONObject = field(default_factory=dict)
    gpu_notes: list[str] = field(default_factory=list)
    llm: JSONObject = field(default_factory=dict)
    sampling: JSONObject = field(default_factory=dict)
    sampler_notes: dict[str, str] = field(default_factory=dict)
    first_error_lines: list[str] = field(default_factory=list)
    limits: JSONObject = field(default_factory=dict)  # the target's memory and FD limits at start (proc.limits)
    stop_on_fail: JSONObject | None = None  # the running verdict: enabled, stopped, when, on which row

    def to_json(self) -> JSONObject:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: JSONObject) -> SoakObservations:
        """Read the JSON form; unknown keys are ignored (written by a newer version)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})  # type: ignore[arg-type]

    def write(self, run_dir: Path) -> Path:
        return atomic_write_json(run_dir / OBSERVATIONS, self.to_json())

    @classmethod
    def read(cls, run_dir: Path) -> SoakObservations | None:
        """The observations of a run folder; None when the soak never wrote them."""
        data = read_json_object(run_dir / OBSERVATIONS)
        return cls.from_json(data) if data is not None else None

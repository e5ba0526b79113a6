"""One sample of everything a soak watches, at a cost that does not grow with the logs.

A :class:`Sampler` reads its metric sources (:mod:`soaklib.observe.sources`) in order into
one flat row with a fixed Arrow schema: ``run_id host ts t_s lag_s``, then each source's
columns, then the sample's own cost (``sample_cost_ms``, ``bytes_read``). A source that
fails is null in that row, its reason noted once (``Sampler.notes``): nothing the target
does makes a sample raise. UTC timestamps appear only as data; the schedule and durations
run on the monotonic clock.
"""
from __future__ import annotations

import functools
import socket
import time
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa

from soaklib.observe.sources import F64, I64, STR, Column, Source, Tick
from soaklib.store import utc_now

BASE_COLUMNS = (Column("run_id", STR), Column("host", STR), Column("ts", pa.timestamp("us", tz="UTC")),
                Column("t_s", F64, "s"), Column("lag_s", F64, "s"))
COST_COLUMNS = (Column("sample_cost_ms", F64, "ms"), Column("bytes_read", I64, "bytes"))


def schema_of(sources: Iterable[Source]) -> pa.Schema:
    """The Arrow schema of a row of these sources (base columns, sources in order, cost)."""
    cols = [*BASE_COLUMNS, *(c for s in sources for c in s.columns), *COST_COLUMNS]
    return pa.schema([pa.field(c.name, c.type) for c in cols])


def units_of(sources: Iterable[Source]) -> dict[str, str]:
    """Column → unit, for every column a sampler of these sources writes."""
    return {c.name: c.unit for c in (*BASE_COLUMNS, *(c for s in sources for c in s.columns), *COST_COLUMNS)}


class Sampler:
    """Builds one row per call to :meth:`sample` from ``sources`` (see the module docstring)."""

    def __init__(self, sources: Sequence[Source], *, run_id: str = "", host: str | None = None,
                 t0: float | None = None) -> None:
        self.sources = list(sources)
        self.run_id = run_id
        self.host = host or socket.gethostname()
        self.t0 = time.monotonic() if t0 is None else t0
        self.notes: dict[str, str] = {}  # metric → first reason it could not be read
        self.schema = schema_of(self.sources)
        self._names = tuple(self.schema.names)
        self._ints = {f.name for f in self.schema if pa.types.is_integer(f.type)}
        self._readers = [(s, tuple(c.name for c in s.columns)) for s in self.sources]

    def _bytes_read(self) -> int:
        return sum(getattr(s, "bytes_read", 0) for s in self.sources)

    def sample(self, root_pid: int | None, lag_s: float = 0.0, *, final: bool = False) -> dict[str, Any]:
        """One row of every source for the tree of ``root_pid`` (``final``: the target has
        exited; sources read everything it left)."""
        start = time.monotonic()
        bytes_before = self._bytes_read()
        tick = Tick(root_pid, start, self.notes, final=final)
        row: dict[str, Any] = {"run_id": self.run_id, "host": self.host, "ts": utc_now(), "t_s": start - self.t0,
                               "lag_s": lag_s}
        for source, keys in self._readers:
            row.update(tick.metric(source.name, keys, functools.partial(source.read, tick)))
        for k in self._ints & row.keys():
            v = row[k]
            if isinstance(v, float) and v == v and abs(v) != float("inf"):
                row[k] = int(round(v))
        row["bytes_read"] = self._bytes_read() - bytes_before
        row["sample_cost_ms"] = (time.monotonic() - start) * 1000.0
        return {name: row.get(name) for name in self._names}

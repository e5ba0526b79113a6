"""SQL over a run's samples and events with DuckDB: one query over every host of a fleet.

A run's samples are ``samples/host={host}/part-*.parquet`` (hive partitions, one per host)
and, for runs written before the fleet layout, ``samples/part-*.parquet``; events likewise
(``events/host={host}/…`` or ``events.parquet``). :func:`connect` opens an in-memory DuckDB
database with two views, ``samples`` and ``events``, over exactly the files the run's
loader reads (parts that a compaction covers are left out, a part whose footer cannot be read
is skipped and named), so a ``WHERE host = 'h7'`` prunes the other hosts' files and only the
columns a query names are decoded (filter and column pushdown into the parquet scan).

:func:`binned_medians` is the fleet analysis's one pass over the data: per host and time bin,
the median of each column, computed in SQL, at most ``max_bins`` bins per host.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from soaklib.errors import ParameterError
from soaklib.parts import BadPart, dataset_parts

VIEWS = ("samples", "events")
DEFAULT_MAX_BINS = 500  # the Theil-Sen fit is O(n^2) in bins: the same cap as a single run's analysis
#: columns every view has, so a query on an empty run binds
EMPTY_COLUMNS = {"samples": "run_id VARCHAR, host VARCHAR, ts TIMESTAMPTZ, t_s DOUBLE",
                 "events": "run_id VARCHAR, host VARCHAR, ts TIMESTAMPTZ, t_s DOUBLE, kind VARCHAR, "
                           "message VARCHAR, data VARCHAR"}


@dataclass
class RunSql:
    """An open DuckDB connection over one run (views ``samples`` and ``events``)."""

    run_dir: Path
    con: duckdb.DuckDBPyConnection
    files: dict[str, list[str]] = field(default_factory=dict)
    bad_parts: list[BadPart] = field(default_factory=list)

    def sql(self, sql: str, params: list[Any] | None = None) -> pd.DataFrame:
        """The result of ``sql`` as a DataFrame (``?`` placeholders bound from ``params``)."""
        try:
            return self.con.execute(sql, params or []).df()
        except duckdb.Error as e:
            raise ParameterError(f"query failed on run {self.run_dir}: {type(e).__name__}: {e}",
                                 key="sql", value=sql[:200]) from None

    def hosts(self) -> list[str]:
        """The hosts with samples, sorted."""
        return [str(h) for h in self.sql("SELECT DISTINCT host FROM samples WHERE host IS NOT NULL ORDER BY 1")["host"]]

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> RunSql:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _readable(parts: Iterable[tuple[str | None, Path]], bad: list[BadPart]) -> list[tuple[str | None, str]]:
    out = []
    for host, q in parts:
        try:
            pq.read_metadata(q)  # the footer only: a truncated part is skipped, as load_run skips it
            out.append((host, str(q)))
        except (OSError, pa.ArrowException) as e:
            bad.append(BadPart(str(q), f"{type(e).__name__}: {e}"[:300]))
    return out


def _literal(paths: list[str]) -> str:
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


def _view(name: str, parts: list[tuple[str | None, str]]) -> str:
    hive = [p for h, p in parts if h is not None]
    flat = [p for h, p in parts if h is None]
    selects = []
    if hive:
        selects.append(f"SELECT * FROM read_parquet({_literal(hive)}, hive_partitioning = true, union_by_name = true)")
    if flat:
        selects.append(f"SELECT * FROM read_parquet({_literal(flat)}, hive_partitioning = false, union_by_name = true)")
    if not selects:
        return f"CREATE VIEW {name} AS SELECT * FROM (SELECT NULL::VARCHAR AS run_id) WHERE false"
    return f"CREATE VIEW {name} AS " + " UNION ALL BY NAME ".join(selects)


def connect(run_dir: str | os.PathLike[str], *, threads: int | None = None) -> RunSql:
    """A DuckDB connection with views ``samples`` and ``events`` over the run's parquet files."""
    p = Path(run_dir)
    if p.suffix == ".json" and p.is_file():
        p = p.with_suffix("")
    if not p.is_dir():
        raise ParameterError(f"run folder {str(p)!r} does not exist", key="run_dir", value=str(p))
    bad: list[BadPart] = []
    samples = _readable(dataset_parts(p / "samples"), bad)
    events = _readable(dataset_parts(p / "events"), bad)
    if (p / "events.parquet").is_file():
        events += _readable([(None, p / "events.parquet")], bad)
    con = duckdb.connect(":memory:")
    if threads is not None:
        con.execute(f"SET threads = {int(threads)}")
    for name, parts in (("samples", samples), ("events", events)):
        if parts:
            con.execute(_view(name, parts))
        else:
            con.execute(f"CREATE TABLE {name} ({EMPTY_COLUMNS[name]})")
    return RunSql(p, con, {"samples": [f for _, f in samples], "events": [f for _, f in events]}, bad)


def query(run_dir: str | os.PathLike[str], sql: str, params: list[Any] | None = None) -> pd.DataFrame:
    """Run ``sql`` over a run's ``samples`` and ``events`` (views over every host's parquet
    parts, either layout) and return the result as a DataFrame.

    >>> query("outputs/watcher-soak/fleet-a-1", "SELECT host, max(rss_bytes) FROM samples GROUP BY host")
    """
    with connect(run_dir) as db:
        return db.sql(sql, params)


def _ident(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def sample_columns(db: RunSql) -> list[str]:
    """The columns of the ``samples`` view."""
    return [str(c) for c in db.sql("SELECT * FROM samples LIMIT 0").columns]


def binned_medians(db: RunSql, columns: Iterable[str], *, max_bins: int = DEFAULT_MAX_BINS,
                   warmup_s: float = 0.0, alive_only: bool = True) -> tuple[pd.DataFrame, float]:
    """Per host and time bin: the mean ``t_s`` and the median of each column, in SQL.

    Bins are ``bin_s`` wide from each host's first sample after ``warmup_s``, with ``bin_s``
    the longest host's span over ``max_bins`` (so no host has more than ``max_bins`` bins).
    Rows of a dead target (``alive`` false) are left out when the column exists. Returns the
    frame (``host bin t_s n <columns...>``, ordered by host and bin) and ``bin_s``.
    """
    have = set(sample_columns(db))
    cols = [c for c in dict.fromkeys(columns) if c in have and c not in ("host", "t_s")]
    where = ["t_s IS NOT NULL", "host IS NOT NULL"]
    if alive_only and "alive" in have:
        where.append("coalesce(alive, true)")
    cond = " AND ".join(where)
    base = (f"WITH s AS (SELECT host, t_s{''.join(', ' + _ident(c) for c in cols)} FROM samples WHERE {cond}), "
            f"f AS (SELECT host, min(t_s) AS t0 FROM s GROUP BY host), "
            f"w AS (SELECT s.*, s.t_s - f.t0 AS rel FROM s JOIN f USING (host) WHERE s.t_s - f.t0 >= ?)")
    span = db.sql(base + " SELECT max(rel) - min(rel) AS span FROM w", [float(warmup_s)])
    span_s = float(span["span"].iloc[0]) if len(span) and pd.notna(span["span"].iloc[0]) else 0.0
    bin_s = span_s / max_bins if span_s > 0 else 1.0
    meds = "".join(f", median({_ident(c)}) AS {_ident(c)}" for c in cols)
    frame = db.sql(
        base + f" SELECT host, least(CAST(floor((rel - ?) / ?) AS BIGINT), {max_bins - 1}) AS bin, avg(t_s) AS t_s, "
               f"count(*) AS n{meds} FROM w GROUP BY host, bin ORDER BY host, bin",
        [float(warmup_s), float(warmup_s), bin_s])
    return frame, bin_s

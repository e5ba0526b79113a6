"""Parquet part files: the crash-safe sample log of a run.

A run's samples live in a folder of numbered parts, ``part-NNNNN.parquet``, one per flush,
each written to a temporary name and renamed, so a process killed at any moment leaves only
complete parts behind. At the end of a run the parts are compacted into one file named for
the range it replaces, ``part-NNNNN-MMMMM.parquet``; readers ignore a part whose number a
range file covers, so a crash at any point of the compaction (before, between or after the
deletes) never shows a sample twice or loses one.

A part that cannot be read (truncated, corrupted, not parquet) is skipped, never fatal: the
scan returns it as a :class:`BadPart`, with the rows it held when its footer says so.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from soaklib.errors import ParameterError
from soaklib.store import write_table

PART_RE = re.compile(r"^part-(\d{5,})(?:-(\d{5,}))?\.parquet$")
HOST_KEY = "host"  # the hive partition key: ``samples/host={host}/part-*.parquet``
HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class BadPart:
    """A part file that could not be read; ``rows`` is what it held, when known."""

    path: str
    error: str
    rows: int | None = None


@dataclass
class PartScan:
    """The readable parts of a folder as one frame, and the parts that were skipped."""

    frame: pd.DataFrame
    parts: list[Path] = field(default_factory=list)
    bad: list[BadPart] = field(default_factory=list)


def _span(path: Path) -> tuple[int, int] | None:
    m = PART_RE.match(path.name)
    if m is None:
        return None
    first = int(m.group(1))
    return first, int(m.group(2)) if m.group(2) else first


def live_parts(folder: str | Path) -> list[Path]:
    """The part files of ``folder`` that hold the run's rows, in order (covered parts dropped)."""
    p = Path(folder)
    if not p.is_dir():
        return []
    spans = {q: s for q in p.iterdir() if (s := _span(q)) is not None}
    ranges = [s for s in spans.values() if s[0] != s[1]]

    def covered(s: tuple[int, int]) -> bool:
        return any(r != s and r[0] <= s[0] and s[1] <= r[1] for r in ranges)

    return sorted((q for q, s in spans.items() if not covered(s)), key=lambda q: spans[q])


def next_part_number(folder: Path) -> int:
    """The number after every part (single or range) already in ``folder``."""
    spans = [s for q in folder.iterdir() if (s := _span(q)) is not None]
    return max((s[1] for s in spans), default=-1) + 1


class PartWriter:
    """Buffers rows and flushes them as numbered parquet part files (tmp name + rename).

    Numbering continues after the parts already in the folder, so a resumed writer never
    overwrites one.
    """

    def __init__(self, folder: str | Path, schema: pa.Schema | None = None) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.schema = schema
        self._rows: list[dict[str, Any]] = []
        self._next = next_part_number(self.folder)
        self.rows_written = 0
        self.parts_written = 0

    def append(self, row: Mapping[str, Any]) -> None:
        """Buffer one row (a flat mapping of column → scalar)."""
        self._rows.append(dict(row))

    def extend(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Buffer many rows."""
        self._rows.extend(dict(r) for r in rows)

    @property
    def pending(self) -> int:
        """Rows buffered and not yet on disk."""
        return len(self._rows)

    def flush(self) -> Path | None:
        """Write the buffered rows as the next part file; None when nothing was buffered."""
        if not self._rows:
            return None
        table = pa.Table.from_pylist(self._rows, schema=self.schema)
        target = self.folder / f"part-{self._next:05d}.parquet"
        write_table(target, table)
        self._next += 1
        self.rows_written += len(self._rows)
        self.parts_written += 1
        self._rows = []
        return target


def _scan(folder: str | Path) -> tuple[pa.Table | None, list[Path], list[BadPart]]:
    """One Arrow dataset scan of the readable parts (schemas unified; per-file reads only
    when their types cannot be unified), the parts read, and the parts skipped."""
    good: list[Path] = []
    schemas: list[pa.Schema] = []
    bad: list[BadPart] = []
    for q in live_parts(folder):
        try:
            schemas.append(pq.read_schema(q))
            good.append(q)
        except (OSError, pa.ArrowException) as e:
            bad.append(BadPart(str(q), f"{type(e).__name__}: {e}"[:300]))
    if not good:
        return None, [], bad
    try:
        schema = pa.unify_schemas(schemas, promote_options="permissive")
        return ds.dataset([str(q) for q in good], format="parquet", schema=schema).to_table(), good, bad
    except (OSError, pa.ArrowException):
        pass
    tables: list[pa.Table] = []
    readable: list[Path] = []
    for q in good:
        try:
            tables.append(pq.read_table(q))
            readable.append(q)
        except (OSError, pa.ArrowException) as e:
            bad.append(BadPart(str(q), f"{type(e).__name__}: {e}"[:300], _rows_of(q)))
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return None, readable, bad
    try:
        return pa.concat_tables(tables, promote_options="permissive"), readable, bad
    except (pa.ArrowException, TypeError):
        frames = [t.to_pandas() for t in tables]
        return pa.Table.from_pandas(pd.concat(frames, ignore_index=True), preserve_index=False), readable, bad


def scan_parts(folder: str | Path) -> PartScan:
    """Every readable part of ``folder`` as one frame, and the parts that could not be read."""
    table, good, bad = _scan(folder)
    return PartScan(table.to_pandas() if table is not None else pd.DataFrame(), good, bad)


def _rows_of(part: Path) -> int | None:
    try:
        return int(pq.read_metadata(part).num_rows)
    except (OSError, pa.ArrowException):
        return None


def read_parts(folder: str | Path) -> pd.DataFrame:
    """Concatenate every readable part file of ``folder`` in order (empty when none)."""
    return scan_parts(folder).frame


def compact_parts(folder: str | Path) -> Path | None:
    """Merge the parts of ``folder`` into one range file and delete the parts it replaces.

    Returns the range file, or None when there was nothing to merge (one part or none) or a
    part could not be read (then every part is left as it is, for a person to look at).
    """
    p = Path(folder)
    parts = live_parts(p)
    if len(parts) < 2:
        return None
    table, _, bad = _scan(p)
    if bad or table is None:
        return None
    spans = [s for q in parts if (s := _span(q)) is not None]
    first, last = min(s[0] for s in spans), max(s[1] for s in spans)
    target = write_table(p / f"part-{first:05d}-{last:05d}.parquet", table)
    for q in parts:
        if q != target:
            q.unlink(missing_ok=True)
    return target


# --------------------------------------------------------------------------- the fleet layout


def check_host(host: str) -> str:
    """A host name usable as a partition folder (``[A-Za-z0-9._-]``, starting alphanumeric)."""
    if not isinstance(host, str) or not HOST_RE.match(host):
        raise ParameterError(f"host = {host!r} is invalid: expected a plain name of letters, digits, '.', '_', '-'",
                             key="host", value=host)
    return host


def host_folder(root: str | Path, host: str) -> Path:
    """The partition of ``host`` under a samples or events root: ``{root}/host={host}``."""
    return Path(root) / f"{HOST_KEY}={check_host(host)}"


def host_folders(root: str | Path) -> dict[str, Path]:
    """The host partitions under ``root`` (``host=NAME`` folders), by host name, sorted."""
    p = Path(root)
    if not p.is_dir():
        return {}
    found = {q.name.split("=", 1)[1]: q for q in p.iterdir()
             if q.is_dir() and q.name.startswith(HOST_KEY + "=") and HOST_RE.match(q.name.split("=", 1)[1])}
    return dict(sorted(found.items()))


def dataset_parts(root: str | Path) -> list[tuple[str | None, Path]]:
    """Every live part of a samples/events root, first layout and fleet layout alike: the
    parts directly in ``root`` (host None) and those of each ``host=NAME`` partition."""
    out: list[tuple[str | None, Path]] = [(None, q) for q in live_parts(root)]
    for host, folder in host_folders(root).items():
        out += [(host, q) for q in live_parts(folder)]
    return out


def scan_dataset(root: str | Path) -> PartScan:
    """The rows of a samples/events root in either layout as one frame (see :func:`dataset_parts`).

    A partition's rows get its host in the ``host`` column where they have none; a run in the
    first layout (parts directly in ``root``) reads exactly as :func:`scan_parts` reads it.
    """
    folders = host_folders(root)
    if not folders:
        return scan_parts(root)
    scans = [(None, scan_parts(root))] + [(h, scan_parts(f)) for h, f in folders.items()]
    frames: list[pd.DataFrame] = []
    for host, scan in scans:
        frame = scan.frame
        if host is not None and not frame.empty:
            frame = frame.copy()
            frame[HOST_KEY] = frame[HOST_KEY].fillna(host) if HOST_KEY in frame.columns else host
        if not frame.empty:
            frames.append(frame)
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return PartScan(frame, [q for _, s in scans for q in s.parts], [b for _, s in scans for b in s.bad])

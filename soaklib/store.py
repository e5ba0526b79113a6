"""Run folders, atomic artifact writes, crash-safe parquet part files, and loading runs back.

Layout of a run (DESIGN.md sections 3, 4, 10)::

    {output_dir}/{run_id}.json, {run_id}.md   signoff / evidence (atomic writes)
    {output_dir}/{run_id}/run.json            manifest: written at start, completed at end
    {output_dir}/{run_id}/samples/part-NNNNN.parquet   one file per flush (tmp + rename)
    {output_dir}/{run_id}/events.parquet      rewritten atomically at each flush
    {output_dir}/{run_id}/jobs.parquet        multi-provider: one row per attempt

A run whose manifest lacks ``completed_at`` (the harness was killed) loads as incomplete.
"""
from __future__ import annotations

import json
import os
import re
import socket
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from soaklib.errors import ParameterError

RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MANIFEST = "run.json"
PART_RE = re.compile(r"^part-(\d{5,})\.parquet$")


def utc_now() -> datetime:
    """The current time as an aware UTC datetime (recorded data only, never for durations)."""
    return datetime.now(timezone.utc)


def utc_stamp(ts: datetime | None = None) -> str:
    """A compact UTC stamp for names: ``20260220T013446Z``."""
    return (ts or utc_now()).strftime("%Y%m%dT%H%M%SZ")


def iso(ts: datetime | None) -> str | None:
    """ISO-8601 text of an aware datetime, or None."""
    return ts.isoformat() if ts is not None else None


def check_run_id(run_id: str) -> str:
    """Return ``run_id`` if it is a plain name usable as a file name, else raise."""
    if not isinstance(run_id, str) or not RUN_ID_RE.match(run_id) or ".." in run_id:
        raise ParameterError(
            f"run id {run_id!r} is not a plain name: use letters, digits, '.', '_' and '-' "
            "(no '/', no '..', at most 128 characters)",
            key="run_id",
            value=run_id,
        )
    return run_id


def _json_default(obj: Any) -> Any:
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if pd.isna(obj):
        return None
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def to_json(obj: Any) -> str:
    """JSON text with the toolkit's conventions (ISO timestamps, numpy scalars, NaN → null)."""
    return json.dumps(_nan_to_none(obj), indent=2, default=_json_default, allow_nan=False) + "\n"


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, float) and obj in (float("inf"), float("-inf")):
        return None
    if isinstance(obj, Mapping):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj


_FILE_MODE: int | None = None


def file_mode() -> int:
    """The mode a plain ``open()`` would give a new file: 0o666 less the process umask.

    ``mkstemp`` creates its file 0600 whatever the umask; an artifact renamed from it would
    be unreadable by the team on a shared host, so every atomic write sets this mode. The
    umask is read once (``os.umask`` can only be read by setting it).
    """
    global _FILE_MODE
    if _FILE_MODE is None:
        mask = os.umask(0o022)
        os.umask(mask)
        _FILE_MODE = 0o666 & ~mask
    return _FILE_MODE


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    The file gets the mode the umask allows (0644 under umask 022), as ``open()`` would.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write text atomically (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically."""
    return atomic_write_text(path, to_json(obj))


def write_table(path: str | os.PathLike[str], frame: pd.DataFrame | pa.Table) -> Path:
    """Write a DataFrame or Arrow table as one parquet file, atomically."""
    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def read_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read one parquet file into a DataFrame (empty DataFrame when it does not exist)."""
    p = Path(path)
    if not p.exists():
        return pd.DataFrame()
    return pq.read_table(p).to_pandas()


class PartWriter:
    """Buffers rows and flushes them as numbered parquet part files (tmp name + rename).

    A process killed at any moment leaves only complete part files behind: readers glob
    ``part-*.parquet`` and never see a temporary file. Numbering continues after the parts
    already in the folder, so a resumed writer never overwrites one.
    """

    def __init__(self, folder: str | os.PathLike[str], schema: pa.Schema | None = None) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.schema = schema
        self._rows: list[dict[str, Any]] = []
        existing = [int(m.group(1)) for p in self.folder.iterdir() if (m := PART_RE.match(p.name))]
        self._next = max(existing, default=-1) + 1
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


def read_parts(folder: str | os.PathLike[str]) -> pd.DataFrame:
    """Concatenate every complete part file of ``folder`` in order (empty when none).

    One Arrow dataset scan over the parts, with their schemas unified (a column that was
    all-null in one part and numeric in another reads as numeric); per-file reads only as
    a fallback for parts whose types cannot be unified.
    """
    p = Path(folder)
    if not p.is_dir():
        return pd.DataFrame()
    parts = sorted((q for q in p.iterdir() if PART_RE.match(q.name)), key=lambda q: q.name)
    if not parts:
        return pd.DataFrame()
    try:
        schema = pa.unify_schemas([pq.read_schema(q) for q in parts], promote_options="permissive")
        return ds.dataset([str(q) for q in parts], format="parquet", schema=schema).to_table().to_pandas()
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        frames = [f for f in (pq.read_table(q).to_pandas() for q in parts) if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def run_dir_for(output_dir: str | os.PathLike[str], run_id: str) -> Path:
    """The data folder of a run: ``{output_dir}/{run_id}``, made absolute once, here.

    A relative ``output_dir`` means relative to the caller's working folder; every process
    the toolkit starts later (the LLM stub, the target) runs elsewhere, so nothing after
    this point may see a relative run folder.
    """
    return Path(output_dir).expanduser().absolute() / check_run_id(run_id)


def signoff_paths(run_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """The signoff JSON and Markdown that sit beside a run folder."""
    rd = Path(run_dir)
    return rd.parent / f"{rd.name}.json", rd.parent / f"{rd.name}.md"


def start_manifest(run_dir: str | os.PathLike[str], run_id: str, kind: str, **extra: Any) -> dict[str, Any]:
    """Create the run folder and its manifest (``complete`` false until ``finish_manifest``)."""
    rd = Path(run_dir)
    rd.mkdir(parents=True, exist_ok=True)
    manifest = {
        "run_id": run_id,
        "kind": kind,
        "host": socket.gethostname(),
        "started_at": iso(utc_now()),
        "completed_at": None,
        "complete": False,
        **extra,
    }
    atomic_write_json(rd / MANIFEST, manifest)
    return manifest


def finish_manifest(run_dir: str | os.PathLike[str], **extra: Any) -> dict[str, Any]:
    """Mark a run complete (or record how it ended) in its manifest."""
    rd = Path(run_dir)
    manifest = read_manifest(rd)
    manifest.update({"completed_at": iso(utc_now()), "complete": True})
    manifest.update(extra)
    atomic_write_json(rd / MANIFEST, manifest)
    return manifest


def read_manifest(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a run folder ({} when it has none)."""
    p = Path(run_dir) / MANIFEST
    if not p.exists():
        return {}
    return json.loads(p.read_text(encoding="utf-8"))


JOB_KEY = ["round_num", "job_index", "provider"]


@dataclass
class Run:
    """A run loaded back from disk, complete or partial.

    ``samples`` and ``events`` are a soak's (or a monitor's) parquet rows. For a
    multi-provider run, ``attempts`` is ``jobs.parquet`` as written, one row per attempt
    of a job (a retried job has several), and ``jobs`` is one row per job as the signoff
    counts them: the job's final attempt, with ``attempts`` (how many were made) and
    ``first_started_at`` (when its first attempt started) beside it.
    """

    path: Path
    run_id: str
    manifest: dict[str, Any]
    samples: pd.DataFrame = field(default_factory=pd.DataFrame)
    events: pd.DataFrame = field(default_factory=pd.DataFrame)
    attempts: pd.DataFrame = field(default_factory=pd.DataFrame)
    signoff: dict[str, Any] | None = None

    @property
    def jobs(self) -> pd.DataFrame:
        """One row per job (its final attempt); see the class docstring."""
        return final_attempts(self.attempts)

    @property
    def complete(self) -> bool:
        """True when the harness finished the run (its manifest was completed, or, for a
        multi-provider run, its evidence JSON was written and not interrupted)."""
        if self.manifest:
            return bool(self.manifest.get("complete"))
        return self.signoff is not None and not self.signoff.get("interrupted", False)

    @property
    def kind(self) -> str:
        """What produced the run: ``multi-provider``, ``watcher-a|b|c``, ``monitor`` or
        ``unknown`` (a folder with neither a manifest nor lane evidence)."""
        kind = self.manifest.get("kind")
        if kind:
            return str(kind)
        if len(self.attempts) or (self.signoff is not None and "provider_summary" in self.signoff):
            return "multi-provider"
        return "unknown"


def final_attempts(attempts: pd.DataFrame) -> pd.DataFrame:
    """One row per job of a ``jobs.parquet`` table: each job's last attempt, with the number
    of attempts and the start of the first (a table without job keys is returned as is)."""
    if attempts.empty or not set(JOB_KEY) <= set(attempts.columns):
        return attempts
    ordered = attempts.sort_values([*JOB_KEY, "attempt"] if "attempt" in attempts.columns else JOB_KEY)
    groups = ordered.groupby(JOB_KEY, sort=False)
    last = groups.tail(1).copy()
    last["attempts"] = groups["provider"].transform("size").loc[last.index].astype("int64")
    if "started_at" in ordered.columns:
        last["first_started_at"] = groups["started_at"].transform("first").loc[last.index]
    return last.sort_values(JOB_KEY).reset_index(drop=True)


def load_run(path: str | os.PathLike[str]) -> Run:
    """Load a run folder (or its signoff JSON path) with samples, events, jobs and signoff.

    Works on partial runs: whatever part files were flushed are loaded, and ``complete``
    is False when the manifest was never completed.
    """
    p = Path(path)
    if p.suffix == ".json" and p.is_file() and p.name != MANIFEST:
        p = p.with_suffix("")
    if not p.is_dir():
        raise ParameterError(
            f"run folder {str(p)!r} does not exist: pass the folder {{output_dir}}/{{run_id}} "
            "or its {run_id}.json",
            key="run_dir",
            value=str(p),
        )
    manifest = read_manifest(p)
    signoff_json, _ = signoff_paths(p)
    signoff = json.loads(signoff_json.read_text(encoding="utf-8")) if signoff_json.exists() else None
    return Run(
        path=p,
        run_id=manifest.get("run_id", p.name),
        manifest=manifest,
        samples=read_parts(p / "samples"),
        events=read_table(p / "events.parquet"),
        attempts=read_table(p / "jobs.parquet"),
        signoff=signoff,
    )

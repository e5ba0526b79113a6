"""Run folders, atomic artifact writes, manifests (part files: ``parts``; loading: ``runs``).

Layout of a run (DESIGN.md sections 3, 4, 10)::

    {output_dir}/{run_id}.json, {run_id}.md   signoff / evidence (atomic writes)
    {output_dir}/{run_id}/run.json            manifest: written at start, completed at end
    {output_dir}/{run_id}/samples/part-NNNNN.parquet   one file per flush (``soaklib.parts``)
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
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from soaklib.errors import ParameterError

RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MANIFEST = "run.json"


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
    frame: pd.DataFrame = pq.read_table(p).to_pandas()
    return frame


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
    data: dict[str, Any] = json.loads(p.read_text(encoding="utf-8"))
    return data


RESERVE = ".disk-reserve"  # held in a run folder while it records; freed to write its end on a full disk


def reserve_space(run_dir: str | os.PathLike[str], n_bytes: int) -> Path | None:
    """Hold ``n_bytes`` of the run folder's disk in a hidden file (written, so really taken).

    When the disk fills during the run, :func:`release_space` gives them back for the
    run's last files (observations, manifest, signoff). None when even this does not fit.
    """
    path = Path(run_dir) / RESERVE
    try:
        with open(path, "wb") as fh:
            fh.write(b"\0" * n_bytes)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError:
        path.unlink(missing_ok=True)
        return None
    return path


def release_space(run_dir: str | os.PathLike[str]) -> bool:
    """Free the space :func:`reserve_space` held; True when there was a reserve."""
    path = Path(run_dir) / RESERVE
    try:
        path.unlink()
    except OSError:
        return False
    return True


def read_json_object(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A JSON object file; None when it does not exist or is not a readable JSON object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None

"""A run loaded back from its folder, complete or partial: the analyst's and the report's view.

``load_run`` never raises on a damaged run: unreadable part files are skipped and named in
``Run.bad_parts``, and the run reads as incomplete.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from soaklib.errors import ParameterError
from soaklib.parts import HOST_KEY, BadPart, scan_dataset
from soaklib.store import MANIFEST, read_manifest, read_table, signoff_paths

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
    bad_parts: list[BadPart] = field(default_factory=list)

    @property
    def jobs(self) -> pd.DataFrame:
        """One row per job (its final attempt); see the class docstring."""
        return final_attempts(self.attempts)

    @property
    def complete(self) -> bool:
        """True when the harness finished the run (its manifest was completed, or, for a
        multi-provider run, its evidence JSON was written and not interrupted)."""
        if self.bad_parts:
            return False
        if self.manifest:
            return bool(self.manifest.get("complete"))
        return self.signoff is not None and not self.signoff.get("interrupted", False)

    @property
    def hosts(self) -> list[str]:
        """The hosts whose samples the run holds (sorted; one for a single-host run)."""
        if self.samples.empty or HOST_KEY not in self.samples.columns:
            return []
        return sorted(str(h) for h in self.samples[HOST_KEY].dropna().unique())

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


def read_events(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """A run's events: ``events.parquet`` (one host, the first layout) and the parts of every
    ``events/host=NAME/`` partition (a fleet), with the partition's host in a ``host`` column."""
    return _scan_events(Path(run_dir))[0]


def _scan_events(p: Path) -> tuple[pd.DataFrame, list[BadPart]]:
    first = read_table(p / "events.parquet")
    scan = scan_dataset(p / "events") if (p / "events").is_dir() else None
    fleet = scan.frame if scan is not None else pd.DataFrame()
    frames = [f for f in (first, fleet) if not f.empty]
    events = pd.concat(frames, ignore_index=True) if len(frames) == 2 else frames[0] if frames else pd.DataFrame()
    return events, (scan.bad if scan is not None else [])


def load_run(path: str | os.PathLike[str]) -> Run:
    """Load a run folder (or its signoff JSON path) with samples, events, jobs and signoff.

    Works on partial runs: whatever part files were flushed are loaded, and ``complete``
    is False when the manifest was never completed or a part file could not be read (each
    such file is in ``bad_parts``, with the rows it held when its footer says so).
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
    scan = scan_dataset(p / "samples")
    events, bad_events = _scan_events(p)
    return Run(
        path=p,
        run_id=manifest.get("run_id", p.name),
        manifest=manifest,
        samples=scan.frame,
        events=events,
        attempts=read_table(p / "jobs.parquet"),
        signoff=signoff,
        bad_parts=[*scan.bad, *bad_events],
    )

"""The WATCHER protocol as a metric source: queue, decisions, draws, policies, telemetry.

Counts only what is appended during the soak (the decision stream starts at the log's end).
Folder counts are cached by the folder's stat and re-counted at least every
``FOLDER_MAX_AGE_S``; JSON files are re-parsed only when their stat changes. Each part
degrades on its own (``tick.metric``): a missing history leaves ``draws`` null, not the queue.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from soaklib.observe.readers import StatCache, count_files
from soaklib.observe.sources import BOOL, I64, LogSource, Tick, columns
from soaklib.watcher.decisions import DecisionCounters, DecisionStream
from soaklib.watcher.protocol import Profile

FOLDER_MAX_AGE_S = 10.0  # a cached file count is re-counted at least this often
_PATHS = ("requests_dir", "archive_dir", "history_file", "policy_dir", "telemetry_file")
DECISION_KEYS = ("decision_lines", "decisions_completed", "dispatch_selfplay", "dispatch_learning", "unknown_type",
                 "heuristic_fallback", "heuristic_steps", "decision_bad_lines")


def _read_draws(path: Path) -> int:
    with open(path, "rb") as fh:
        return len(json.loads(fh.read())["draws"])


def _read_telemetry(path: Path) -> tuple[int | None, bool]:
    try:
        with open(path, "rb") as fh:
            data = json.loads(fh.read())
    except ValueError:
        return None, False
    if not isinstance(data, dict):
        return None, False
    models = data.get("total_models")
    return (int(models) if isinstance(models, (int, float)) and not isinstance(models, bool) else None), True


class WatcherSource:
    """Sample columns of a WATCHER project folder under a protocol profile.

    ``logs``: the log source of the target, whose heuristic-fallback count is the
    ``heuristic_fallback`` column when the profile finds fallbacks in the log (watcher-v2).
    """

    name = "watcher"
    columns = columns([
        ("requests_pending", I64, "count"), ("requests_archived", I64, "count"),
        ("decision_lines", I64, "count"), ("decisions_completed", I64, "count"),
        ("dispatch_selfplay", I64, "count"), ("dispatch_learning", I64, "count"), ("unknown_type", I64, "count"),
        ("heuristic_fallback", I64, "count"), ("heuristic_steps", I64, "count"),
        ("decision_bad_lines", I64, "count"), ("draws", I64, "count"), ("policy_candidates", I64, "count"),
        ("telemetry_models", I64, "count"), ("telemetry_valid", BOOL, "bool"),
    ])

    def __init__(self, project_dir: str | os.PathLike[str], profile: Profile, *, logs: LogSource | None = None,
                 from_end: bool = True, cache: StatCache | None = None) -> None:
        self.project_dir = Path(project_dir)
        self.profile = profile
        self.logs = logs
        self.cache = cache or StatCache()
        self.stream = DecisionStream(profile.path(self.project_dir, "decision_log"), profile, from_end=from_end)
        self.counters = DecisionCounters(profile=profile)
        # paths resolved once: building Path objects was a measurable share of a sample
        self.paths: dict[str, Path | None] = {k: profile.path(self.project_dir, k) for k in _PATHS}

    @property
    def bytes_read(self) -> int:
        return self.stream.bytes_read

    def _decisions(self) -> dict[str, Any]:
        for d in self.stream.poll():
            self.counters.update(d)
        out: dict[str, Any] = dict(self.counters.as_row())
        prof = self.profile
        out["heuristic_fallback"] = (
            self.counters.heuristic_fallback if prof.heuristic_in_decisions
            else self.logs.heuristics if self.logs is not None and prof.heuristic_in_log_regex else None
        )
        return out

    def _path(self, key: str) -> Path:
        path = self.paths[key]
        if path is None:
            raise FileNotFoundError(f"profile {self.profile.name!r} has no {key}")
        return path

    def _count(self, key: str, pattern: str = "*") -> int | None:
        path = self._path(key)
        if pattern != "*":
            return count_files(path, pattern)
        count: int | None = self.cache.get(path, "count", count_files, max_age_s=FOLDER_MAX_AGE_S)
        return count  # None: the folder does not exist (yet)

    def read(self, tick: Tick) -> Mapping[str, Any]:
        cache = self.cache
        row: dict[str, Any] = {}
        row.update(tick.metric("requests", ("requests_pending", "requests_archived"), lambda: {
            "requests_pending": self._count("requests_dir", "*.json"),
            "requests_archived": self._count("archive_dir")}))
        row.update(tick.metric("decision_log", DECISION_KEYS, self._decisions))
        row.update(tick.metric("draws", ("draws",), lambda: {"draws": cache.get(self._path("history_file"), "draws", _read_draws)}))
        row.update(tick.metric("policy_candidates", ("policy_candidates",), lambda: {
            "policy_candidates": self._count("policy_dir")}))

        def telemetry() -> dict[str, Any]:
            models, valid = cache.get(self._path("telemetry_file"), "telemetry", _read_telemetry) or (None, None)
            return {"telemetry_models": models, "telemetry_valid": valid}

        row.update(tick.metric("telemetry", ("telemetry_models", "telemetry_valid"), telemetry))
        return row

"""The Chapter 13 orchestrator's files as data: cycle history lines, approvals, draw accounting.

The orchestrator (``chapter_13_orchestrator.py --daemon``) detects draws: each poll it
checks its halt files, then ``new_draw.flag``; a flag runs one cycle, which appends one JSON
line to ``chapter13_cycle_history.jsonl`` and deletes the flag afterwards (flags written
during a cycle merge into it). Cycles are counted from the lines appended during a soak,
read structurally (``outcome``, ``steps.triggers.trigger_type``, ``steps.diagnostics.draw_id``),
never by grepping log text. :func:`account_draws` says, for every injected draw, whether a
cycle ingested it, it was merged into a cycle, it is still pending at the end, or it was lost.
This module only builds paths and parses files: no processes, no waits.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

CYCLE_HISTORY = "chapter13_cycle_history.jsonl"
CHAPTER13_HALT = ".chapter13_halt"
APPROVAL_FILE = "pending_approval.json"
APPROVAL_ARCHIVE_PREFIX = "pending_approval_"
OUTCOMES = ("no_action_needed", "proposal_accepted", "auto_executed_test_mode", "pending_approval",
            "auto_execute_disabled", "escalated", "proposal_rejected", "error")
APPROVAL_OUTCOMES = ("pending_approval", "escalated")  # cycles that write pending_approval.json
_DRAW_ID = re.compile(r"^draw_(\d+)$")
MAX_LINE_BYTES = 4 << 20


@dataclass(frozen=True)
class OrchestratorFiles:
    """Where the orchestrator's files are (relative = in the project folder)."""

    cycle_history: str = CYCLE_HISTORY
    halt_file: str = CHAPTER13_HALT
    approval_file: str = APPROVAL_FILE
    approval_archive_dir: str = "watcher_requests/archive"
    new_draw_flag: str = "new_draw.flag"

    def path(self, project_dir: str | os.PathLike[str], name: str) -> Path:
        p = Path(getattr(self, name))
        return p if p.is_absolute() else Path(project_dir) / p


def _time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)


def _obj(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


@dataclass(frozen=True)
class Cycle:
    """One line of the cycle history."""

    cycle_id: str
    outcome: str
    started_at: datetime | None
    completed_at: datetime | None
    draw_id: str | None
    trigger_type: str | None
    heuristic: bool  # the advisor fell back to its heuristic (``llm_analysis.model_id`` heuristic_*)
    error: str | None

    @property
    def history_length(self) -> int | None:
        """The history length the diagnostics read: ``draw_<N>`` names it (records without a draw_id)."""
        m = _DRAW_ID.match(self.draw_id or "")
        return int(m.group(1)) if m else None

    @classmethod
    def parse(cls, line: str) -> Cycle | None:
        """A history line; None when it is not a cycle record."""
        try:
            d = json.loads(line)
        except ValueError:
            return None
        if not isinstance(d, dict) or not isinstance(d.get("cycle_id"), str):
            return None
        steps = _obj(d.get("steps"))
        diag, trig, llm = _obj(steps.get("diagnostics")), _obj(steps.get("triggers")), _obj(steps.get("llm_analysis"))
        draw_id = diag.get("draw_id")
        return cls(d["cycle_id"], str(d.get("outcome") or "unknown"), _time(d.get("started_at")),
                   _time(d.get("completed_at")), str(draw_id) if draw_id is not None else None,
                   trig.get("trigger_type") if isinstance(trig.get("trigger_type"), str) else None,
                   str(llm.get("model_id") or "").startswith("heuristic"),
                   str(d["error"]) if d.get("error") is not None else None)


class CycleHistory:
    """The lines appended to the cycle history since the soak started (a file that ships with
    old lines: only what the soak appends counts). ``poll()`` returns the complete new lines."""

    def __init__(self, path: Path, *, from_end: bool = True) -> None:
        self.path = path
        self.offset = path.stat().st_size if from_end and path.exists() else 0
        self.start_offset = self.offset
        self.cycles: list[Cycle] = []
        self.bad_lines = 0
        self._ino: int | None = None

    def poll(self) -> list[Cycle]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return []
        if st.st_size < self.offset:  # truncated or replaced: read it again from the start
            self.offset = 0
        if st.st_size == self.offset:
            return []
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read(MAX_LINE_BYTES * 4)
        end = data.rfind(b"\n")
        if end < 0:
            return []  # a line being written
        self.offset += end + 1
        new: list[Cycle] = []
        for raw in data[:end].splitlines():
            if not raw.strip():
                continue
            c = Cycle.parse(raw.decode("utf-8", "replace"))
            if c is None:
                self.bad_lines += 1
            else:
                new.append(c)
        self.cycles += new
        return new

    def outcomes(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.cycles:
            out[c.outcome] = out.get(c.outcome, 0) + 1
        return out

    def trigger_types(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.cycles:
            if c.trigger_type:
                out[c.trigger_type] = out.get(c.trigger_type, 0) + 1
        return out


# --------------------------------------------------------------------------- draws


@dataclass(frozen=True)
class Injection:
    """One injected draw: the history length after it and when its flag was written (UTC)."""

    history_length: int
    at: datetime


@dataclass
class DrawAccount:
    """Every injected draw classified; ``status[i]`` is the status of injection ``i``."""

    status: list[str] = field(default_factory=list)  # ingested | merged | pending | lost
    cycles_without_new_draws: int = 0  # cycles that read no draw newer than the last cycle's

    def count(self, status: str) -> int:
        return self.status.count(status)

    def to_dict(self) -> dict[str, Any]:
        return {"ingested": self.count("ingested"), "merged": self.count("merged"), "pending": self.count("pending"),
                "lost": self.count("lost"), "cycles_without_new_draws": self.cycles_without_new_draws}


def account_draws(injections: list[Injection], cycles: list[Cycle], *, start_length: int, end: datetime,
                  grace_s: float) -> DrawAccount:
    """Classify each injection against the cycles that ran.

    A cycle read the history at some length ``N`` (its ``draw_id``; else the injections made
    before it started). The injections between the previous cycle's length and ``N`` were seen
    by that cycle: the newest is *ingested*, the others *merged* (their flags were folded into
    one cycle). A draw no cycle read is *merged* when its flag was written while a cycle ran (that
    cycle deleted it), *pending* when it came less than ``grace_s`` before ``end``, else *lost*.
    A cycle that read nothing newer than the previous one counts in ``cycles_without_new_draws``.
    """
    inj = sorted(injections, key=lambda i: i.history_length)
    status = ["lost"] * len(inj)
    account = DrawAccount(status)
    seen = start_length
    ordered = sorted(cycles, key=lambda c: c.started_at or end)
    for c in ordered:
        n = c.history_length
        if n is None:  # no draw_id to read: the injections made before the cycle started
            n = max([i.history_length for i in inj if c.started_at is not None and i.at <= c.started_at] or [seen])
        group = [k for k, i in enumerate(inj) if seen < i.history_length <= n]
        if not group:
            account.cycles_without_new_draws += 1
            continue
        for k in group:
            status[k] = "merged"
        status[group[-1]] = "ingested"
        seen = n
    for k, i in enumerate(inj):
        if i.history_length <= seen:
            continue
        running = any(c.started_at is not None and c.completed_at is not None and c.started_at <= i.at <= c.completed_at
                      for c in ordered)
        if running:
            status[k] = "merged"
        elif (end - i.at).total_seconds() <= grace_s:
            status[k] = "pending"
    return account


# --------------------------------------------------------------------------- approvals


@dataclass
class ApprovalState:
    """``pending_approval.json`` now and the approvals the WATCHER daemon archived."""

    pending_status: str | None = None  # status of pending_approval.json; None when absent
    pending_request_id: str | None = None
    pending_age_s: float | None = None
    archived: dict[str, list[str]] = field(default_factory=dict)  # request_id@created_at → statuses

    @property
    def archived_count(self) -> int:
        return sum(len(v) for v in self.archived.values())

    def archived_with(self, status: str) -> int:
        return sum(v.count(status) for v in self.archived.values())

    @property
    def double_executions(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.archived.items() if len(v) > 1}


def archived_approval_names(project_dir: str | os.PathLike[str], files: OrchestratorFiles) -> frozenset[str]:
    """The names of the archived approvals now (those there before a soak are not its own)."""
    try:
        with os.scandir(files.path(project_dir, "approval_archive_dir")) as it:
            return frozenset(e.name for e in it if e.name.startswith(APPROVAL_ARCHIVE_PREFIX))
    except OSError:
        return frozenset()


def scan_approvals(project_dir: str | os.PathLike[str], files: OrchestratorFiles, *,
                   exclude: frozenset[str] = frozenset()) -> ApprovalState:
    """Read the approval file and the archived approvals (leaving out the names in ``exclude``)."""
    state = ApprovalState()
    path = files.path(project_dir, "approval_file")
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        st = path.stat()
        if isinstance(body, dict):
            state.pending_status = str(body.get("status"))
            state.pending_request_id = str(body.get("request_id"))
            state.pending_age_s = max(0.0, datetime.now().timestamp() - st.st_mtime)
    except (OSError, ValueError):
        pass
    folder = files.path(project_dir, "approval_archive_dir")
    try:
        with os.scandir(folder) as it:
            entries = [e for e in it if e.name.startswith(APPROVAL_ARCHIVE_PREFIX) and e.name not in exclude
                       and e.name.endswith(".json") and e.is_file(follow_symlinks=False)]
    except OSError:
        entries = []
    for e in entries:
        try:
            body = json.loads(Path(e.path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(body, dict):  # ids have one-second stamps: the creation time tells two requests apart
            key = f"{body.get('request_id')}@{body.get('created_at')}"
            state.archived.setdefault(key, []).append(str(body.get("status")))
    return state

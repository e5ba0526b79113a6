"""The decision log as one stream of typed entries, read incrementally.

Every consumer of ``watcher_decisions.jsonl`` (the sample counters, soak B's queue
accounting, soak C's cycle counts, the protocol check) reads it through
:class:`DecisionStream`, which parses each appended line once into a :class:`Decision`:
its kind (``dispatch``, ``step``, ``heuristic_fallback``, ``other``, or ``bad`` for a line
that is not a JSON object), status, dispatch type, the request it belongs to, its source,
and whether the protocol check's probe wrote it. The log is read structurally (JSON fields,
DESIGN.md section 6), never by grepping for words.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soaklib.observe.readers import IncrementalReader
from soaklib.watcher.protocol import Profile

#: ``source`` of the protocol check's probe request: its lines are nobody's soak request.
PROBE_SOURCE = "soak_protocol_check"
KINDS = ("dispatch", "step", "heuristic_fallback", "other", "bad")
_MARKER_FIELDS = ("event", "action", "decision", "status", "dispatch_type", "type", "parse_method")


def parse_decision_line(text: str | bytes) -> dict[str, Any] | None:
    """One decision-log line as a dict; None for a line that is not a JSON object."""
    try:
        entry = json.loads(text)
    except (ValueError, TypeError):
        return None
    return entry if isinstance(entry, dict) else None


def is_heuristic_marker(entry: Mapping[str, Any]) -> bool:
    """A decision-log entry that records a heuristic fallback (``event: heuristic_fallback`` …)."""
    if entry.get("heuristic_fallback") is True:
        return True
    return any(entry.get(k) == "heuristic_fallback" for k in _MARKER_FIELDS)


def dispatch_type_of(entry: Mapping[str, Any]) -> str | None:
    """The dispatch type of a decision line (plan lines without one: their request type)."""
    for key in ("dispatch_type", "request_type"):
        value = entry.get(key)
        if isinstance(value, str):
            return value
    return None


def classify(entry: Mapping[str, Any], profile: Profile) -> str:
    """``dispatch``, ``step``, ``heuristic_fallback`` or ``other``, by the entry's fields."""
    if profile.heuristic_in_decisions and is_heuristic_marker(entry):
        return "heuristic_fallback"
    if isinstance(entry.get("dispatch_type"), str):
        return "dispatch"
    if isinstance(entry.get("request_type"), str) and ("sequence_number" in entry or "status" in entry):
        return "dispatch"
    if "step" in entry or "step_name" in entry:
        return "step"
    return "other"


def _details(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    details = entry.get("details")
    return details if isinstance(details, Mapping) else {}


def request_key(entry: Mapping[str, Any]) -> str | None:
    """The request a decision line belongs to: ``details.request_path`` basename or sequence number."""
    details = _details(entry)
    path = details.get("request_path", entry.get("request_path"))
    if isinstance(path, str) and path:
        return os.path.basename(path)
    seq = entry.get("sequence_number", details.get("sequence_number"))
    if isinstance(seq, (int, str)) and not isinstance(seq, bool) and str(seq) != "":
        return str(seq)
    return None


def entry_source(entry: Mapping[str, Any]) -> str | None:
    """The ``source`` of a decision line (``details.source`` for watcher-v2, top level for the plan)."""
    source = _details(entry).get("source")
    if isinstance(source, str):
        return source
    source = entry.get("source")
    return source if isinstance(source, str) else None


@dataclass(frozen=True)
class Decision:
    """One line of the decision log, parsed once."""

    kind: str  # one of KINDS
    entry: Mapping[str, Any] | None = None  # the JSON object; None for a bad line
    text: str = ""  # the line itself, cut to 200 characters (kept for bad lines)
    status: str | None = None  # upper-cased
    dispatch_type: str | None = None
    request: str | None = None  # request_key()
    source: str | None = None
    run_id: str | None = None
    parse_method: str | None = None

    @property
    def probe(self) -> bool:
        """Written for the protocol check's probe request."""
        return self.source == PROBE_SOURCE

    @property
    def heuristic_step(self) -> bool:
        """A step line whose decision fell back to the heuristic (watcher-v2)."""
        return self.kind == "step" and self.parse_method == "heuristic"

    @classmethod
    def parse(cls, text: str, profile: Profile) -> Decision:
        entry = parse_decision_line(text)
        if entry is None:
            return cls("bad", None, text.strip()[:200])
        status = entry.get("status")
        run_id = entry.get("run_id")
        method = entry.get("parse_method")
        return cls(
            kind=classify(entry, profile), entry=entry, text="",
            status=status.upper() if isinstance(status, str) else None,
            dispatch_type=dispatch_type_of(entry), request=request_key(entry), source=entry_source(entry),
            run_id=run_id if isinstance(run_id, str) and run_id else None,
            parse_method=method if isinstance(method, str) else None,
        )


class DecisionStream:
    """The decision log of a project, read incrementally (rotation-safe) into decisions.

    ``from_end`` (the default) starts at the file's current end: only what is appended during
    the soak counts. Blank lines are skipped.
    """

    def __init__(self, path: str | os.PathLike[str] | None, profile: Profile, *, from_end: bool = True) -> None:
        self.profile = profile
        self.path = Path(path) if path is not None else None
        self.reader = IncrementalReader(self.path, from_end=from_end) if self.path is not None else None

    @property
    def bytes_read(self) -> int:
        return self.reader.bytes_read if self.reader is not None else 0

    def poll(self) -> list[Decision]:
        """The decisions appended since the last call, in order."""
        if self.reader is None:
            return []
        return [Decision.parse(line, self.profile) for line in self.reader.read_lines() if line.strip()]


@dataclass
class DecisionCounters:
    """Counts over the decisions of a soak (feed with ``update``), named as sample columns.

    ``dispatch_selfplay`` / ``dispatch_learning`` count dispatch lines, not request records
    (a v2 selfplay request writes a ``selfplay`` line and a ``ch13_request_…`` record).
    ``entries`` counts dispatch lines per request key (archive name or sequence number, as a
    string) and ``dispatch_types`` lists their types, for duplicate and routing checks.
    """

    profile: Profile = field(default_factory=Profile, repr=False)
    lines: int = 0
    bad_lines: int = 0
    completed: int = 0
    dispatch_selfplay: int = 0
    dispatch_learning: int = 0
    unknown_type: int = 0
    heuristic_fallback: int = 0
    heuristic_steps: int = 0  # step lines with parse_method "heuristic" (v2)
    steps: int = 0
    entries: dict[str, int] = field(default_factory=dict)
    dispatch_types: dict[str, list[str]] = field(default_factory=dict)
    by_source: Counter[str] = field(default_factory=Counter)

    def update(self, d: Decision) -> str:
        """Count one decision; returns its kind."""
        self.lines += 1
        if d.kind == "bad":
            self.bad_lines += 1
            return d.kind
        if d.status == "COMPLETED":
            self.completed += 1
        if d.status == "UNKNOWN_TYPE":
            self.unknown_type += 1
        if d.kind == "heuristic_fallback":
            self.heuristic_fallback += 1
        elif d.kind == "step":
            self.steps += 1
            self.heuristic_steps += d.heuristic_step
        if d.source is not None:
            self.by_source[d.source] += 1
        if d.kind != "dispatch" or d.dispatch_type is None:
            return d.kind
        logical = self.profile.dispatch_kind(d.dispatch_type) if d.status != "UNKNOWN_TYPE" else None
        if logical == "selfplay":
            self.dispatch_selfplay += 1
        elif logical == "learning_loop":
            self.dispatch_learning += 1
        if d.request is not None:
            self.entries[d.request] = self.entries.get(d.request, 0) + 1
            self.dispatch_types.setdefault(d.request, []).append(d.dispatch_type)
        return d.kind

    def as_row(self) -> dict[str, int]:
        """The scalar counters, named as sample columns."""
        return {
            "decision_lines": self.lines,
            "decision_bad_lines": self.bad_lines,
            "decisions_completed": self.completed,
            "dispatch_selfplay": self.dispatch_selfplay,
            "dispatch_learning": self.dispatch_learning,
            "unknown_type": self.unknown_type,
            "heuristic_steps": self.heuristic_steps,
        }

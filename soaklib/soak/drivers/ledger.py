"""Soak B's bookkeeping: the request mix, the staged requests, and what became of each one.

Pure accounting, no I/O: :class:`QueueLedger` matches staged requests with decision-log
entries and archive entries and gives the observed values (archived, pending, duplicates,
misrouted, decision entries, FIFO order) with the requests behind each count.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from soaklib.errors import ParameterError
from soaklib.watcher.decisions import Decision
from soaklib.watcher.protocol import Profile, QueueState

SOURCE = "soak_test_B"
PREFIX = "soak_B"
REQUESTS_TABLE = "requests.parquet"
#: The plan's mix (section 5): 5 selfplay (2, 3, 2, 1, 2 episodes), 3 learning loops, 2 selfplay.
PLAN_MIX: list[dict[str, Any]] = [
    {"request_type": "selfplay", "count": 5, "episodes": [2, 3, 2, 1, 2], "policy_conditioned": True},
    {"request_type": "learning_loop", "count": 3, "scope": "steps_3_5_6"},
    {"request_type": "selfplay", "count": 2, "episodes": [2, 3], "policy_conditioned": True},
]
_MIX_KEYS = ("request_type", "count", "episodes", "scope", "reason")


@dataclass
class RequestSpec:
    """One request of the mix, before it is written."""

    logical_type: str
    episodes: int | None = None
    scope: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None


def _cycle(key: str, value: Any, i: int, kind: type) -> Any:
    if value is None:
        return None
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, kind) and not isinstance(v, bool) for v in values):
        raise ParameterError(f"{key} = {value!r} is invalid: expected a {kind.__name__} or a list of them",
                             key=key, value=value)
    return values[i % len(values)]


def expand_mix(mix: Sequence[Mapping[str, Any]], profile: Profile) -> list[RequestSpec]:
    """The ``requests:`` mix as one spec per request (``episodes`` / ``scope`` lists cycle).

    Each item is ``{request_type, count, episodes | scope, reason, extra fields...}``; the
    request type is checked against the profile (logical or the daemon's own name).
    """
    specs: list[RequestSpec] = []
    for i, item in enumerate(mix):
        where = f"requests[{i}]"
        if not isinstance(item, Mapping) or not isinstance(item.get("request_type"), str):
            raise ParameterError(f"{where} = {item!r} is invalid: expected {{request_type, count, episodes | scope}}",
                                 key=where, value=item)
        profile.request_type(item["request_type"])  # ParameterError naming the allowed types
        count = item.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ParameterError(f"{where}.count = {count!r} is invalid: expected an integer >= 1",
                                 key=f"{where}.count", value=count)
        extra = {k: v for k, v in item.items() if k not in _MIX_KEYS}
        for j in range(count):
            specs.append(RequestSpec(
                logical_type=item["request_type"],
                episodes=_cycle(f"{where}.episodes", item.get("episodes"), j, int),
                scope=_cycle(f"{where}.scope", item.get("scope"), j, str),
                extra=dict(extra),
                reason=item.get("reason") if isinstance(item.get("reason"), str) else None,
            ))
    if not specs:
        raise ParameterError("requests is an empty mix: give at least one request (or [] for the plan's mix)",
                             key="requests")
    return specs


@dataclass
class Staged:
    """A staged request and what became of it."""

    seq: int
    name: str
    logical_type: str
    request_type: str
    episodes: int | None
    scope: str | None
    staged_t_s: float
    lines: list[tuple[int, str, str | None, float]] = field(default_factory=list)  # (index, type, status, t_s)
    archive: list[tuple[str | None, str]] = field(default_factory=list)
    archived_t_s: float | None = None
    pending: bool = True


class QueueLedger:
    """Staged requests matched with decision lines and archive entries (pure bookkeeping).

    Lines are matched by request file name (``details.request_path``, watcher-v2) or by
    sequence number with the soak's ``source`` (plan); probe lines and other sources are
    counted apart.
    """

    def __init__(self, profile: Profile, source: str = SOURCE) -> None:
        self.profile = profile
        self.source = source
        self.requests: list[Staged] = []
        self._by_key: dict[str, Staged] = {}
        self.line_index = 0
        self.bad_lines: list[str] = []
        self.probe_lines = 0
        self.other_lines = 0

    def add(self, staged: Staged) -> None:
        self.requests.append(staged)
        self._by_key[staged.name] = staged
        self._by_key[f"seq:{staged.seq}"] = staged

    def _match(self, d: Decision) -> Staged | None:
        key = d.request
        if key is None:
            return None
        if key in self._by_key:
            return self._by_key[key]
        if d.source == self.source and key.isdigit():
            return self._by_key.get(f"seq:{int(key)}")
        return None

    def observe(self, d: Decision, t_s: float) -> None:
        """Account one decision-log line."""
        self.line_index += 1
        if d.kind == "bad":
            self.bad_lines.append(d.text)
            return
        if d.probe:
            self.probe_lines += 1
            return
        staged = self._match(d)
        if staged is None or d.kind != "dispatch" or d.dispatch_type is None:
            self.other_lines += 1
            return
        staged.lines.append((self.line_index, d.dispatch_type, d.status, t_s))

    def observe_queue(self, state: QueueState, t_s: float) -> None:
        """Account a scan of the queue: pending names and archive entries by original name."""
        pending = set(state.pending)
        for r in self.requests:
            r.pending = r.name in pending
            archived = state.archived.get(r.name, [])
            if archived and r.archived_t_s is None:
                r.archived_t_s = t_s
            r.archive = list(archived)

    # ------------------------------------------------------------------ verdicts

    def expected(self, r: Staged) -> int:
        return self.profile.expected_entries(r.logical_type)

    def handled_times(self, r: Staged) -> int:
        """Times the request was handled: archive entries, or complete sets of decision lines."""
        return max(len(r.archive), len(r.lines) // max(1, self.expected(r)))

    def misrouted_types(self, r: Staged) -> list[str]:
        return sorted({t for _, t, s, _ in r.lines if s != "UNKNOWN_TYPE" and not self.profile.routes_ok(r.logical_type, t)})

    def status(self, r: Staged) -> str | None:
        statuses = [s for s, _ in r.archive if s]
        if statuses:
            return statuses[-1]
        line_statuses = [s for _, _, s, _ in r.lines if s]
        return line_statuses[-1] if line_statuses else None

    def fifo(self) -> tuple[bool, list[str]]:
        """Dispatch order (first line of each request) against filename order; the requests out of order."""
        dispatched = sorted((r.lines[0][0], r.seq, r.name) for r in self.requests if r.lines)
        late, top = [], None
        for _, seq, name in dispatched:
            if top is not None and seq < top[0]:
                late.append(f"{name} dispatched after {top[1]}")
            if top is None or seq > top[0]:
                top = (seq, name)
        return not late, late

    def table(self) -> pd.DataFrame:
        """One row per staged request (the notebook's per-request table)."""
        fifo_rank = {r.name: i + 1 for i, r in enumerate(sorted((r for r in self.requests if r.lines),
                                                                 key=lambda r: r.lines[0][0]))}
        rows = []
        for r in self.requests:
            rows.append({
                "seq": r.seq, "name": r.name, "logical_type": r.logical_type, "request_type": r.request_type,
                "episodes": r.episodes, "scope": r.scope, "staged_t_s": r.staged_t_s,
                "first_dispatch_t_s": r.lines[0][3] if r.lines else None, "archived_t_s": r.archived_t_s,
                "status": self.status(r), "archive_names": ", ".join(n for _, n in r.archive),
                "pending": r.pending, "decision_lines": len(r.lines), "expected_lines": self.expected(r),
                "dispatch_types": ", ".join(t for _, t, _, _ in r.lines), "handled_times": self.handled_times(r),
                "misrouted": bool(self.misrouted_types(r)), "dispatch_rank": fifo_rank.get(r.name),
            })
        return pd.DataFrame(rows)

    def observations(self) -> dict[str, Any]:
        """The soak-B metrics by id, with the names behind every non-zero count in ``details``."""
        reqs = self.requests
        archived = [r for r in reqs if r.archive]
        pending = [r for r in reqs if r.pending]
        dups = [r for r in reqs if self.handled_times(r) > 1]
        misrouted = [r for r in reqs if self.misrouted_types(r)]
        entries = [r for r in reqs if len(r.lines) >= self.expected(r)]
        failed = [r for r in reqs if self.status(r) in ("FAILED", "UNKNOWN_TYPE", "INVALID")]
        fifo_ok, late = self.fifo()
        statuses: dict[str, int] = {}
        for r in reqs:
            key = self.status(r) or ("PENDING" if r.pending else "UNKNOWN")
            statuses[key] = statuses.get(key, 0) + 1
        details = {
            "archived": [f"{r.name} not archived" for r in reqs if not r.archive],
            "pending": [f"{r.name} still pending" for r in pending],
            "duplicates": [f"{r.name} handled {self.handled_times(r)} times" for r in dups],
            "misrouted": [f"{r.name} ({r.logical_type} → {', '.join(self.misrouted_types(r))})" for r in misrouted],
            "decision_entries": [f"{r.name}: {len(r.lines)} of {self.expected(r)} line(s)"
                                 for r in reqs if len(r.lines) < self.expected(r)],
            "failed_requests": [f"{r.name} {self.status(r)}" for r in failed],
            "fifo": late,
        }
        return {
            "staged": len(reqs),
            "archived": len(archived),
            "pending": len(pending),
            "duplicates": len(dups),
            "misrouted": len(misrouted),
            "decision_entries": len(entries),
            "failed_requests": len(failed),
            "fifo_ok": fifo_ok,
            "decision_bad_lines": len(self.bad_lines),
            "statuses": statuses,
            "details": {k: v for k, v in details.items() if v},
        }

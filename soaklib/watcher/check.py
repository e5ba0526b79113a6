"""The protocol check: one harmless request in the first minute of soaks B and C.

A soak that speaks the wrong protocol profile to a daemon learns nothing in hours (the
plan's first soak B logged ten ``UNKNOWN_TYPE`` decisions). So before B and C stage
anything, :class:`ProtocolCheck` stages one 1-episode selfplay request (source
``soak_protocol_check``), waits a bounded time for the daemon to archive it, and reads the
archive status and the decision line(s) it produced. ``UNKNOWN_TYPE`` or ``INVALID``, no
archive within the bound, or a decision log that does not parse raise ``ProtocolError``
(exit 1) with what the daemon did and which profile setting to change. The probe is
neither one of soak B's N requests nor a duplicate: :func:`is_probe_entry` tells its lines.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from soaklib.errors import ProtocolError
from soaklib.watcher.decisions import PROBE_SOURCE, Decision, DecisionStream
from soaklib.watcher.protocol import Profile, build_request, parse_archive_name, write_request

PROBE_PREFIX = "soak_check"
PROBE_SEQ = 0  # soak B numbers its requests from 1
DEFAULT_TIMEOUT_S = 45.0
SETTLE_S = 1.0  # after the archive appears, wait this long for decision lines written late
POLL_S = 0.1
OTHER_PROFILE = {"watcher-v2": "plan", "plan": "watcher-v2"}


def is_probe_entry(d: Decision, probe_name: str | None = None) -> bool:
    """True for a decision line written for the protocol-check probe."""
    return d.probe or (probe_name is not None and d.request == probe_name)


def timeout_for(reference: bool, sim: Mapping[str, Any] | None) -> float:
    """The bound: 3 poll cycles (at least 10 s) of the reference daemon, else 45 s."""
    if not reference:
        return DEFAULT_TIMEOUT_S
    poll_s = (sim or {}).get("poll_s", (sim or {}).get("poll-s", 1.0))
    try:
        return max(10.0, 3.0 * float(poll_s))
    except (TypeError, ValueError):
        return DEFAULT_TIMEOUT_S


@dataclass
class ProtocolCheckResult:
    """What the daemon did with the probe (JSON-able via ``to_dict``)."""

    request_name: str
    request_type: str
    status: str | None  # archive status, else the status of its decision lines
    archive_names: list[str]
    decision_lines: int  # dispatch lines naming the probe (the profile's entries)
    dispatch_types: list[str]
    handled_times: int
    elapsed_s: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ProtocolCheck:
    """Stage the probe with :meth:`start`, then :meth:`poll` until it returns a result.

    ``poll`` returns None while waiting and raises ``ProtocolError`` as soon as the answer
    is wrong; :meth:`run` does both with a wait loop. The decision log is read from the
    offset it had before the probe was staged, so old history never counts.
    """

    def __init__(self, project_dir: str | os.PathLike[str], profile: Profile, *,
                 timeout_s: float = DEFAULT_TIMEOUT_S, settle_s: float = SETTLE_S) -> None:
        self.project_dir = Path(project_dir)
        self.profile = profile
        self.timeout_s = timeout_s
        self.settle_s = settle_s
        self.name: str | None = None
        self.body: dict[str, Any] = {}
        self._stream: DecisionStream | None = None
        self._lines: list[Decision] = []
        self._bad: list[str] = []
        self._other_lines = 0
        self._t0 = 0.0
        self._archived_at: float | None = None
        self._refused_at: float | None = None
        self._archive: list[tuple[str | None, str]] = []

    # ------------------------------------------------------------------ paths

    def _dir(self, name: str) -> Path:
        path = self.profile.path(self.project_dir, name)
        assert path is not None
        return path

    def _rel(self, name: str) -> str:
        path = self._dir(name)
        try:
            return str(path.relative_to(self.project_dir))
        except ValueError:
            return str(path)

    # ------------------------------------------------------------------ steps

    def start(self) -> str:
        """Open the decision log at its end, then stage the probe; returns its file name."""
        self._stream = DecisionStream(self._dir("decision_log"), self.profile, from_end=True)
        self.name, self.body = build_request(
            self.profile, "selfplay", PROBE_SEQ, source=PROBE_SOURCE, episodes=1, prefix=PROBE_PREFIX,
            reason="soak protocol check: one harmless 1-episode selfplay request",
        )
        write_request(self.project_dir, self.profile, self.name, self.body)
        self._t0 = time.monotonic()
        return self.name

    def _read_lines(self) -> None:
        assert self._stream is not None
        for d in self._stream.poll():
            if d.kind == "bad":
                self._bad.append(d.text)
            elif is_probe_entry(d, self.name):
                self._lines.append(d)
            else:
                self._other_lines += 1

    def _find_archive(self) -> list[tuple[str | None, str]]:
        found = []
        try:
            with os.scandir(self._dir("archive_dir")) as it:
                for e in it:
                    status, original = parse_archive_name(self.profile, e.name)
                    if original == self.name:
                        found.append((status, e.name))
        except OSError:
            pass
        return sorted(found, key=lambda s: s[1])

    def _stray_archive(self) -> list[str]:
        """Archive entries that contain the probe's name but do not parse as its archive name."""
        assert self.name is not None
        stem = self.name[: -len(".json")]
        out = []
        for folder in {self._dir("archive_dir"), self._dir("requests_dir")}:
            try:
                with os.scandir(folder) as it:
                    out += [e.name for e in it if stem in e.name and e.name != self.name]
            except OSError:
                continue
        return sorted(set(out))

    def poll(self) -> ProtocolCheckResult | None:
        """One look: None while waiting; the result once judged; ``ProtocolError`` when wrong."""
        if self.name is None:
            raise RuntimeError("ProtocolCheck.poll() before start()")
        self._read_lines()
        now = time.monotonic()
        elapsed = now - self._t0
        pending = (self._dir("requests_dir") / self.name).exists()
        if self._archived_at is None and (not pending or self._refused_at is not None):
            self._archive = self._find_archive()
            if self._archive:
                self._archived_at = now
        status = self._status()
        if status in ("UNKNOWN_TYPE", "INVALID"):
            if self._archived_at is None and self._refused_at is None:
                self._refused_at = now  # seen in the log: give the archive a moment to appear
            if self._archived_at is not None or now - (self._refused_at or now) >= self.settle_s:
                self._read_lines()
                raise self._error(status, elapsed)
            return None
        if self._archived_at is not None:
            complete = len(self._lines) >= self.profile.expected_entries("selfplay") or status not in (None, "COMPLETED")
            if (complete and self._lines) or now - self._archived_at >= self.settle_s or elapsed >= self.timeout_s:
                return self._judge(status, elapsed)
            return None
        if elapsed >= self.timeout_s:
            raise self._error("timeout", elapsed, pending=pending)
        return None

    def run(self, *, stop_event: threading.Event | None = None, alive: Callable[[], bool] | None = None,
            kick: Callable[[], None] | None = None, poll_s: float = POLL_S) -> ProtocolCheckResult | None:
        """Start and wait for the verdict; None when stopped (``stop_event``) or the target died.

        ``kick`` is called before each look (e.g. one pass of the daemon's batch mode).
        """
        if self.name is None:
            self.start()
        while True:
            if kick is not None:
                kick()
            result = self.poll()
            if result is not None:
                return result
            if alive is not None and not alive():
                return None
            if stop_event is not None:
                if stop_event.wait(poll_s):
                    return None
            else:
                time.sleep(poll_s)

    # ------------------------------------------------------------------ judging

    def _status(self) -> str | None:
        statuses = [s for s, _ in self._archive if s]
        if "UNKNOWN_TYPE" in statuses or any(d.status == "UNKNOWN_TYPE" for d in self._lines):
            return "UNKNOWN_TYPE"
        if statuses:
            return statuses[0]
        line_statuses = [d.status for d in self._lines if d.status]
        if "INVALID" in line_statuses:
            return "INVALID"
        return line_statuses[-1] if line_statuses else None

    def _judge(self, status: str | None, elapsed: float) -> ProtocolCheckResult:
        p = self.profile
        rtype = str(self.body.get("request_type"))
        notes: list[str] = []
        dispatch = [d for d in self._lines if d.kind == "dispatch"]
        dtypes = [d.dispatch_type for d in dispatch if d.dispatch_type]
        if not self._lines:
            raise self._error("no_lines", elapsed, status=status)
        unknown = [t for t in dtypes if not any(t in routes for routes in p.routing.values())]
        if unknown and status == "COMPLETED":
            raise ProtocolError(
                f"protocol check: the daemon handled {self.name} ({status}) but logged dispatch_type "
                f"{', '.join(repr(t) for t in sorted(set(unknown)))}, which profile {p.name!r} does not route; "
                f"set profile_overrides.routing.{rtype}=[{', '.join(sorted(set(dtypes)))}]",
                what="misrouted", request=str(self.name), status=status, profile=p.name,
                details={"dispatch_types": dtypes},
            )
        misrouted = [t for t in dtypes if not p.routes_ok("selfplay", t)]
        if misrouted:
            notes.append(f"the probe selfplay was dispatched as {', '.join(sorted(set(misrouted)))} (misrouted)")
        expected = p.expected_entries("selfplay")
        handled = 1
        if status == "COMPLETED":
            n = len(dispatch)
            if n == 0 or n % expected:
                raise ProtocolError(
                    f"protocol check: the daemon completed {self.name} and wrote {n} decision line(s) for it "
                    f"({', '.join(dtypes) or 'no dispatch line'}), but profile {p.name!r} expects {expected} per "
                    f"selfplay request; set profile_overrides.entries_per_request.{rtype}={n or 1}"
                    + (f" (or use profile: {OTHER_PROFILE[p.name]})" if p.name in OTHER_PROFILE else ""),
                    what="entries", request=str(self.name), status=status, profile=p.name,
                    details={"decision_lines": n, "expected": expected},
                )
            handled = n // expected
            if handled > 1:
                notes.append(f"the probe was handled {handled} times (not counted as a duplicate)")
        elif status is not None:
            notes.append(f"the probe came back {status}: the daemon understood the request")
        if self._bad:
            notes.append(f"{len(self._bad)} decision-log line(s) did not parse, e.g. {self._bad[0][:80]!r}")
        return ProtocolCheckResult(
            request_name=str(self.name), request_type=rtype, status=status,
            archive_names=[n for _, n in self._archive], decision_lines=len(dispatch),
            dispatch_types=dtypes, handled_times=handled, elapsed_s=elapsed, notes=notes,
        )

    def _error(self, what: str, elapsed: float, *, pending: bool = False, status: str | None = None) -> ProtocolError:
        p = self.profile
        rtype = str(self.body.get("request_type"))
        other = OTHER_PROFILE.get(p.name)
        archived = ", ".join(n for _, n in self._archive) or None
        fields: dict[str, Any] = {"request": str(self.name), "profile": p.name, "elapsed_s": round(elapsed, 2),
                                  "archive": archived, "what": what, "status": status}
        if what == "UNKNOWN_TYPE":
            did = f"archived {self.name} as UNKNOWN_TYPE" + (f" ({archived})" if archived else "")
            if not archived:
                did = f"logged UNKNOWN_TYPE for {self.name}"
            prefixed = any(s is not None for s, _ in self._archive)
            if p.name == "plan" and prefixed:
                fix = ("this looks like a watcher-v2 daemon — run with profile: watcher-v2 "
                       "(or set profile_overrides.request_types.selfplay=selfplay_retrain)")
            elif other:
                fix = (f"the daemon does not speak profile {p.name!r}: run with profile: {other}, or set profile "
                       f"overrides request_types.selfplay=<the daemon's name for selfplay>")
            else:
                fix = "set profile_overrides.request_types.selfplay=<the daemon's name for selfplay>"
            return ProtocolError(f"protocol check: the daemon {did}: it does not know request_type {rtype!r}; {fix}",
                                 **fields)
        if what == "INVALID":
            where = "under 'parameters'" if p.params_nested else "at the top level"
            fix = f"run with profile: {other}" if other else "set profile_overrides.params_nested"
            return ProtocolError(
                f"protocol check: the daemon archived {self.name} as INVALID: it could not read a request body "
                f"with request_type {rtype!r} and episodes {where}; {fix} (or set profile_overrides."
                f"params_nested={str(not p.params_nested).lower()})", **fields)
        if what == "no_lines":
            if self._bad:
                return ProtocolError(
                    f"protocol check: the daemon archived {self.name} ({status or 'no status'}) but its decision log "
                    f"{self._rel('decision_log')} does not parse as JSON lines ({len(self._bad)} bad line(s), e.g. "
                    f"{self._bad[0][:80]!r}); set profile_overrides.decision_log=<the daemon's JSON-lines log>",
                    details={"bad_lines": len(self._bad)}, **fields)
            seen = f" ({self._other_lines} other line(s) appended meanwhile)" if self._other_lines else ""
            return ProtocolError(
                f"protocol check: the daemon archived {self.name} ({status or 'no status'}) but wrote no decision "
                f"line naming it in {self._rel('decision_log')}{seen}; set profile_overrides.decision_log=<its "
                f"decision log>" + (f", or run with profile: {other}" if other else ""), **fields)
        # timeout
        if pending:
            return ProtocolError(
                f"protocol check: the daemon did not pick up {self.name} within {self.timeout_s:g} s (still pending "
                f"in {self._rel('requests_dir')}/): it does not poll that folder, is halted or stalled, or polls "
                f"more slowly than the bound; check the daemon's state, or set profile_overrides."
                f"requests_dir=<its request folder>", **fields)
        stray = self._stray_archive()
        if stray:
            return ProtocolError(
                f"protocol check: the daemon took {self.name} and left {', '.join(stray[:3])}, which profile "
                f"{p.name!r} does not read as an archive entry of it in {self._rel('archive_dir')}/; set profile "
                f"overrides archive_prefixed / archive_statuses"
                + (f", or run with profile: {other}" if other else ""), details={"stray": stray}, **fields)
        return ProtocolError(
            f"protocol check: the daemon took {self.name} from {self._rel('requests_dir')}/ but no archive entry "
            f"appeared in {self._rel('archive_dir')}/ within {self.timeout_s:g} s; set profile_overrides."
            f"archive_dir=<its archive folder>", **fields)


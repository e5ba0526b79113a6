"""The WATCHER file protocol as data: profiles, request files, archive names, decision lines.

The daemon under test is reached only through files in its project folder (DESIGN.md
section 6). The soak plan describes that protocol one way and the daemon as built does it
another way, so every name is a field of a :class:`Profile`; ``watcher-v2`` and ``plan``
ship, and ``get_profile(name, overrides)`` describes a daemon that differs in a detail.
This module only builds paths and bodies and parses what comes back: no processes, no waits.
The decision log is read structurally (JSON fields), never by grepping for words.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from soaklib.errors import ParameterError
from soaklib.store import atomic_write_bytes, utc_now

ARCHIVE_STATUSES = ("COMPLETED", "FAILED", "REJECTED", "REJECTED_BY_LLM", "DRY_RUN_OK", "INVALID", "UNKNOWN_TYPE")
REQUEST_SUFFIX = ".json"
_STAMP_FMT = "%Y%m%d_%H%M%S"


@dataclass(frozen=True)
class Profile:
    """Every name of the WATCHER protocol; defaults are those of ``watcher-v2``.

    Relative paths are inside the project folder; an absolute path is used as is.
    ``request_types`` maps the plan's logical names (``selfplay``, ``learning_loop``) to the
    daemon's; ``routing`` and ``entries_per_request`` are keyed by the daemon's names.
    ``request_record_prefix`` marks decision lines that record a request's handling rather
    than a dispatch (v2 writes ``ch13_request_<type>`` beside the ``selfplay`` line).
    """

    name: str = "watcher-v2"
    requests_dir: str = "watcher_requests"
    archive_dir: str = "watcher_requests/archive"
    archive_prefixed: bool = True  # archive names are <STATUS>_<YYYYmmdd_HHMMSS>_<original>
    archive_statuses: tuple[str, ...] = ARCHIVE_STATUSES
    decision_log: str = "watcher_decisions.jsonl"
    request_types: dict[str, str] = field(
        default_factory=lambda: {"selfplay": "selfplay_retrain", "learning_loop": "learning_loop"}
    )
    params_nested: bool = False  # True: episodes / scope under "parameters"
    routing: dict[str, frozenset[str]] = field(
        default_factory=lambda: {
            "selfplay_retrain": frozenset({"selfplay", "ch13_request_selfplay_retrain"}),
            "learning_loop": frozenset({"learning_loop", "ch13_request_learning_loop"}),
            "pipeline_rerun": frozenset({"ch13_request_pipeline_rerun"}),
        }
    )
    request_record_prefix: str | None = "ch13_request_"
    entries_per_request: dict[str, int] = field(
        default_factory=lambda: {"selfplay_retrain": 2, "learning_loop": 2, "pipeline_rerun": 1}
    )
    halt_file: str = "/tmp/agent_halt"
    halt_exits: bool = False  # False: the daemon pauses on the halt file (stop it after)
    log_file: str | None = None  # None: stderr only, captured by the harness into target.log
    heuristic_in_log_regex: str | None = r"HTTP LLM evaluation failed|heuristic default"
    heuristic_in_decisions: bool = False  # True: heuristic fallbacks are decision-log lines
    state_file: str | None = "daemon_state.json"
    history_file: str = "lottery_history.json"
    new_draw_flag: str = "new_draw.flag"
    policy_dir: str = "policy_history"
    telemetry_file: str = "telemetry/learning_health_latest.json"
    batch_argv: tuple[str, ...] | None = None  # e.g. ("--process-requests",): batch mode

    def path(self, project_dir: str | os.PathLike[str], name: str) -> Path | None:
        """The path of the profile field ``name`` (e.g. ``"decision_log"``); None if unset."""
        value = getattr(self, name)
        if value is None:
            return None
        p = Path(value)
        return p if p.is_absolute() else Path(project_dir) / p

    def request_type(self, logical_type: str) -> str:
        """The daemon's name for a logical request type (the daemon's own names pass through)."""
        if logical_type in self.request_types:
            return self.request_types[logical_type]
        if logical_type in self.routing or logical_type in self.request_types.values():
            return logical_type
        allowed = sorted(set(self.request_types) | set(self.routing))
        raise ParameterError(
            f"request type {logical_type!r} is unknown to profile {self.name!r}: allowed are {', '.join(allowed)}",
            key="request_type",
            value=logical_type,
        )

    def logical_type(self, request_type: str) -> str:
        """The logical name of one of the daemon's request types (unknown names pass through)."""
        for logical, actual in self.request_types.items():
            if actual == request_type:
                return logical
        return request_type

    def expected_entries(self, logical_type: str) -> int:
        """Decision lines one request of this type writes when it is handled once."""
        return self.entries_per_request.get(self.request_type(logical_type), 1)

    def routes_ok(self, logical_type: str, dispatch_type: str) -> bool:
        """True when ``dispatch_type`` is an expected dispatch for a request of this type."""
        return dispatch_type in self.routing.get(self.request_type(logical_type), frozenset())

    def dispatch_kind(self, dispatch_type: str) -> str | None:
        """Logical type dispatched by a decision line's ``dispatch_type``; None for a request record."""
        prefix = self.request_record_prefix
        if prefix and dispatch_type.startswith(prefix):
            return None
        for request_type, expected in self.routing.items():
            if dispatch_type in expected:
                return self.logical_type(request_type)
        return None


PROFILES: dict[str, Profile] = {
    "watcher-v2": Profile(),
    "plan": Profile(
        name="plan",
        archive_prefixed=False,
        request_types={"selfplay": "selfplay", "learning_loop": "learning_loop"},
        params_nested=True,
        routing={"selfplay": frozenset({"selfplay"}), "learning_loop": frozenset({"learning_loop"})},
        request_record_prefix=None,
        entries_per_request={"selfplay": 1, "learning_loop": 1},
        halt_file="watcher_halt.flag",
        halt_exits=True,
        log_file="logs/watcher_agent.log",
        heuristic_in_log_regex=None,
        heuristic_in_decisions=True,
        state_file=None,
    ),
}


def _coerce_field(name: str, value: Any, default: Any) -> Any:
    """Check an override against the type of the field's default; normalise containers."""
    where = f"profile override {name!r}"
    if name in ("archive_statuses", "batch_argv"):
        if value is None and name == "batch_argv":
            return None
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ParameterError(f"{where} = {value!r} is invalid: expected a list of strings", key=name, value=value)
        return tuple(value)
    if name == "routing":
        if not isinstance(value, Mapping):
            raise ParameterError(f"{where} = {value!r} is invalid: expected {{request_type: [dispatch_type, ...]}}", key=name)
        return {str(k): frozenset([v] if isinstance(v, str) else v) for k, v in value.items()}
    if name in ("request_types", "entries_per_request"):
        if not isinstance(value, Mapping):
            raise ParameterError(f"{where} = {value!r} is invalid: expected a mapping", key=name, value=value)
        return dict(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ParameterError(f"{where} = {value!r} is invalid: expected true or false", key=name, value=value)
        return value
    if value is None or isinstance(value, str):
        if value is None and name not in ("log_file", "heuristic_in_log_regex", "state_file", "request_record_prefix"):
            raise ParameterError(f"{where} is null: this field needs a value", key=name)
        if name == "heuristic_in_log_regex" and value is not None:
            try:
                re.compile(value)
            except re.error as e:
                raise ParameterError(f"{where} = {value!r} is not a valid regex: {e}", key=name, value=value) from None
        return value
    raise ParameterError(f"{where} = {value!r} is invalid: expected a string", key=name, value=value)


def get_profile(name: str, overrides: Mapping[str, Any] | None = None) -> Profile:
    """The named profile, with fields replaced by ``overrides`` (checked by name and type)."""
    if name not in PROFILES:
        raise ParameterError(
            f"unknown protocol profile {name!r}: allowed are {', '.join(PROFILES)}", key="profile", value=name
        )
    base = PROFILES[name]
    if not overrides:
        return base
    fields = {f.name for f in dataclasses.fields(Profile)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ParameterError(
            f"unknown profile field {unknown[0]!r}: allowed fields are {', '.join(sorted(fields))}",
            key=unknown[0],
        )
    changes = {k: _coerce_field(k, v, getattr(base, k)) for k, v in overrides.items()}
    return dataclasses.replace(base, **changes)


# --------------------------------------------------------------------------- requests


def _utc(stamp: datetime | None) -> datetime:
    ts = stamp or utc_now()
    return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)


def build_request(
    profile: Profile,
    logical_type: str,
    seq: int,
    *,
    source: str,
    episodes: int | None = None,
    scope: str | None = None,
    extra: Mapping[str, Any] | None = None,
    stamp: datetime | None = None,
    reason: str | None = None,
    prefix: str = "soak",
    width: int = 2,
) -> tuple[str, dict[str, Any]]:
    """A request file name and body in the profile's dialect.

    The name is ``{prefix}_{seq:0{width}d}_{YYYYmmdd_HHMMSS}.json``: zero-padded, so filename
    order is sequence order (FIFO). ``extra`` holds further request parameters and goes where
    the profile puts parameters (top level for v2, under ``parameters`` for the plan).
    """
    if not isinstance(seq, int) or seq < 0 or seq >= 10**width:
        raise ParameterError(
            f"sequence number {seq!r} does not fit {width} digits: pass a larger width to keep filename order = FIFO",
            key="seq",
            value=seq,
        )
    ts = _utc(stamp)
    name = f"{prefix}_{seq:0{width}d}_{ts.strftime(_STAMP_FMT)}{REQUEST_SUFFIX}"
    params: dict[str, Any] = {}
    if episodes is not None:
        params["episodes"] = episodes
    if scope is not None:
        params["scope"] = scope
    params.update(extra or {})
    body: dict[str, Any] = {
        "request_type": profile.request_type(logical_type),
        "source": source,
        "sequence_number": seq,
        "timestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "reason": reason or f"{source}: request {seq:0{width}d} ({logical_type})",
    }
    if profile.params_nested:
        body["parameters"] = params
    else:
        body.update(params)
    return name, body


def write_request(project_dir: str | os.PathLike[str], profile: Profile, name: str, body: Mapping[str, Any]) -> Path:
    """Stage a request atomically: a temporary name that is not ``*.json``, then a rename."""
    if Path(name).name != name or not name.endswith(REQUEST_SUFFIX) or name.startswith("."):
        raise ParameterError(f"request file name {name!r} must be a plain '*.json' name", key="name", value=name)
    folder = profile.path(project_dir, "requests_dir")
    assert folder is not None
    folder.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(folder / name, (json.dumps(dict(body), indent=2) + "\n").encode("utf-8"))


# --------------------------------------------------------------------------- archive


_COLLISION_RE = re.compile(r"^(.+)\.\d+(\.json)$")


def parse_archive_name(profile: Profile, filename: str) -> tuple[str | None, str]:
    """``(status, original_name)`` of an archived request; status None when not prefixed.

    A ``.N`` before ``.json`` (a daemon archiving the same name twice without overwriting)
    is dropped, so a request handled twice shows up as one original archived twice.
    """
    status, original = None, filename
    for candidate in sorted(profile.archive_statuses, key=len, reverse=True):
        rest = filename[len(candidate) + 1:]
        if filename.startswith(candidate + "_") and re.match(r"\d{8}_\d{6}_.", rest):
            status, original = candidate, rest[16:]
            break
    m = _COLLISION_RE.match(original)
    return status, (m.group(1) + m.group(2)) if m else original


@dataclass
class QueueState:
    """The request queue at one moment: pending names (FIFO order), archive by original name."""

    pending: list[str] = field(default_factory=list)
    archived: dict[str, list[tuple[str | None, str]]] = field(default_factory=dict)
    corrupt: list[str] = field(default_factory=list)  # pending files that are not a JSON object

    @property
    def archived_count(self) -> int:
        """Archived files (a request archived twice counts twice)."""
        return sum(len(v) for v in self.archived.values())

    @property
    def duplicates(self) -> dict[str, int]:
        """Original names archived more than once → times archived."""
        return {k: len(v) for k, v in self.archived.items() if len(v) > 1}


def _plain_files(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as it:
            return [e.name for e in it if not e.name.startswith(".") and e.is_file(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []


def scan_queue(project_dir: str | os.PathLike[str], profile: Profile, *, check_bodies: bool = True) -> QueueState:
    """List pending and archived requests; with ``check_bodies`` also parse pending files."""
    req = profile.path(project_dir, "requests_dir")
    arc = profile.path(project_dir, "archive_dir")
    assert req is not None and arc is not None
    state = QueueState(pending=sorted(n for n in _plain_files(req) if n.endswith(REQUEST_SUFFIX)))
    for archived_name in sorted(_plain_files(arc)):
        status, original = parse_archive_name(profile, archived_name)
        state.archived.setdefault(original, []).append((status, archived_name))
    if check_bodies:
        for n in state.pending:
            try:
                with open(req / n, "rb") as fh:
                    ok = isinstance(json.loads(fh.read(4 << 20)), dict)
            except FileNotFoundError:
                continue  # picked up meanwhile
            except (OSError, ValueError):
                ok = False
            if not ok:
                state.corrupt.append(n)
    return state


def log_paths(profile: Profile, project_dir: str | os.PathLike[str] | None, captured: str | os.PathLike[str] | None) -> list[Path]:
    """The target log to scan: the profile's log file when it has one, else the captured output.

    Not both: a daemon that logs to a file usually logs the same lines to stderr as well,
    and scanning both would count every error twice.
    """
    if project_dir is not None and profile.log_file is not None:
        return [profile.path(project_dir, "log_file")]  # type: ignore[list-item]
    return [Path(captured)] if captured is not None else []

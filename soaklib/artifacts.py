"""The artifacts a run signs off with, as typed values: a soak's signoff and a lane's evidence.

Each is a frozen dataclass whose fields are the artifact's JSON keys (the files on disk keep
their keys and order: new keys are only ever added). ``to_json()`` gives the JSON object,
``from_json(data)`` reads one back, keeping keys this version does not know in ``extra``
(so a newer writer's file survives a rewrite). Each is also a read-only ``Mapping`` of its
JSON, so the renderers (Markdown, the combined signoff, the notebooks' tables) read a value
built in memory and a file loaded from disk the same way.

One ``SCHEMA_VERSION`` per artifact kind, here: the signoff's and the evidence's.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from soaklib.analysis.criteria import CriterionRow
from soaklib.errors import ParameterError

#: a soak's ``{run_id}.json`` (DESIGN.md section 10); 1 since the first release
SIGNOFF_SCHEMA_VERSION = 1
#: a lane's ``{run_id}.json`` (DESIGN.md section 3): 1.2 added retries, job latency, provenance
EVIDENCE_SCHEMA_VERSION = "1.2"

JSONObject = dict[str, Any]
A = TypeVar("A", bound="_Artifact")


class _Artifact(Mapping[str, Any]):
    """JSON conversion and the Mapping view shared by the artifacts (dataclasses below)."""

    extra: JSONObject

    def to_json(self) -> JSONObject:
        """The artifact's JSON object: its fields in order, then the keys kept in ``extra``."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)  # type: ignore[arg-type]
               if f.name != "extra"}
        return {**out, **{k: v for k, v in self.extra.items() if k not in out}}

    @classmethod
    def from_json(cls: type[A], data: Mapping[str, Any]) -> A:
        """The artifact from its JSON object (a file's content); unknown keys go to ``extra``."""
        if not isinstance(data, Mapping):
            raise ParameterError(f"a {cls.__name__} is a JSON object, not {type(data).__name__}", key=cls.__name__)
        names = {f.name for f in dataclasses.fields(cls) if f.name != "extra"}  # type: ignore[arg-type]
        missing = sorted(f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                         if f.name in _required(cls) and f.name not in data)
        if missing:
            raise ParameterError(f"not a {cls.__name__}: the keys {', '.join(missing)} are missing",
                                 key=cls.__name__, value=missing)
        known = {k: v for k, v in data.items() if k in names}
        return cls(**{**known, "extra": {k: v for k, v in data.items() if k not in names}})

    def __getitem__(self, key: str) -> Any:
        if key != "extra" and key in _field_names(type(self)):
            return getattr(self, key)
        return self.extra[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_json())

    def __len__(self) -> int:
        return len(self.to_json())


def _field_names(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls))


def _required(cls: type) -> frozenset[str]:
    return frozenset(getattr(cls, "REQUIRED", ()))


@dataclass(frozen=True, kw_only=True, eq=False)
class Signoff(_Artifact):
    """A WATCHER soak's signoff (``{run_id}.json``): verdict, criteria rows and context."""

    REQUIRED = ("run_id", "soak", "verdict", "criteria")

    schema_version: int = SIGNOFF_SCHEMA_VERSION
    run_id: str
    soak: str
    verdict: str  # PASS | FAIL
    complete: bool = False
    interrupted: bool = False
    started_at: str | None = None
    completed_at: str | None = None
    duration_h: float = 0.0
    criteria: list[CriterionRow]
    observed: JSONObject = field(default_factory=dict)
    analysis: JSONObject = field(default_factory=dict)
    halt: JSONObject | None = None
    target_exit: JSONObject | None = None
    events: JSONObject = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    parameters: JSONObject = field(default_factory=dict)
    environment: JSONObject = field(default_factory=dict)
    figures: dict[str, str] = field(default_factory=dict)
    provenance: JSONObject = field(default_factory=dict)
    run_length_s: float = 0.0
    plan_length_s: float | None = None
    plan_length_max_s: float | None = None
    target_started: bool = True
    target_log_tail: list[str] = field(default_factory=list)
    not_judged: list[str] = field(default_factory=list)
    verdict_label: str = ""
    production_ready: bool = False
    verdict_reasons: list[str] = field(default_factory=list)
    stop_on_fail: JSONObject | None = None  # the running verdict's early stop: when and on which row (None: off)
    extra: JSONObject = field(default_factory=dict)

    def failing(self) -> list[str]:
        """The metrics of the FAIL rows."""
        return [r["metric"] for r in self.criteria if r["status"] == "FAIL"]


@dataclass(frozen=True, kw_only=True, eq=False)
class LaneEvidence(_Artifact):
    """A multi-provider lane's evidence (``{run_id}.json``): the seed runner's keys, then the
    percentiles, retries, provenance, preflight, parameters, environment, gate and criteria."""

    REQUIRED = ("run_id",)

    schema_version: str = EVIDENCE_SCHEMA_VERSION
    run_id: str
    passed: bool = False
    all_clean: bool = False
    interrupted: bool = False
    total_jobs: int = 0
    total_passed: int = 0
    total_failed: int = 0
    pass_rate: float | None = None
    started_at: str | None = None
    completed_at: str | None = None
    duration_sec: float = 0.0
    provenance: JSONObject = field(default_factory=dict)
    provider_summary: JSONObject = field(default_factory=dict)
    retry_summary: JSONObject = field(default_factory=dict)
    latency_definitions: JSONObject = field(default_factory=dict)
    rounds: list[JSONObject] = field(default_factory=list)
    preflight: JSONObject = field(default_factory=dict)
    parameters: JSONObject = field(default_factory=dict)
    environment: JSONObject = field(default_factory=dict)
    gate: JSONObject = field(default_factory=dict)
    criteria: list[CriterionRow] = field(default_factory=list)
    exit_code: int | None = None
    gate_confidence: JSONObject = field(default_factory=dict)  # per provider: Wilson bounds, pass^k, rounds needed
    extra: JSONObject = field(default_factory=dict)

    def jobs(self) -> list[JSONObject]:
        """Every job of every round, in order."""
        return [job for r in self.rounds for job in r.get("jobs") or []]

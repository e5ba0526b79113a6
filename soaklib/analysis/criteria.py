"""Pass criteria as data, evaluated into rows ``{metric, observed, bound, status}``. No I/O.

The defaults are the pass-criteria tables of the WATCHER soak plan (sections 4, 5, 6)
with the triage hints of its section 7. Status rules, by ``direction``:

- ``max`` (smaller is better): PASS if observed <= pass_bound, FAIL if observed >
  fail_bound, WARN in between.
- ``min`` (bigger is better): PASS if observed >= pass_bound, FAIL if observed <
  fail_bound, WARN in between.
- ``eq``: PASS if observed equals pass_bound, FAIL otherwise.
- ``in`` (categories): PASS if observed is one of pass_bound, FAIL if one of fail_bound,
  WARN otherwise; a bool observation reads as PASS (True) or FAIL (False).

A bound given as a string names another observation (``"staged"``: N of N staged). A
bound with ``per_hours`` is stated for a run of that many hours; with the run's
``duration_h`` both bounds are scaled by ``duration_h / per_hours``, which is judging the
observed rate: a short run is neither waved through nor failed for being short. A
``count`` criterion (whole things: cycles) keeps its scaled bounds whole and at least 1
(``ceil`` for ``min``, ``floor`` for ``max``), never a fraction of a cycle.
A missing observation is FAIL, unless the criterion is ``optional`` (then SKIP); its row
carries no triage (nothing was measured that the triage could explain).
An observation estimated with confidence bounds (``intervals``: metric → (low, high), e.g. a
Theil–Sen slope's 95% interval, or the memory verdict's FAIL and PASS bounds) is judged at
both ends: PASS only if both pass, FAIL only if both fail, otherwise WARN ("inconclusive:
run longer") — so a few noisy samples can neither fail a run nor wave it through.
All ``*_mb`` values are MiB (2**20 bytes).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

import numpy as np
import pandas as pd

from soaklib.analysis.units import SECONDS_PER_HOUR, bound_text, format_duration
from soaklib.errors import ParameterError

Direction = Literal["max", "min", "eq", "in"]
STATUSES = ("PASS", "WARN", "FAIL", "SKIP")
ROW_KEYS = ("metric", "label", "observed", "unit", "pass_bound", "fail_bound", "status", "note", "triage",
            "direction")


class CriterionRow(TypedDict):
    """One evaluated criterion, as every artifact writes it (the keys of ``ROW_KEYS``)."""

    metric: str
    label: str
    observed: Any
    unit: str
    pass_bound: Any
    fail_bound: Any
    status: str  # PASS | WARN | FAIL | SKIP
    note: str
    triage: str
    direction: str


@dataclass(frozen=True)
class Criterion:
    """One row of a pass-criteria table: a metric id, its bounds and what to do on FAIL."""

    metric: str
    label: str
    unit: str
    pass_bound: Any
    fail_bound: Any
    direction: Direction = "max"
    per_hours: float | None = None  # the bounds are stated for a run of this many hours
    triage: str = ""  # what to look at next when it does not pass
    optional: bool = False  # the observation may be unavailable (e.g. no GPU): None → SKIP
    count: bool = False  # whole things (cycles): scaled bounds stay whole counts, at least 1

    def check(self) -> Criterion:
        """Raise ParameterError when the bounds contradict the direction."""
        if self.direction not in ("max", "min", "eq", "in"):
            raise ParameterError(
                f"criterion {self.metric}: direction {self.direction!r} is invalid: allowed are max, min, eq, in",
                key=f"criteria.{self.metric}.direction",
            )
        if self.per_hours is not None and (self.direction not in ("max", "min") or not self.per_hours > 0):
            raise ParameterError(
                f"criterion {self.metric}: per_hours = {self.per_hours!r} needs direction max or min and hours > 0",
                key=f"criteria.{self.metric}.per_hours",
            )
        p, f = self.pass_bound, self.fail_bound
        if self.direction in ("max", "min") and _is_num(p) and _is_num(f) and (
                (self.direction == "max" and p > f) or (self.direction == "min" and p < f)):
            worse = "above" if self.direction == "max" else "below"
            raise ParameterError(
                f"criterion {self.metric}: pass_bound {p} is {worse} fail_bound {f} for direction {self.direction}",
                key=f"criteria.{self.metric}",
            )
        return self


_MEM_TRIAGE = (
    "Memory leak (plan 7): find what grows with tracemalloc snapshots (top allocations by line). "
    "Common causes: decision history kept in an in-memory list (should be file-only), LLM response "
    "buffers not freed, survivor data loaded but never garbage-collected."
)
_LLM_TRIAGE = (
    "LLM connection drop (plan 7): check the LLM server log, that port 8080 is still bound "
    "(ss -tlnp), and GPU VRAM (model evicted?). The lifecycle manager should restart the server; "
    "else restart it (llm_services/start_llm_servers.sh)."
)
_QUEUE_TRIAGE = (
    "Queue corruption (plan 7): requests stuck pending, never archived. Check the request files' "
    "permissions and parse each pending request JSON; compare the archive names with the staged ones."
)
_DISK_TRIAGE = (
    "Disk space exhaustion (plan 7): du -sh logs/ watcher_requests/archive/ policy_history/ "
    "telemetry/ diagnostics_history/; look for log flooding; clean old archives and logs."
)
_ERR_TRIAGE = "Read the first traceback in the target's log (target.log; the first error lines are in events)."
_FD_TRIAGE = (
    "File handles not closed: list the target's /proc/<pid>/fd links near the end of the run "
    "(files, sockets, pipes) and look for handlers or HTTP sessions opened per cycle."
)
_HALT_TRIAGE = (
    "The daemon hangs or does not stop: check that it polls the halt flag / handles SIGTERM between "
    "cycles and that no child process keeps it alive (the harness killed the tree: TERM, then KILL)."
)

DEFAULT_CRITERIA: dict[str, list[Criterion]] = {
    "a": [
        Criterion("memory_growth_mb", "Memory growth: < 50 MB over 4 hours (fail: > 200 MB growth, leak)",
                  "MiB", 50.0, 200.0, "max", per_hours=4.0, triage=_MEM_TRIAGE),
        Criterion("memory_slope_mb_per_h", "RSS growth rate (triage symptom: grows > 50 MB/hour)",
                  "MiB/h", 12.5, 50.0, "max", triage=_MEM_TRIAGE),
        Criterion("fd_range", "File descriptors: stable ±5", "FDs", 5, 20, "max", triage=_FD_TRIAGE),
        Criterion("fd_trend", "File descriptors: not monotonically increasing", "bool", 0, 0, "eq",
                  triage=_FD_TRIAGE),
        Criterion("tracebacks", "Tracebacks in log: 0 (fail: any unhandled exception)", "count", 0, 0, "eq",
                  triage=_ERR_TRIAGE),
        Criterion("halt_s", "Halt responsiveness: stops within 30 s (fail: hangs or doesn't stop)",
                  "s", 30.0, 30.0, "max", triage=_HALT_TRIAGE),
        Criterion("disk_growth_mb", "Disk usage growth: < 50 MB logs (fail: > 500 MB, log flooding)",
                  "MiB", 50.0, 500.0, "max", per_hours=4.0, triage=_DISK_TRIAGE),
        Criterion("llm_reconnect", "LLM reconnection: handles timeout gracefully (fail: connection permanently lost)",
                  "state", ("never_down", "recovered"), ("lost",), "in", triage=_LLM_TRIAGE),
    ],
    "b": [
        Criterion("archived", "Requests archived: N / N (fail: any missing)", "requests", "staged", "staged",
                  "eq", triage=_QUEUE_TRIAGE),
        Criterion("pending", "Requests pending after test: 0 (fail: any stuck)", "requests", 0, 0, "eq",
                  triage=_QUEUE_TRIAGE),
        Criterion("duplicates", "Duplicate processing: 0 (fail: any duplicates)", "requests", 0, 0, "eq",
                  triage="A request was dispatched more than once: check that the daemon archives a request "
                  "before (or atomically with) dispatching it and that a re-scan of watcher_requests/ mid-cycle "
                  "cannot pick it up again; the requests are named in the signoff (observed.details)."),
        Criterion("misrouted", "Correct routing: selfplay → selfplay, learn → learn (fail: misrouted)",
                  "requests", 0, 0, "eq", triage="Compare each archived request's type with the decision "
                  "log's dispatch_type for it; check the protocol profile's request_type names."),
        Criterion("decision_entries", "Decision log: N entries with unique sequence numbers (fail: missing or corrupt)",
                  "entries", "staged", "staged", "eq", triage="Look for decision-log lines that do not parse "
                  "and for requests archived without a decision line (INVALID / UNKNOWN_TYPE)."),
        Criterion("errors", "Errors: 0 unhandled exceptions (fail: any traceback)", "count", 0, 0, "eq",
                  triage=_ERR_TRIAGE),
    ],
    "c": [
        Criterion("cycles", "Completed cycles: ≥ 5 over 2 hours (fail: 0 or stuck)", "cycles", 5, 1, "min",
                  per_hours=2.0, count=True, triage="Cycles stalled: check draws are injected (new_draw.flag), that the "
                  "daemon is not HALTED (daemon_state.json) and the last decision-log lines."),
        Criterion("draws_ingested_delta", "Draws ingested: matches injection rate (± 2) (fail: missing or duplicated)",
                  "draws", 2, 2, "max", triage="Compare lottery_history.json with the injector's events: "
                  "replayed draws (sequence restarted) or lost rewrites (non-atomic writes)."),
        Criterion("selfplay_dispatches", "Selfplay dispatches: ≥ 1 (fail: 0, never triggered)", "dispatches",
                  1, 1, "min", triage="Trigger evaluation never chose selfplay: read the step lines' actions "
                  "and confidence in the decision log."),
        Criterion("heuristic_fallbacks", "Heuristic fallbacks: 0 (fail: > 2, LLM connection issues)", "count",
                  0, 2, "max", triage=_LLM_TRIAGE),
        Criterion("memory_growth_mb", "Memory growth: < 100 MB over 2 hours (fail: > 300 MB, leak)", "MiB",
                  100.0, 300.0, "max", per_hours=2.0, triage=_MEM_TRIAGE),
        Criterion("errors", "Errors: 0 unhandled exceptions (fail: any traceback)", "count", 0, 0, "eq",
                  triage=_ERR_TRIAGE),
        Criterion("policy_candidates", "Policy candidates: accumulating in policy_history/ (fail: no new candidates)",
                  "candidates", 1, 1, "min", triage="No learning loop completed: check learning_loop dispatches "
                  "and their status in the decision log."),
        Criterion("telemetry_valid", "Telemetry: valid JSON, model count increasing (fail: corrupt or stale)",
                  "bool", True, True, "eq", triage="Read telemetry/learning_health_latest.json: parse errors, "
                  "an old timestamp or a model count that does not grow."),
        Criterion("queue_stuck", "Request queue: all processed, none stuck (fail: stuck or lost requests)",
                  "requests", 0, 0, "eq", triage=_QUEUE_TRIAGE),
        Criterion("convergence", "Convergence signal: hit rate trends up with the known seed",
                  "trend", ("improving", "converged"), ("worsening",), "in",
                  triage="Hit rate not improving: check the injected seed matches the daemon's true_seed "
                  "and that learning loops complete."),
    ],
}

OVERRIDE_KEYS = ("label", "unit", "pass_bound", "fail_bound", "direction", "per_hours", "triage", "optional", "count")


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _plain(x: Any) -> Any:
    """numpy scalars → Python; NaN → None; a convergence dict → its state."""
    if isinstance(x, Mapping) and "trend" in x:
        return "converged" if x.get("converged") else x["trend"]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, (list, tuple)):
        return tuple(_plain(v) for v in x)
    return x


def apply_overrides(criteria: Sequence[Criterion], overrides: Mapping[str, Any] | None) -> list[Criterion]:
    """Criteria with ``{metric: {pass_bound: .., fail_bound: .., ...}}`` applied and checked.

    Unknown metric ids or keys raise ``ParameterError`` naming what is allowed.
    """
    out = list(criteria)
    if not overrides:
        return [c.check() for c in out]
    ids = [c.metric for c in out]
    for metric, change in overrides.items():
        if metric not in ids:
            raise ParameterError(
                f"criteria.{metric}: unknown metric id; allowed are {', '.join(ids)}", key=f"criteria.{metric}"
            )
        if not isinstance(change, Mapping):
            raise ParameterError(
                f"criteria.{metric} = {change!r} is invalid: expected a mapping such as "
                f"{{pass_bound: 10, fail_bound: 20}}", key=f"criteria.{metric}", value=change
            )
        bad = [k for k in change if k not in OVERRIDE_KEYS]
        if bad:
            raise ParameterError(
                f"criteria.{metric}: unknown key(s) {', '.join(map(str, bad))}; allowed are {', '.join(OVERRIDE_KEYS)}",
                key=f"criteria.{metric}",
            )
        fields = {k: _override_value(k, v) for k, v in change.items()}
        i = ids.index(metric)
        out[i] = dataclasses.replace(out[i], **fields)
    return [c.check() for c in out]


def _override_value(key: str, value: Any) -> Any:
    """Lists become tuples; a numeric string bound ("10" from a --set flag) becomes a number."""
    if isinstance(value, list):
        return tuple(value)
    if key in ("pass_bound", "fail_bound", "per_hours") and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value  # a bound naming another observation
    return value


def _resolve(bound: Any, observed: Mapping[str, Any]) -> tuple[Any, str]:
    """A bound, with a string bound looked up among the observations (for direction ≠ in)."""
    if isinstance(bound, str):
        value = _plain(observed.get(bound))
        if value is None:
            return None, f"bound {bound!r} was not observed"
        return value, ""
    return bound, ""


def _judge(c: Criterion, obs: Any, p: Any, f: Any) -> str:
    if c.direction == "in":
        if isinstance(obs, bool):
            return "PASS" if obs else "FAIL"
        pass_set = p if isinstance(p, tuple) else (p,)
        fail_set = f if isinstance(f, tuple) else (f,)
        if obs in pass_set:
            return "PASS"
        return "FAIL" if obs in fail_set else "WARN"
    if c.direction == "eq":
        if (_is_num(obs) or isinstance(obs, bool)) and (_is_num(p) or isinstance(p, bool)):
            return "PASS" if math.isclose(float(obs), float(p), rel_tol=1e-9, abs_tol=1e-12) else "FAIL"
        return "PASS" if obs == p else "FAIL"
    x = float(obs)
    if c.direction == "max":
        return "PASS" if x <= p else ("FAIL" if x > f else "WARN")
    return "PASS" if x >= p else ("FAIL" if x < f else "WARN")


def scaled_count(bound: float, direction: str, stated: float) -> int:
    """A count bound scaled to a run, kept whole: ``ceil`` for ``min``, ``floor`` for ``max``;
    at least 1 when the stated bound is at least 1 (never a fraction of what can be counted)."""
    whole = math.ceil(bound - 1e-9) if direction == "min" else math.floor(bound + 1e-9)
    return int(max(whole, 1 if stated >= 1 else 0))


def _scale(c: Criterion, p: float, f: float, duration_h: float) -> tuple[float, float, str]:
    """Bounds stated for ``c.per_hours`` scaled to a run of ``duration_h`` hours, and the note saying so."""
    per = float(c.per_hours or 1.0)
    scale = duration_h / per
    sp, sf = p * scale, f * scale
    run = format_duration(duration_h * SECONDS_PER_HOUR)
    pass_t, fail_t = bound_text(p, c.direction, kind="pass"), bound_text(f, c.direction, kind="fail")
    rates = (f"rates {bound_text(p / per, c.direction, kind='pass')} / "
             f"{bound_text(f / per, c.direction, kind='fail')} {c.unit}/h")
    if c.count:
        wp, wf = scaled_count(sp, c.direction, p), scaled_count(sf, c.direction, f)
        note = (f"bounds {pass_t} / {fail_t} {c.unit} stated for {per:g} h; for this {run} run {sp:.3g} / "
                f"{sf:.3g} {c.unit} at the same rate ({rates}), judged as whole {c.unit}: "
                f"{bound_text(wp, c.direction, kind='pass')} / {bound_text(wf, c.direction, kind='fail')}")
        return wp, wf, note
    note = (f"bounds {pass_t} / {fail_t} {c.unit} stated for {per:g} h, scaled to this {run} run as "
            f"{bound_text(sp, c.direction, kind='pass')} / {bound_text(sf, c.direction, kind='fail')} "
            f"{c.unit} ({rates})")
    return sp, sf, note


BOUNDS_SUFFIX = "_bounds"  # an observed ``{metric}_bounds: [low, high]`` is judged at both ends (see above)


def observed_bounds(observed: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    """The confidence bounds an observer gave with its values (``{metric}_bounds``), for ``evaluate``."""
    out: dict[str, tuple[float, float]] = {}
    for key, v in observed.items():
        if key.endswith(BOUNDS_SUFFIX) and isinstance(v, (list, tuple)) and len(v) == 2:
            lo, hi = v
            if _is_num(lo) and _is_num(hi) and math.isfinite(lo) and math.isfinite(hi):
                out[key[: -len(BOUNDS_SUFFIX)]] = (float(lo), float(hi))
    return out


def evaluate(
    criteria: Sequence[Criterion],
    observed: Mapping[str, Any],
    *,
    duration_h: float | None = None,
    overrides: Mapping[str, Any] | None = None,
    intervals: Mapping[str, tuple[float, float]] | None = None,
) -> list[CriterionRow]:
    """One row per criterion: ``{metric, label, observed, unit, pass_bound, fail_bound, status, note, triage}``.

    ``pass_bound``/``fail_bound`` in a row are the bounds actually applied (scaled by
    ``duration_h / per_hours`` when both are known; the note gives the stated bound).
    ``triage`` is filled for WARN and FAIL rows. Collect all rows, then call ``verdict``.
    """
    rows: list[CriterionRow] = []
    for c in apply_overrides(criteria, overrides):
        obs = _plain(observed.get(c.metric))
        p, note_p = _resolve(c.pass_bound, observed) if c.direction != "in" else (c.pass_bound, "")
        f, note_f = _resolve(c.fail_bound, observed) if c.direction != "in" else (c.fail_bound, "")
        notes = [n for n in (note_p, note_f) if n]
        if c.per_hours is not None and _is_num(p) and _is_num(f):
            if duration_h is not None and duration_h > 0:
                p, f, note = _scale(c, p, f, duration_h)
                notes.append(note)
            else:
                notes.append(f"run duration unknown: bounds for {c.per_hours:g} h applied unscaled")
        if obs is None:
            status = "SKIP" if c.optional else "FAIL"
            notes.append("not available" if c.optional else "required observation missing")
        elif c.direction in ("max", "min") and not (_is_num(obs) or isinstance(obs, bool)):
            status = "FAIL"
            notes.append(f"observed {obs!r} is not a number")
        elif p is None or f is None:
            status = "FAIL"
        else:
            status = _judge(c, obs, p, f)
            ci = (intervals or {}).get(c.metric)
            if ci is not None and c.direction in ("max", "min") and all(_is_num(v) and math.isfinite(v) for v in ci):
                ends = {_judge(c, ci[0], p, f), _judge(c, ci[1], p, f)}
                status = next(iter(ends)) if len(ends) == 1 else "WARN"
                if len(ends) > 1:
                    notes.append(f"inconclusive: confidence bounds {ci[0]:.3g} … {ci[1]:.3g} {c.unit} span the bounds; "
                                 "run longer")
        missing = obs is None and not c.optional
        rows.append(
            CriterionRow(
                metric=c.metric,
                label=c.label,
                observed=list(obs) if isinstance(obs, tuple) else obs,
                unit=c.unit,
                pass_bound=list(p) if isinstance(p, tuple) else p,
                fail_bound=list(f) if isinstance(f, tuple) else f,
                status=status,
                note="; ".join(notes),
                triage=c.triage if status in ("WARN", "FAIL") and not missing else "",
                direction=c.direction,
            )
        )
    return rows


def verdict(rows: Sequence[Mapping[str, Any]]) -> Literal["PASS", "FAIL"]:
    """FAIL if any row is FAIL (WARN and SKIP do not fail), and FAIL when nothing was judged."""
    if not rows:
        return "FAIL"
    return "FAIL" if any(r.get("status") == "FAIL" for r in rows) else "PASS"


def criteria_table(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The rows as a DataFrame in a fixed column order, for display."""
    return pd.DataFrame([{k: r.get(k) for k in ROW_KEYS} for r in rows], columns=list(ROW_KEYS))

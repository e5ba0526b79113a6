"""What a WATCHER soak verdict may be called, and what it was measured on.

The soak plan (sections 4–6, 9) declares the autonomous loop production-ready only when
soaks A, B and C pass at the plan's lengths: A 2–4 h, B 30–60 min (5–10 requests), C 2+ h.
A PASS on a run shorter than that judges rates, not endurance, and a WARN row is an
inconclusive measurement, so neither reads "production-ready". One place decides the
words, for the JSON, the Markdown, the combined signoff and the notebooks:

- ``verdict_label`` — one soak: ``PASS (production-ready)``, ``PASS (short run)``,
  ``PASS with warnings``, ``PASS (short run, with warnings)``, ``FAIL (needs fixes)``,
  ``FAIL (incomplete run)``, ``FAIL (target did not start)``.
- ``combined_verdict`` — soaks A + B + C: ``PRODUCTION-READY`` only when all three are
  full-length clean PASSes; ``NEEDS FIXES`` when one fails or is missing; otherwise
  ``NOT SIGNED OFF: short runs`` / ``NOT SIGNED OFF: warnings`` (or both).
- ``provenance`` — what was soaked (the built-in reference daemon, a command, an attached
  process) and for how long against the plan's length.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from soaklib.analysis.units import format_duration
from soaklib.redact import redact
from soaklib.runs import Run
from soaklib.soak import registry

REFERENCE_MODULE = "soaklib.sim.watcher"
DEFAULT_INTERVAL_S = 30.0

PRODUCTION_READY = "PASS (production-ready)"
READY, NOT_READY, NOT_SIGNED_OFF = "PRODUCTION-READY", "NEEDS FIXES", "NOT SIGNED OFF"


class Verdict(NamedTuple):
    """The words of a verdict, whether it is production-ready, and why not."""

    label: str
    production_ready: bool
    reasons: list[str]


def verdict_label(verdict: str, *, complete: bool = True, full_length: bool = True,
                  warnings: Sequence[str] = (), failing: Sequence[str] = (),
                  target_started: bool = True, length: str = "") -> Verdict:
    """The words of one soak's verdict (``verdict`` is the JSON's PASS / FAIL).

    Production-ready needs all of: PASS, a complete run, the plan's length (``full_length``)
    and no WARN row (``warnings``: their metric ids). ``failing`` (FAIL metric ids) and
    ``length`` (e.g. "60 s of the plan's 2–4 h") only go into the reasons.
    """
    reasons: list[str] = []
    if not target_started:
        reasons.append("the target did not start")
    if not complete:
        reasons.append("incomplete run")
    if failing:
        reasons.append("FAIL: " + ", ".join(failing))
    if not full_length:
        reasons.append("short run" + (f": {length}" if length else ""))
    if warnings:
        reasons.append("WARN: " + ", ".join(warnings))
    if verdict != "PASS":
        word = ("target did not start" if not target_started else
                "incomplete run" if not complete else "needs fixes")
        return Verdict(f"FAIL ({word})", False, reasons or ["FAIL"])
    if not full_length and warnings:
        return Verdict("PASS (short run, with warnings)", False, reasons)
    if not full_length:
        return Verdict("PASS (short run)", False, reasons)
    if warnings:
        return Verdict("PASS with warnings", False, reasons)
    return Verdict(PRODUCTION_READY, True, [])


def signoff_verdict(signoff: Mapping[str, Any]) -> Verdict:
    """``verdict_label`` of a signoff dict (its verdict, completeness, length and rows)."""
    rows = signoff.get("criteria") or []
    prov = signoff.get("provenance") or {}
    return verdict_label(
        str(signoff.get("verdict")), complete=bool(signoff.get("complete")),
        full_length=bool(prov.get("full_length")), target_started=signoff.get("target_started", True) is not False,
        warnings=[r["metric"] for r in rows if r.get("status") == "WARN"],
        failing=[r["metric"] for r in rows if r.get("status") == "FAIL"], length=str(prov.get("length") or ""))


def verdict_line(signoff: Mapping[str, Any]) -> str:
    """The signoff's verdict in Markdown: the words, the target, the length against the plan,
    and for a PASS that is not production-ready, why not (a second paragraph)."""
    words = signoff_verdict(signoff)
    prov = signoff.get("provenance") or {}
    line = (f"**Verdict: {words.label}** · target: {prov.get('description') or 'unknown'} · "
            f"{prov.get('length') or 'length unknown'}")
    if signoff.get("verdict") == "PASS" and not words.production_ready:
        line += "\n\nNot production-ready: " + "; ".join(words.reasons) + "."
    return line


def combined_verdict(soaks: Mapping[str, Mapping[str, Any]]) -> Verdict:
    """The words of the A + B + C verdict from each soak's summary.

    A summary has ``present``, ``verdict`` (PASS / FAIL / MISSING), ``complete``,
    ``production_ready`` and ``verdict_label``. NEEDS FIXES when a soak is missing, fails
    or is incomplete; NOT SIGNED OFF (short runs, warnings) when all pass but one is not
    production-ready; PRODUCTION-READY only when all three are.
    """
    broken = [f"soak {k.upper()}: {_why_broken(s)}" for k, s in sorted(soaks.items())
              if not s.get("present") or s.get("verdict") != "PASS" or not s.get("complete")]
    if broken or len(soaks) < 3:
        return Verdict(NOT_READY, False, broken or ["a soak is missing"])
    short = [k.upper() for k, s in sorted(soaks.items()) if "short run" in str(s.get("verdict_label"))]
    warned = [k.upper() for k, s in sorted(soaks.items()) if "warnings" in str(s.get("verdict_label"))]
    other = [k.upper() for k, s in sorted(soaks.items())
             if not s.get("production_ready") and k.upper() not in short + warned]
    if not (short or warned or other):
        return Verdict(READY, True, [])
    words = (["short runs"] if short else []) + (["warnings"] if warned else []) + (["not production-ready"] if other else [])
    reasons = ([f"short runs: {', '.join(short)}"] if short else []) + \
              ([f"warnings: {', '.join(warned)}"] if warned else []) + \
              ([f"not production-ready: {', '.join(other)}"] if other else [])
    return Verdict(f"{NOT_SIGNED_OFF}: {', '.join(words)}", False, reasons)


def _why_broken(summary: Mapping[str, Any]) -> str:
    if not summary.get("present"):
        return "no run"
    if summary.get("target_started") is False:
        return "the target did not start"
    if not summary.get("complete"):
        return "incomplete run"
    failing = [r["metric"] for r in summary.get("criteria") or [] if r.get("status") == "FAIL"]
    return "FAIL " + ", ".join(failing) if failing else str(summary.get("verdict_label") or summary.get("verdict"))


# --------------------------------------------------------------------------- provenance


def _plan_length(soak: str) -> tuple[float | None, float | None]:
    """The plan's (shortest, longest) length of a registered soak; (None, None) otherwise."""
    return registry.get(soak).plan_length_s if soak in registry.letters() else (None, None)


def plan_length_text(soak: str) -> str:
    """The plan's length of a soak in words (``2–4 h``)."""
    return registry.get(soak).plan_length_text if soak in registry.letters() else "unknown"


def length_text(run_length_s: float | None, soak: str) -> str:
    """``60 s of the plan's 2–4 h``."""
    return f"{format_duration(run_length_s)} of the plan's {plan_length_text(soak)}"


def is_full_length(run_length_s: float | None, soak: str, interval_s: float = DEFAULT_INTERVAL_S) -> bool:
    """True when the run lasted the plan's minimum, within one sampling interval (the last
    sample lands on an interval tick)."""
    shortest = _plan_length(soak)[0]
    if run_length_s is None or shortest is None:
        return False
    return run_length_s + max(0.0, interval_s) >= shortest


def _started_argv(run: Run) -> list[str] | None:
    ev = run.events
    if ev.empty or "kind" not in ev:
        return None
    started = ev[ev["kind"] == "target_started"]
    if started.empty:
        return None
    try:
        argv = json.loads(started["data"].iloc[0] or "{}").get("argv")
    except (TypeError, ValueError):
        return None
    return [str(redact(str(a))) for a in argv] if isinstance(argv, list) else None


def _shell(argv: Sequence[str]) -> str:
    return " ".join(str(redact(str(a))) for a in argv)


def provenance(run: Run, run_length_s: float | None) -> dict[str, Any]:
    """What was soaked and for how long against the plan (JSON-able).

    The target is the manifest's ``reference_daemon`` (else inferred: no
    ``target.command`` / ``pid`` / ``match`` means the reference daemon), the command from
    ``parameters.target.command`` (arguments redacted), or the attached pid / pattern.
    """
    m = run.manifest
    params = m.get("parameters") or {}
    target = params.get("target") or {}
    soak = m.get("soak") or str(m.get("kind", "")).removeprefix("watcher-")
    command, pid, match = target.get("command"), target.get("pid"), target.get("match")
    reference = m.get("reference_daemon")
    if reference is None:
        reference = not command and pid is None and match is None
    argv = _started_argv(run)
    if reference:
        kind, description = "reference_daemon", f"the built-in reference daemon (python -m {REFERENCE_MODULE})"
    elif pid is not None or match is not None:
        kind = "attached"
        description = f"a process attached by pid {pid}" if pid is not None else f"a process attached by match {match!r}"
    else:
        kind, description = "command", f"`{_shell(command or argv or [])}`"
    processes = [t for t in params.get("targets") or [] if isinstance(t, dict)]
    if processes:  # several named processes (soak csys): each one named with how it ran
        def one(t: dict[str, Any]) -> str:
            if t.get("command"):
                return f"{t.get('name')} `{_shell(t['command'])}`"
            if t.get("pid") is not None or t.get("match") is not None:
                return f"{t.get('name')} attached by {'pid ' + str(t['pid']) if t.get('pid') is not None else 'match'}"
            return f"{t.get('name')} (the reference program)"
        description = "processes " + ", ".join(one(t) for t in processes)
    lo, hi = _plan_length(soak)
    interval = float((params.get("sampling") or {}).get("interval_s") or DEFAULT_INTERVAL_S)
    env = m.get("environment") or {}
    return {
        "target": kind,
        "reference_daemon": bool(reference),
        "description": description,
        "command": [str(redact(str(a))) for a in command] if command else None,
        "argv": argv,
        "pid": pid,
        "match": match,
        "project_dir": m.get("project_dir") or params.get("project_dir"),
        "profile": m.get("profile") or params.get("profile"),
        "host": env.get("host") or m.get("host"),
        "commit": env.get("commit"),
        "run_length_s": run_length_s,
        "plan_length_s": lo,
        "plan_length_max_s": hi,
        "plan_length": plan_length_text(soak),
        "full_length": is_full_length(run_length_s, soak, interval),
        "length": length_text(run_length_s, soak),
    }

"""The combined signoff of soaks A + B + C: one verdict, as the plan's section 9 asks.

``combine(run_dirs)`` recomputes each soak's signoff from its run folder (the same
``build_signoff`` as ``soak analyze``), and decides with
:func:`soaklib.report.verdict.combined_verdict`: **PRODUCTION-READY** only when all three
soaks are full-length clean PASSes (complete, the plan's length, no WARN row);
**NEEDS FIXES** when one is missing, incomplete or fails, with every failing row listed
(soak, metric, observed, bounds, triage, and the requests behind a count); otherwise
**NOT SIGNED OFF: short runs** / **warnings**. Each soak states what was soaked (the
built-in reference daemon or the target's command) and its length against the plan's.
``write_combined`` writes ``{output_dir}/soak-signoff-<UTC stamp>.json`` and ``.md``; the
Markdown opens with the plan's changelog entry::

    Soak Test A: PASS/FAIL — [duration], [memory delta], [notes]
    Soak Test B: PASS/FAIL — [requests processed], [errors], [notes]
    Soak Test C: PASS/FAIL — [cycles], [draws], [convergence signal], [notes]

    Verdict: Autonomous loop [PRODUCTION-READY / NEEDS FIXES / NOT SIGNED OFF: short runs]
"""
from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from soaklib.analysis.units import bound_text, format_duration, format_value
from soaklib.errors import ParameterError
from soaklib.report.verdict import NOT_READY, NOT_SIGNED_OFF, READY, combined_verdict
from soaklib.runs import load_run
from soaklib.soak import registry
from soaklib.store import MANIFEST, atomic_write_json, atomic_write_text, read_manifest, utc_now, utc_stamp

SCHEMA_VERSION = 1
__all__ = [
    "NOT_READY",
    "NOT_SIGNED_OFF",
    "READY",
    "combine",
    "find_runs",
    "load_combined",
    "pass_tables",
    "side_by_side_html",
    "summary_line",
    "to_markdown",
    "write_combined",
]
TABLE_COLUMNS = ["metric", "observed", "unit", "pass_bound", "fail_bound", "status", "direction"]


def combined_soaks() -> tuple[str, ...]:
    """The soaks the combined signoff needs (A, B, C and any registered with ``in_combined``)."""
    return tuple(k for k in registry.letters() if registry.get(k).in_combined)


def _soak_of(run_dir: Path) -> str | None:
    m = read_manifest(run_dir)
    soak = m.get("soak") or str(m.get("kind", "")).removeprefix("watcher-")
    return soak if soak in combined_soaks() else None


def find_runs(output_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """The latest run folder of each soak under ``output_dir`` (by manifest ``started_at``)."""
    latest: dict[str, tuple[str, Path]] = {}
    for manifest in Path(output_dir).glob(f"*/{MANIFEST}"):
        folder = manifest.parent
        soak = _soak_of(folder)
        started = str(read_manifest(folder).get("started_at") or "")
        if soak and (soak not in latest or started > latest[soak][0]):
            latest[soak] = (started, folder)
    return {k: v[1] for k, v in sorted(latest.items())}


def _normalise(run_dirs: Mapping[str, Any] | Sequence[Any]) -> dict[str, Path]:
    """``{soak: folder}`` from a mapping or from a list of folders (soak read from each manifest)."""
    items = run_dirs.items() if isinstance(run_dirs, Mapping) else [(None, d) for d in run_dirs]
    out: dict[str, Path] = {}
    for key, value in items:
        if value in (None, ""):
            continue
        folder = Path(value).expanduser()
        if folder.suffix == ".json" and folder.is_file():
            folder = folder.with_suffix("")
        if not (folder / MANIFEST).is_file():
            raise ParameterError(f"runs[{key or '?'}] = {str(value)!r} is not a soak run folder (no {MANIFEST}): "
                                 "pass {output_dir}/{run_id}", key=f"runs.{key}" if key else "runs", value=str(value))
        soak = _soak_of(folder)
        if key is not None and key not in combined_soaks():
            raise ParameterError(f"runs key {key!r} is invalid: allowed are {', '.join(combined_soaks())}", key="runs",
                                 value=key)
        if key is not None and soak != key:
            raise ParameterError(f"runs[{key}] = {str(folder)!r} is a soak {soak!r} run, not soak {key!r}",
                                 key=f"runs.{key}", value=str(value))
        if soak is None:
            raise ParameterError(f"{str(folder)!r} is not a WATCHER soak run (manifest kind "
                                 f"{read_manifest(folder).get('kind')!r})", key="runs", value=str(value))
        if soak in out:
            raise ParameterError(f"two runs of soak {soak}: {out[soak]} and {folder}; give one per soak",
                                 key="runs", value=str(value))
        out[soak] = folder
    return out


# --------------------------------------------------------------------------- summaries


def _duration(hours: float | None) -> str:
    return format_duration(hours * 3600.0) if hours else "no samples"


def _made_on(signoff: Mapping[str, Any]) -> str:
    """``60 s of the plan's 2–4 h on the built-in reference daemon``."""
    p = signoff.get("provenance") or {}
    on = "the built-in reference daemon" if p.get("reference_daemon") else (p.get("description") or "an unknown target")
    return f"{p.get('length') or _duration(signoff.get('duration_h'))} on {on}"


def _notes(signoff: Mapping[str, Any]) -> str:
    failing = [r["metric"] for r in signoff["criteria"] if r["status"] == "FAIL"]
    warn = [r["metric"] for r in signoff["criteria"] if r["status"] == "WARN"]
    parts = []
    if not signoff.get("complete"):
        parts.append("incomplete run")
    if failing:
        parts.append("FAIL: " + ", ".join(failing))
    if warn:
        parts.append("WARN: " + ", ".join(warn))
    return "; ".join(parts) or "all criteria pass"


def summary_line(soak: str, signoff: Mapping[str, Any]) -> str:
    """The plan's changelog line for one soak: ``Soak Test X: PASS — [values], [notes]``; the
    values are the soak type's own (its registry entry's ``summary``)."""
    made_on = _made_on(signoff)
    values = [made_on] if signoff.get("target_started") is False else \
        registry.get(soak).summary(signoff.get("observed") or {}, made_on)
    label = signoff.get("verdict_label") or signoff["verdict"]
    return f"Soak Test {soak.upper()}: {label} — {', '.join(values)}, [{_notes(signoff)}]"


FAILING_COLUMNS = ["soak", "metric", "observed", "pass_bound", "status", "note", "details", "triage"]


def failing_frame(combined: Mapping[str, Any]) -> Any:
    """The combined signoff's failing rows as a table (what the notebook shows)."""
    import pandas as pd

    return pd.DataFrame(combined["failing"], columns=FAILING_COLUMNS)


def _failing_rows(soak: str, signoff: Mapping[str, Any]) -> list[dict[str, Any]]:
    details = (signoff.get("observed") or {}).get("details") or {}
    out = []
    for r in signoff["criteria"]:
        if r["status"] != "FAIL":
            continue
        row = {"soak": soak, **{k: r.get(k) for k in ("metric", "label", "observed", "unit", "pass_bound",
                                                       "fail_bound", "status", "note", "triage", "direction")}}
        if details.get(r["metric"]):
            row["details"] = list(details[r["metric"]])
        out.append(row)
    if not signoff.get("complete"):
        out.append({"soak": soak, "metric": "complete", "label": "The soak ran to its end", "observed": False,
                    "unit": "bool", "pass_bound": True, "fail_bound": True, "status": "FAIL",
                    "note": "; ".join(signoff.get("notes") or [])[:500], "triage": "Run the soak again to its end."})
    return out


# --------------------------------------------------------------------------- the combined signoff


def combine(run_dirs: Mapping[str, Any] | Sequence[Any]) -> dict[str, Any]:
    """The combined A + B + C signoff (JSON-able): per-soak signoffs, failing rows, verdict, changelog."""
    from soaklib.report.signoff import build_signoff

    runs = _normalise(run_dirs)
    soaks: dict[str, Any] = {}
    failing: list[dict[str, Any]] = []
    for soak in combined_soaks():
        if soak not in runs:
            soaks[soak] = {"present": False, "verdict": "MISSING", "summary": f"Soak Test {soak.upper()}: MISSING — "
                           "no run given", "criteria": []}
            failing.append({"soak": soak, "metric": "run", "label": f"Soak {soak.upper()} was run", "observed": None,
                            "unit": "", "pass_bound": None, "fail_bound": None, "status": "MISSING",
                            "note": f"no soak {soak.upper()} run folder given", "triage": f"Run soak {soak.upper()}."})
            continue
        s = build_signoff(load_run(runs[soak]))
        rows = _failing_rows(soak, s)
        failing += rows
        soaks[soak] = {
            "present": True, "run_id": s["run_id"], "run_dir": str(runs[soak]), "verdict": s["verdict"],
            "verdict_label": s["verdict_label"], "production_ready": s["production_ready"],
            "verdict_reasons": s["verdict_reasons"], "provenance": s["provenance"],
            "run_length_s": s["run_length_s"], "plan_length_s": s["plan_length_s"],
            "target_started": s["target_started"],
            "complete": s["complete"], "duration_h": s["duration_h"], "started_at": s.get("started_at"),
            "completed_at": s.get("completed_at"), "summary": summary_line(soak, s), "criteria": s["criteria"],
            "failing": rows, "notes": s.get("notes") or [],
            "commit": (s.get("environment") or {}).get("commit"), "host": (s.get("environment") or {}).get("host"),
        }
    words = combined_verdict(soaks)
    now = utc_now()
    result = words.label
    lines = [f"SESSION_CHANGELOG_{now.strftime('%Y%m%d')}_SOAK.md", ""]
    lines += [soaks[k]["summary"] for k in combined_soaks()] + [""]
    reference = [k.upper() for k in combined_soaks() if (soaks[k].get("provenance") or {}).get("reference_daemon")]
    if reference:
        lines.append(f"Target: the built-in reference daemon (soak {', '.join(reference)}), not the WATCHER daemon")
    if words.reasons and not words.production_ready:
        lines.append("Not signed off: " + "; ".join(words.reasons) if result.startswith(NOT_SIGNED_OFF)
                     else "Needs fixes: " + "; ".join(words.reasons))
    lines.append(f"Verdict: Autonomous loop {result}")
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "watcher-soak-signoff",
        "generated_at": now.isoformat(),
        "verdict": result,
        "verdict_label": result,
        "production_ready": words.production_ready,
        "verdict_reasons": words.reasons,
        "runs": {k: str(v) for k, v in runs.items()},
        "soaks": soaks,
        "failing": failing,
        "changelog": "\n".join(lines),
    }


def pass_tables(combined: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """The three pass tables (metric, observed, unit, bounds, status), by soak."""
    out = {}
    for soak in combined_soaks():
        rows = combined["soaks"][soak].get("criteria") or []
        out[soak] = pd.DataFrame([{k: r.get(k) for k in TABLE_COLUMNS} for r in rows], columns=TABLE_COLUMNS)
    return out


def side_by_side_html(combined: Mapping[str, Any]) -> str:
    """The three pass tables side by side, each under its soak's verdict (HTML for a notebook)."""
    colours = {"PASS": "#1a7f37", "WARN": "#9a6700", "FAIL": "#cf222e", "SKIP": "#57606a", "MISSING": "#cf222e"}

    def coloured(text: str) -> str:
        return f"<span style='color:{colours.get(text, '#000')};font-weight:bold'>{html.escape(text)}</span>"

    parts = []
    for soak, table in pass_tables(combined).items():
        body = "".join(f"<tr><td>{html.escape(str(r['metric']))}</td><td>{html.escape(_cell(r['observed']))}</td>"
                       f"<td>{coloured(str(r['status']))}</td></tr>" for r in table.to_dict("records"))
        entry = combined["soaks"][soak]
        label = html.escape(str(entry.get("verdict_label") or entry["verdict"]))
        word = coloured(entry["verdict"]).replace(f">{html.escape(entry['verdict'])}<", f">{label}<")
        where = html.escape(str((entry.get("provenance") or {}).get("length") or ""))
        parts.append(f"<div style='flex:1;min-width:16em'><h4>Soak {soak.upper()}: {registry.get(soak).title} — "
                     f"{word}</h4><p>{where}</p><table><tr><th>metric</th>"
                     f"<th>observed</th><th>status</th></tr>{body}</table></div>")
    return "<div style='display:flex;gap:1.5em;align-items:flex-start'>" + "".join(parts) + "</div>"


def _cell(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        v = ", ".join(map(str, v))
    return format_value(v).replace("|", "\\|").replace("\n", " ")


def to_markdown(combined: Mapping[str, Any]) -> str:
    """The human-readable combined signoff: the changelog entry, what was soaked and for how
    long, the pass tables (bounds with their direction), the failing rows."""
    c = combined
    out = [f"# WATCHER soak signoff: {c['verdict']}", "", "```", c["changelog"], "```", ""]
    for soak in combined_soaks():
        s = c["soaks"][soak]
        out += [f"## Soak {soak.upper()}: {registry.get(soak).title} — {s.get('verdict_label') or s['verdict']}", ""]
        if not s["present"]:
            out += ["No run given.", ""]
            continue
        p = s.get("provenance") or {}
        out += [f"Run `{s['run_id']}` ({s['run_dir']}), complete: {'yes' if s['complete'] else 'no'}.", "",
                f"- target: {p.get('description') or 'unknown'}",
                f"- length: {p.get('length') or _duration(s.get('duration_h'))}"]
        if s.get("verdict_reasons") and not s.get("production_ready"):
            out.append(f"- not production-ready: {'; '.join(s['verdict_reasons'])}")
        out += ["", "| metric | observed | unit | pass | fail | status |", "|---|---|---|---|---|---|"]
        out += [f"| {r['metric']} | {_cell(r['observed'])} | {r['unit']} | "
                f"{_cell(bound_text(r['pass_bound'], r.get('direction'), kind='pass'))} | "
                f"{_cell(bound_text(r['fail_bound'], r.get('direction'), kind='fail'))} | **{r['status']}** |"
                for r in s["criteria"]]
        out.append("")
    if c["failing"]:
        out += ["## Failing rows", ""]
        for r in c["failing"]:
            out.append(f"- **Soak {r['soak'].upper()} · {r['metric']}** ({r['status']}): observed "
                       f"{_cell(r.get('observed'))} {r.get('unit') or ''}, pass bound "
                       f"{_cell(bound_text(r.get('pass_bound'), r.get('direction'), kind='pass'))}"
                       + (f" — {r['note']}" if r.get("note") else ""))
            for d in r.get("details") or []:
                out.append(f"  - {d}")
            if r.get("triage"):
                out.append(f"  - triage: {r['triage']}")
        out.append("")
    return "\n".join(out)


def write_combined(run_dirs: Mapping[str, Any] | Sequence[Any], output_dir: str | os.PathLike[str], *,
                   combined: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Combine (unless ``combined`` is given) and write ``{output_dir}/soak-signoff-<UTC stamp>.json|md``."""
    combined = combined if combined is not None else combine(run_dirs)
    stem = Path(output_dir) / f"soak-signoff-{utc_stamp()}"
    return {"json": atomic_write_json(stem.with_suffix(".json"), combined),
            "md": atomic_write_text(stem.with_suffix(".md"), to_markdown(combined))}


def load_combined(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A combined signoff JSON back as a dict."""
    data: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
    return data

"""The Markdown of a WATCHER soak signoff (``{run_id}.md``), from the signoff dict alone.

It says what the JSON knows: the verdict in words with what it was measured on
(:func:`soaklib.report.verdict.verdict_line`), the criteria with their bounds' directions,
the requests behind each count, why a target died or did not start (its exit code and the
last lines of ``target.log``, redacted), fitted and raw memory growth labelled as such,
the convergence signal, and every figure the signoff wrote.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from soaklib.analysis.units import bound_text, format_duration, format_number
from soaklib.report.verdict import verdict_line

FIGURE_TITLES = {
    "leak": "Memory of the target (leak curve, the judged GLS fit and its 95% band; warm-up cut and onset marked)",
    "fds": "File descriptors", "threads": "Threads", "vram": "GPU memory of the target",
    "disk": "Disk: watched folders and target log", "llm": "LLM health",
    "queue": "Request queue: each request from staging to archive",
    "convergence": "Convergence per cycle (isotonic fit)", "loop": "Autonomous loop over time",
}


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _code_block(lines: list[str]) -> list[str]:
    return ["```", *(line.replace("```", "'''") for line in lines), "```"]


def _provenance(s: Mapping[str, Any]) -> list[str]:
    p = s.get("provenance") or {}
    out = ["## What was soaked", ""]
    target = f"- target: {p.get('description') or 'unknown'}"
    if p.get("reference_daemon"):
        target += " — the simulator built into soaklib, not the WATCHER daemon the plan validates"
    out.append(target)
    if p.get("argv"):
        out.append(f"- started as: `{' '.join(p['argv'])}`")
    if p.get("project_dir"):
        out.append(f"- project folder: `{p['project_dir']}`")
    bits = [f"profile {p['profile']}" if p.get("profile") else "", f"host {p['host']}" if p.get("host") else "",
            f"commit {str(p['commit'])[:12]}" if p.get("commit") else ""]
    if any(bits):
        out.append("- " + " · ".join(b for b in bits if b))
    length = f"- length: {p.get('length') or 'unknown'}"
    if not p.get("full_length"):
        length += (f"; shorter than the plan's minimum of {format_duration(p.get('plan_length_s'))}: the bounds are "
                   "scaled to the run (rates are judged), endurance is not shown")
    out += [length, ""]
    return out


def _not_started(s: Mapping[str, Any]) -> list[str]:
    row: Mapping[str, Any] = next((r for r in s["criteria"] if r["metric"] == "target_started"), {})
    out = ["## The target did not start", "", str(row.get("note") or ""), ""]
    if s.get("target_log_tail"):
        out += ["Last lines of `target.log` (secrets redacted):", "", *_code_block(s["target_log_tail"]), ""]
    if row.get("triage"):
        out += [f"Triage: {row['triage']}", ""]
    if s.get("not_judged"):
        out += [f"Not judged (no criterion can be measured on a process that never ran): "
                f"{', '.join(s['not_judged'])}.", ""]
    return out


def _criteria(s: Mapping[str, Any]) -> list[str]:
    out = ["## Criteria", "", "| metric | observed | unit | pass | fail | status | note |",
           "|---|---|---|---|---|---|---|"]
    for r in s["criteria"]:
        d = r.get("direction")
        out.append(f"| {r['metric']} | {_cell(format_number(r['observed']))} | {r['unit']} | "
                   f"{_cell(bound_text(r['pass_bound'], d, kind='pass'))} | "
                   f"{_cell(bound_text(r['fail_bound'], d, kind='fail'))} | **{r['status']}** | "
                   f"{_cell(r.get('note') or '')} |")
    details = (s.get("observed") or {}).get("details") or {}
    status = {r["metric"]: r["status"] for r in s["criteria"]}
    listed = {k: v for k, v in details.items() if v}
    if listed:
        out += ["", "### Behind the counts", ""]
        for metric, names in listed.items():
            out.append(f"- **{metric}**" + (f" ({status[metric]})" if metric in status else "") + ": "
                       + "; ".join(map(str, names)))
    failing = [r for r in s["criteria"] if r["status"] in ("FAIL", "WARN") and r.get("triage")]
    if failing:
        out += ["", "## Triage", ""]
        out += [f"- **{r['metric']}** ({r['status']}): {r['triage']}" for r in failing]
    return out


def _target_exit(s: Mapping[str, Any]) -> list[str]:
    te = s.get("target_exit")
    if not te:
        return []
    sig = f", signal {te['signal']}" if te.get("signal") is not None else ""
    out = ["", "## Why the target stopped", "",
           f"The target exited on its own at {format_duration(te.get('exited_at_s'))} with exit code "
           f"{te.get('returncode')}{sig}" + (" (signal 9 without a traceback often means the kernel's OOM killer)"
                                            if te.get("signal") == 9 else "") + "."]
    if s.get("target_log_tail"):
        out += ["", "Last lines of `target.log` (secrets redacted):", "", *_code_block(s["target_log_tail"])]
    return out


def _memory_line(a: Mapping[str, Any], label: str, m: Mapping[str, Any]) -> str | None:
    if not m or not (m.get("n_bins") or 0) >= 2 or not _finite(m.get("slope_mb_per_h")):
        return None
    run = format_duration((a.get("duration_h") or 0.0) * 3600.0)
    fitted = m["slope_mb_per_h"] * (a.get("duration_h") or 0.0)
    return (f"- {label}: raw growth {m['raw_growth_mb']:+.3g} MB ({m['first_mb']:.1f} → {m['last_mb']:.1f} MB, "
            f"last − first bin median after the {format_duration(a.get('warmup_s'))} warm-up); fitted growth "
            f"{fitted:+.3g} MB over the {run} run ({_slope_name(m)} {m['slope_mb_per_h']:.3g} MB/h, 95% CI "
            f"{format_number(m['slope_low_mb_per_h'])} … {format_number(m['slope_high_mb_per_h'])}{_upper(m)}; the "
            f"memory_growth_mb row), trend {m['trend']}; {m['method']}")


def _upper(m: Mapping[str, Any]) -> str:
    """The segmented verdict's one-sided upper bound, what PASS is tested on."""
    u = m.get("slope_upper_mb_per_h")
    return f", one-sided 95% upper bound {format_number(u)} (the PASS test)" if _finite(u) else ""


def _slope_name(m: Mapping[str, Any]) -> str:
    """What the memory slope is: the segmented verdict's slope (with where it was judged from) or Theil–Sen."""
    if m.get("verdict") != "segmented":
        return "Theil–Sen slope"
    found = [f"warm-up cut at {format_duration(m['warmup_end_s'])}" if m.get("warmup_end_s") is not None else "",
             f"leak onset at {format_duration(m['onset_s'])}" if m.get("onset_s") is not None else "",
             f"{len(m.get('steps') or [])} one-time step(s) removed" if m.get("steps") and not m.get("staircase") else "",
             "a staircase" if m.get("staircase") else ""]
    where = "; ".join(x for x in found if x)
    return f"GLS slope under AR(1) noise{f' ({where})' if where else ''}"


def _exhaustion(s: Mapping[str, Any]) -> list[str]:
    """``## Time to exhaustion``: each resource against its limit, hours with the 80% interval, or why not."""
    rows = (s.get("analysis") or {}).get("exhaustion") or []
    if not rows:
        return []
    out = ["", "## Time to exhaustion", "", "| resource | limit | rate /h | time to the limit (80% interval) | status |",
           "| --- | --- | --- | --- | --- |"]
    for e in rows:
        scale, unit = (1 / 2**20, "MiB") if e.get("unit") == "bytes" else (1.0, e.get("unit") or "")
        limit = (f"{format_number(e['limit'] * scale)} {unit} ({e.get('limit_source') or '–'})"
                 if e.get("limit") is not None else "–")
        rate = f"{format_number(e['rate_per_h'] * scale)} {unit}" if e.get("rate_per_h") is not None else "–"
        if e.get("status") == "projected":
            hi = format_duration(e["hours_high"] * 3600.0) if e.get("hours_high") is not None else "never"
            when = (f"{format_duration(e['hours'] * 3600.0)} "
                    f"[{format_duration(e['hours_low'] * 3600.0)}, {hi}]")
        else:
            when = {"flat": "no projection (not growing conclusively)", "reached": "at the limit now"}.get(
                e.get("status") or "", "–")
        out.append(f"| {e['resource']} | {limit} | {rate} | {when} | {e.get('status')} |")
    return out


def _stop_line(s: Mapping[str, Any]) -> str | None:
    stop = s.get("stop_on_fail") or {}
    if not stop.get("stopped"):
        return None
    return (f"- stop_on_fail: the soak was ended at {format_duration(stop.get('stopped_at_s'))} on the "
            f"{stop.get('metric')} row ({stop.get('series')}: {format_number(stop.get('slope_mb_per_h'))} MB/h, "
            f"lower bound {format_number(stop.get('stop_low_mb_per_h'))} MB/h at look {stop.get('look')}); "
            f"{stop.get('rule')}")


def _convergence_line(s: Mapping[str, Any]) -> str | None:
    c = (s.get("observed") or {}).get("convergence")
    if not isinstance(c, Mapping) or not c.get("n"):
        return None
    state = "converged" if c.get("converged") else c.get("trend")
    reached = (f", target {format_number(c.get('target'))} reached at cycle {c['x_to_target']:g}"
               if c.get("x_to_target") is not None else "")
    return (f"- convergence: {c.get('metric', 'metric')} {format_number(c.get('first'))} → "
            f"{format_number(c.get('last'))} over {c['n']} cycles, {state}{reached}; Theil–Sen slope "
            f"{format_number(c.get('slope'))}/cycle, Kendall tau {format_number(c.get('kendall_tau'))} "
            f"(p {format_number(c.get('p_value'))}); the figure draws the isotonic (monotone least-squares) fit")


def _analysis(s: Mapping[str, Any]) -> list[str]:
    a = s.get("analysis") or {}
    lines = [_memory_line(a, "tree RSS", a.get("tree_rss") or {}) or
             _memory_line(a, "RSS", a.get("rss") or {})]
    if a.get("vram") and _finite(a["vram"].get("slope_mb_per_h")):
        lines.append(f"- target VRAM: slope {format_number(a['vram']['slope_mb_per_h'])} MB/h, trend {a['vram']['trend']}")
    f = a.get("fds")
    if f and f.get("fd_min") is not None:
        lines.append(f"- FDs: {f['fd_min']} … {f['fd_max']} (range {f['fd_range']}), Kendall tau "
                     f"{format_number(f['kendall_tau'])}")
    t = a.get("threads")
    if t and t.get("fd_min") is not None:
        lines.append(f"- threads: {t['fd_min']} … {t['fd_max']}")
    ll = a.get("llm") or {}
    if ll.get("state"):
        lines.append(f"- LLM health: {ll['state']}, {ll['down_samples']} of {ll['samples']} samples without answer")
    lines.append(_convergence_line(s))
    lines.append(_stop_line(s))
    h = a.get("harness") or {}
    if h.get("sample_cost_ms_p50") is not None:
        lines.append(f"- observer: sample cost p50 {h['sample_cost_ms_p50']:.2f} ms, p99 "
                     f"{format_number(h['sample_cost_ms_p99'])} ms; bytes read per sample at most {h['bytes_read_max']}")
    kept = [x for x in lines if x]
    return ["", "## Analysis", "", *kept] if kept else []


def _events(s: Mapping[str, Any]) -> list[str]:
    ev = s.get("events") or {}
    if not ev.get("counts"):
        return []
    out = ["", "## Events", "", ", ".join(f"{k}: {v}" for k, v in sorted(ev["counts"].items())), ""]
    for e in [e for e in ev.get("first", []) if e["kind"] not in ("log_error",)][:20]:
        out.append(f"- {e['t_s']:.1f} s · {e['kind']}: {_cell(e.get('message') or '')}")
    return out


def to_markdown(signoff: Mapping[str, Any]) -> str:
    """The human-readable signoff: verdict in words with target and length, what was soaked,
    criteria (bounds with direction), the requests behind the counts, triage, why the target
    stopped, analysis, events, notes and figures."""
    s = signoff
    out = [f"# WATCHER soak {s['soak'].upper()}: {s['run_id']}", "", verdict_line(s), "",
           f"complete: {'yes' if s['complete'] else 'no'} · run length {format_duration(s.get('run_length_s'))} · "
           f"started {s.get('started_at') or '–'}", ""]
    out += _provenance(s)
    if s.get("target_started") is False:
        out += _not_started(s)
    else:
        out += _criteria(s)
        out += _target_exit(s)
        out += _analysis(s)
        out += _exhaustion(s)
    out += _events(s)
    if s.get("notes"):
        out += ["", "## Notes", ""] + [f"- {n}" for n in s["notes"]]
    if s.get("figures"):
        out += ["", "## Figures", ""]
        for name, path in s["figures"].items():
            out += [f"### {FIGURE_TITLES.get(name, name)}", "", f"![{name}]({path})", ""]
    return "\n".join(out).rstrip("\n") + "\n"

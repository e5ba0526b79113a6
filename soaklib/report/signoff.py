"""The signoff of a WATCHER soak, computed from the run folder alone (DESIGN.md section 10).

``build_signoff(run)`` reads the samples, events, ``observations.json`` and the manifest
(parameters, environment) of a complete or partial run, computes the observed value of
each pass criterion (``observe_a`` / ``observe_b`` / ``observe_c``), evaluates the
criteria and decides the verdict. ``write_signoff(run_dir)`` writes ``{run_id}.json`` and
``{run_id}.md`` beside the run folder (atomically) with PNG figures under
``{run_id}/figures/``. ``soak analyze`` and the notebook call the same two functions.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from soaklib.analysis import evaluate, verdict
from soaklib.report.observations import (
    MIB,
    OBSERVERS,
    alive_samples,
    analyze,
    criterion_notes,
    event_data,
    first_column,
    llm_reconnect,
    memory_intervals,
    observe_a,
    observe_b,
    observe_c,
    read_observations,
    run_params,
    slope_fit,
    soak_criteria,
    soak_of,
    warmup_for,
)
from soaklib.store import Run, atomic_write_json, atomic_write_text, load_run, signoff_paths

__all__ = [
    "build_signoff", "write_signoff", "to_markdown", "growth_table", "soak_figures",
    "analyze", "llm_reconnect", "observe_a", "observe_b", "observe_c", "soak_criteria",
]  # fmt: skip

SCHEMA_VERSION = 1
# --------------------------------------------------------------------------- the signoff


def _notes(run: Run, obs: dict[str, Any], a: dict[str, Any], complete: bool) -> list[str]:
    notes: list[str] = []
    if not complete:
        notes.append("incomplete run: the harness did not finish it; samples up to the last flush are analysed "
                     "and an incomplete run cannot pass")
    if obs.get("interrupted"):
        notes.append("interrupted (Ctrl-C / SIGTERM): samples flushed, target stopped")
    if obs.get("error"):
        notes.append(f"the soak stopped on an error: {obs['error']}")
    if not a.get("gpu_available"):
        reason = next(iter(obs.get("gpu_notes") or []), None) or \
            ((run.manifest.get("environment") or {}).get("gpu") or {}).get("reason") or "no GPU reading"
        notes.append(f"GPU metrics unavailable: {reason}")
    for metric, reason in (obs.get("sampler_notes") or {}).items():
        notes.append(f"metric {metric} could not always be read: {reason}")
    for f in obs.get("preflight_failed") or []:
        notes.append(f"preflight finding (soaked anyway with --force): {f.get('message')}")
    if a.get("n_samples"):
        notes.append(f"growth fits leave out the first {a['warmup_s']:g} s (warm-up)")
    return notes


def build_signoff(run: Run) -> dict[str, Any]:
    """The signoff dict of a (partial) WATCHER soak run: criteria rows, verdict and context."""
    soak = soak_of(run)
    obs = read_observations(run)
    a = analyze(run)
    observed = OBSERVERS[soak](run, a)
    rows = evaluate(soak_criteria(soak), observed, duration_h=a["duration_h"] or None,
                    overrides=run_params(run).get("criteria") or None, intervals=memory_intervals(a))
    metric_notes = criterion_notes(run, obs, observed)
    for row in rows:
        extra = metric_notes.get(row["metric"])
        if extra:
            row["note"] = "; ".join(x for x in (extra, row["note"]) if x)
    complete = bool(run.complete and obs and not obs.get("interrupted") and not obs.get("error"))
    result = verdict(rows) if complete else "FAIL"
    events = event_data(run.events)
    counts: dict[str, int] = {}
    for e in events:
        counts[e["kind"]] = counts.get(e["kind"], 0) + 1
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run.run_id,
        "soak": soak,
        "verdict": result,
        "complete": complete,
        "interrupted": bool(obs.get("interrupted")),
        "started_at": run.manifest.get("started_at"),
        "completed_at": run.manifest.get("completed_at"),
        "duration_h": a["duration_h"],
        "criteria": rows,
        "observed": observed,
        "analysis": a,
        "halt": obs.get("halt"),
        "target_exit": obs.get("target_exit"),
        "events": {"counts": counts, "first": events[:50]},
        "notes": _notes(run, obs, a, complete),
        "parameters": run_params(run),
        "environment": run.manifest.get("environment") or {},
        "figures": {},
    }


def growth_table(signoff: dict[str, Any]) -> pd.DataFrame:
    """Memory series of the signoff's analysis (tree RSS, RSS, USS, VRAM): levels, slope with CI, trend."""
    a = signoff.get("analysis") or {}
    rows = []
    for key, label in (("tree_rss", "tree RSS"), ("rss", "RSS"), ("uss", "USS"), ("vram", "target VRAM"),
                       ("gpu_used", "GPU used (device)")):
        m = a.get(key)
        if m:
            rows.append({"series": label, "first_mb": m["first_mb"], "last_mb": m["last_mb"],
                         "slope_mb_per_h": m["slope_mb_per_h"], "slope_low_mb_per_h": m["slope_low_mb_per_h"],
                         "slope_high_mb_per_h": m["slope_high_mb_per_h"], "growth_mb": m["growth_mb"],
                         "trend": m["trend"], "kendall_p": m["p_value"], "n_bins": m["n_bins"]})
    return pd.DataFrame(rows)


def soak_figures(run: Run, signoff: dict[str, Any] | None = None) -> dict[str, Any]:
    """The signoff's figures (leak curve with fit and band, FDs, threads, VRAM, disk, LLM health)."""
    from soaklib.report import plots

    s = run.samples
    if s.empty or "t_s" not in s:
        return {}
    warmup = (signoff or {}).get("analysis", {}).get("warmup_s") if signoff else None
    warmup = warmup if warmup is not None else warmup_for(run, float(s["t_s"].max() - s["t_s"].min()))
    alive = alive_samples(s)
    fits = {c: f for c in ("tree_rss_bytes", "rss_bytes") if first_column(alive, c) and (f := slope_fit(alive, c, warmup))}
    fd_col = first_column(alive, "tree_num_fds", "num_fds") or "num_fds"
    vram_fit = slope_fit(alive, "gpu_target_bytes", warmup) if first_column(alive, "gpu_target_bytes") else None
    figs = {
        "leak": plots.leak_figure(alive, fits),
        "fds": plots.resource_figure(alive, fd_col, "open FDs", title="File descriptors (target tree)"),
        "threads": plots.resource_figure(alive, "threads", "threads", title="Threads (target)"),
        "vram": plots.resource_figure(alive, "gpu_target_bytes", "target VRAM (MB)", scale=1 / MIB,
                                      title="GPU memory of the target", fit=vram_fit),
        "disk": plots.resource_figure(s, "watched_bytes", "watched bytes (MB)", scale=1 / MIB,
                                      title="Disk: watched folders and target log"),
        "llm": plots.llm_health_figure(s),
    }
    return {k: v for k, v in figs.items() if v is not None}


def to_markdown(signoff: dict[str, Any]) -> str:
    """The human-readable signoff: verdict, criteria table, triage for FAIL rows, figures."""
    s = signoff
    out = [f"# WATCHER soak {s['soak'].upper()}: {s['run_id']}", ""]
    ready = "production-ready" if s["verdict"] == "PASS" else "needs fixes"
    out += [f"**Verdict: {s['verdict']}** ({ready}) · complete: {'yes' if s['complete'] else 'no'} · "
            f"duration {_dur(s['duration_h'])} · started {s.get('started_at') or '–'}", ""]
    out += ["## Criteria", "", "| metric | observed | unit | pass bound | fail bound | status | note |",
            "|---|---|---|---|---|---|---|"]
    for r in s["criteria"]:
        out.append(f"| {r['metric']} | {_fmt(r['observed'])} | {r['unit']} | {_fmt(r['pass_bound'])} | "
                   f"{_fmt(r['fail_bound'])} | **{r['status']}** | {_cell(r.get('note') or '')} |")
    failing = [r for r in s["criteria"] if r["status"] in ("FAIL", "WARN") and r.get("triage")]
    if failing:
        out += ["", "## Triage", ""]
        out += [f"- **{r['metric']}** ({r['status']}): {r['triage']}" for r in failing]
    a = s.get("analysis") or {}
    mem = a.get("tree_rss") or a.get("rss")
    out += ["", "## Analysis", ""]
    if mem:
        out.append(f"- tree RSS: {mem['first_mb']:.1f} → {mem['last_mb']:.1f} MB, slope "
                   f"{_fmt(mem['slope_mb_per_h'])} MB/h (95% CI {_fmt(mem['slope_low_mb_per_h'])} … "
                   f"{_fmt(mem['slope_high_mb_per_h'])}), trend {mem['trend']}; {mem['method']}")
    if a.get("vram"):
        out.append(f"- target VRAM: slope {_fmt(a['vram']['slope_mb_per_h'])} MB/h, trend {a['vram']['trend']}")
    if a.get("fds"):
        f = a["fds"]
        out.append(f"- FDs: {f['fd_min']} … {f['fd_max']} (range {f['fd_range']}), Kendall tau {_fmt(f['kendall_tau'])}")
    if a.get("threads"):
        out.append(f"- threads: {a['threads']['fd_min']} … {a['threads']['fd_max']}")
    if a.get("llm") and a["llm"].get("state"):
        ll = a["llm"]
        out.append(f"- LLM health: {ll['state']}, {ll['down_samples']} of {ll['samples']} samples without answer")
    h = a.get("harness") or {}
    if h.get("sample_cost_ms_p50") is not None:
        out.append(f"- observer: sample cost p50 {h['sample_cost_ms_p50']:.2f} ms, p99 "
                   f"{_fmt(h['sample_cost_ms_p99'])} ms; bytes read per sample at most {h['bytes_read_max']}")
    ev = s.get("events") or {}
    if ev.get("counts"):
        out += ["", "## Events", "", ", ".join(f"{k}: {v}" for k, v in sorted(ev["counts"].items())), ""]
        for e in [e for e in ev.get("first", []) if e["kind"] not in ("log_error",)][:20]:
            out.append(f"- {e['t_s']:.1f} s · {e['kind']}: {_cell(e.get('message') or '')}")
    if s.get("notes"):
        out += ["", "## Notes", ""] + [f"- {n}" for n in s["notes"]]
    if s.get("figures"):
        out += ["", "## Figures", ""] + [f"![{k}]({v})" for k, v in s["figures"].items()]
    return "\n".join(out) + "\n"


def _dur(hours: float) -> str:
    secs = (hours or 0.0) * 3600.0
    return f"{secs:.1f} s" if secs < 120 else f"{secs / 60:.1f} min" if secs < 7200 else f"{hours:.2f} h"


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v))
    return str(v)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_signoff(
    run_dir: str | os.PathLike[str] | Run, *, figures: bool = True, signoff: dict[str, Any] | None = None
) -> dict[str, Path]:
    """Compute the signoff of a run and write ``{run_id}.json`` / ``.md`` beside it (+ PNGs).

    Pass the loaded ``Run`` (and a signoff already built from it) to skip loading and
    analysing a large run twice, as the notebook does."""
    run = run_dir if isinstance(run_dir, Run) else load_run(run_dir)
    signoff = dict(signoff) if signoff is not None else build_signoff(run)
    signoff["figures"] = dict(signoff.get("figures") or {})
    json_path, md_path = signoff_paths(run.path)
    paths: dict[str, Path] = {}
    if figures:
        from soaklib.report.plots import save_figure

        for name, fig in soak_figures(run, signoff).items():
            png = save_figure(fig, run.path / "figures" / f"{name}.png")
            signoff["figures"][name] = os.path.relpath(png, json_path.parent)
            paths[f"{name}_png"] = png
    paths["json"] = atomic_write_json(json_path, signoff)
    paths["md"] = atomic_write_text(md_path, to_markdown(signoff))
    return paths

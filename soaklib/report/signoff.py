"""The signoff of a WATCHER soak, computed from the run folder alone (DESIGN.md section 10).

``build_signoff(run)`` reads the samples, events, ``observations.json`` and the manifest
(parameters, environment) of a complete or partial run, computes the observed value of
each pass criterion (``observe_a`` / ``observe_b`` / ``observe_c``), evaluates the
criteria and decides the verdict. ``write_signoff(run_dir)`` writes ``{run_id}.json`` and
``{run_id}.md`` beside the run folder (atomically) with PNG figures under
``{run_id}/figures/``. ``soak analyze`` and the notebook call the same two functions.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from soaklib.analysis import DEFAULT_CRITERIA, Criterion, evaluate, verdict
from soaklib.analysis.growth import disk_growth, fd_stability, growth_slope, memory_growth
from soaklib.store import Run, atomic_write_json, atomic_write_text, load_run, signoff_paths

SCHEMA_VERSION = 1
MIB = 2**20
MAX_AUTO_WARMUP_S = 600.0
TARGET_ALIVE = Criterion(
    "target_alive", "Target alive until the halt: no crash or exit on its own", "bool", True, True, "eq",
    triage="The daemon died during the soak: read the end of target.log (the exit code and signal are in the "
           "events); a signal 9 with no traceback often means the kernel's OOM killer (dmesg).")


#: Soak A's resource rows that soak B is judged by as well (issue: "plus the soak A resource criteria").
B_RESOURCE_METRICS = ("memory_slope_mb_per_h", "fd_range", "fd_trend", "disk_growth_mb", "llm_reconnect")


def soak_criteria(soak: str) -> list[Criterion]:
    """The pass criteria of a soak: the plan's table (DEFAULT_CRITERIA) plus ``target_alive``;
    soak B also carries soak A's resource rows."""
    extra = [c for c in DEFAULT_CRITERIA["a"] if c.metric in B_RESOURCE_METRICS] if soak == "b" else []
    return list(DEFAULT_CRITERIA[soak]) + extra + [TARGET_ALIVE]


# --------------------------------------------------------------------------- reading the run


def read_observations(run: Run) -> dict[str, Any]:
    """``observations.json`` of a run ({} when the harness never wrote it)."""
    p = run.path / "observations.json"
    return json.loads(p.read_text(encoding="utf-8")) if p.exists() else {}


def event_data(events: pd.DataFrame) -> list[dict[str, Any]]:
    """Events as dicts with their JSON ``data`` merged in."""
    out = []
    for e in events.to_dict("records") if not events.empty else []:
        try:
            data = json.loads(e.get("data") or "{}")
        except ValueError:
            data = {}
        out.append({**data, "t_s": e.get("t_s"), "kind": e.get("kind"), "message": e.get("message")})
    return out


def _params(run: Run) -> dict[str, Any]:
    return run.manifest.get("parameters") or {}


def _soak(run: Run) -> str:
    kind = run.manifest.get("soak") or str(run.manifest.get("kind", "")).removeprefix("watcher-")
    return kind if kind in DEFAULT_CRITERIA else "a"


def warmup_for(run: Run, duration_s: float) -> float:
    """The run's ``warmup_s``, else 5% of the sampled span, at most ``MAX_AUTO_WARMUP_S``."""
    w = _params(run).get("warmup_s")
    return float(w) if w is not None else min(MAX_AUTO_WARMUP_S, 0.05 * max(0.0, duration_s))


def _alive(samples: pd.DataFrame) -> pd.DataFrame:
    if samples.empty or "alive" not in samples:
        return samples
    return samples[samples["alive"].fillna(False).astype(bool)]


def _col(samples: pd.DataFrame, *names: str) -> str | None:
    for n in names:
        if n in samples and samples[n].notna().any():
            return n
    return None


def _num(x: Any) -> Any:
    if isinstance(x, (np.generic,)):
        x = x.item()
    return None if isinstance(x, float) and not math.isfinite(x) else x


# --------------------------------------------------------------------------- analysis


def llm_reconnect(samples: pd.DataFrame) -> dict[str, Any]:
    """``never_down`` / ``recovered`` / ``lost`` from the health column (status 0 = no answer)."""
    if samples.empty or "llm_status" not in samples or samples["llm_status"].dropna().empty:
        return {"state": None, "down_samples": None, "samples": 0}
    s = samples.dropna(subset=["llm_status"])
    status = s["llm_status"].to_numpy(dtype=float)
    up = (status >= 200) & (status < 400)
    t = s["t_s"].to_numpy(dtype=float)
    outages = int(np.sum(up[:-1] & ~up[1:]) + (0 if up[0] else 1))
    state = "never_down" if up.all() else ("recovered" if up[-1] else "lost")
    first_down = float(t[~up][0]) if (~up).any() else None
    return {"state": state, "down_samples": int((~up).sum()), "samples": int(len(up)), "outages": outages,
            "first_down_s": first_down, "down_s": float(np.sum(np.diff(t)[~up[:-1]])) if len(t) > 1 else 0.0,
            "latency_ms_p50": _num(s["llm_latency_ms"].median()) if "llm_latency_ms" in s else None}


def _slope_fit(samples: pd.DataFrame, column: str, warmup_s: float) -> dict[str, Any] | None:
    """Theil–Sen fit of a column for a figure: slope, band and a pivot at the window's middle."""
    t = samples["t_s"].to_numpy(dtype=float)
    res = growth_slope(t, samples[column], warmup_s=warmup_s)
    if not math.isfinite(res.slope_per_s):
        return None
    t_start = float(np.nanmin(t)) + warmup_s
    t_ref = t_start + res.duration_s / 2.0
    return {"slope_per_s": res.slope_per_s, "low_per_s": res.low_per_s, "high_per_s": res.high_per_s,
            "intercept": res.intercept + res.slope_per_s * t_ref, "t_ref_s": t_ref, "t_start_s": t_start,
            "label": f"{res.slope_mb_per_h:+.2f} MB/h"}


def analyze(run: Run) -> dict[str, Any]:
    """Every statistic of the samples a signoff reports (pure, from the run folder)."""
    s = run.samples
    if s.empty or "t_s" not in s:
        return {"n_samples": 0, "duration_h": 0.0, "warmup_s": 0.0}
    alive = _alive(s)
    span_s = float(s["t_s"].max() - s["t_s"].min()) if len(s) > 1 else 0.0
    warmup = warmup_for(run, span_s)
    out: dict[str, Any] = {"n_samples": int(len(s)), "n_alive": int(len(alive)), "duration_h": span_s / 3600.0,
                           "warmup_s": warmup}
    for key, col in (("tree_rss", "tree_rss_bytes"), ("rss", "rss_bytes"), ("uss", "uss_bytes"),
                     ("vram", "gpu_target_bytes"), ("gpu_used", "gpu_used_bytes")):
        out[key] = memory_growth(alive, col, warmup_s=warmup) if _col(alive, col) else None
    fd_col = _col(alive, "tree_num_fds", "num_fds")
    out["fds"] = fd_stability(alive, fd_col, warmup_s=warmup) | {"column": fd_col} if fd_col else None
    out["threads"] = fd_stability(alive, "threads", warmup_s=warmup, tolerance=2) if _col(alive, "threads") else None
    out["disk"] = disk_growth(s, "watched_bytes") if _col(s, "watched_bytes") else None
    out["disk_free"] = disk_growth(s, "disk_free_bytes", free=True) if _col(s, "disk_free_bytes") else None
    out["llm"] = llm_reconnect(s)
    last = s.iloc[-1]
    out["logs"] = {k: _num(s[c].max()) if _col(s, c) else None
                   for k, c in (("errors", "log_errors"), ("tracebacks", "log_tracebacks"))}
    out["requests"] = {k: _num(last.get(c)) for k, c in (("pending", "requests_pending"),
                                                        ("archived", "requests_archived"))}
    cost = s["sample_cost_ms"].dropna() if "sample_cost_ms" in s else pd.Series(dtype=float)
    out["harness"] = {
        "sample_cost_ms_p50": _num(cost.median()) if len(cost) else None,
        "sample_cost_ms_p99": _num(cost.quantile(0.99)) if len(cost) else None,
        "sample_cost_ms_max": _num(cost.max()) if len(cost) else None,
        "bytes_read_total": _num(s["bytes_read"].sum()) if "bytes_read" in s else None,
        "bytes_read_max": _num(s["bytes_read"].max()) if "bytes_read" in s else None,
        "harness_rss_mb_max": _num(s["harness_rss_bytes"].max() / MIB) if _col(s, "harness_rss_bytes") else None,
    }
    out["gpu_available"] = bool(s["gpu_available"].fillna(False).astype(bool).any()) if "gpu_available" in s else False
    return out


# --------------------------------------------------------------------------- observations per soak


def observe_a(run: Run, analysis: dict[str, Any] | None = None) -> dict[str, Any]:
    """Observed values of soak A by metric id (None = not observed), from samples and observations."""
    a = analysis if analysis is not None else analyze(run)
    obs = read_observations(run)
    mem = a.get("tree_rss") or a.get("rss")
    slope = _num(mem["slope_mb_per_h"]) if mem else None
    fds = a.get("fds")
    halt = obs.get("halt") or {}
    return {
        "memory_growth_mb": slope * a["duration_h"] if slope is not None else None,
        "memory_slope_mb_per_h": slope,
        "fd_range": fds["fd_range"] if fds else None,
        "fd_trend": int(bool(fds["monotonic_increasing"])) if fds else None,
        "tracebacks": (a.get("logs") or {}).get("tracebacks"),
        "halt_s": halt.get("halt_s") if halt and not halt.get("forced") else None,
        "disk_growth_mb": _num(a["disk"]["growth_mb"]) if a.get("disk") else None,
        "llm_reconnect": (a.get("llm") or {}).get("state"),
        "target_alive": _target_alive(run, obs),
    }


def memory_intervals(analysis: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """95% intervals of the memory slope (MiB/h) and of the growth over the run (MiB)."""
    mem = analysis.get("tree_rss") or analysis.get("rss")
    if not mem:
        return {}
    lo, hi = _num(mem.get("slope_low_mb_per_h")), _num(mem.get("slope_high_mb_per_h"))
    if lo is None or hi is None:
        return {}
    d = analysis.get("duration_h") or 0.0
    return {"memory_slope_mb_per_h": (lo, hi), "memory_growth_mb": (lo * d, hi * d)}


def _target_alive(run: Run, obs: dict[str, Any]) -> bool | None:
    if obs:
        return obs.get("target_exit") is None
    if run.samples.empty or "alive" not in run.samples:
        return None
    return bool(run.samples["alive"].iloc[-1])


def _observe_driver(run: Run, analysis: dict[str, Any] | None) -> dict[str, Any]:
    """Soaks B and C: the driver's observations (by metric id) over sample-derived defaults."""
    a = analysis if analysis is not None else analyze(run)
    obs = read_observations(run)
    mem = a.get("tree_rss") or a.get("rss")
    base = {
        "errors": (a.get("logs") or {}).get("tracebacks"),
        "memory_growth_mb": _num(mem["slope_mb_per_h"]) * a["duration_h"] if mem and _num(mem["slope_mb_per_h"]) is not None else None,
        "pending": (a.get("requests") or {}).get("pending"),
        "target_alive": _target_alive(run, obs),
    }
    driver = obs.get("observations") or {}
    return base | {k: v for k, v in driver.items() if not isinstance(v, (dict, list)) or k == "convergence"}


def observe_b(run: Run, analysis: dict[str, Any] | None = None) -> dict[str, Any]:
    """Observed values of soak B by metric id, from observations.json and the samples.

    The queue checks are the driver's, by request file name (the protocol-check probe is
    not one of them); ``errors`` = tracebacks in the target log + requests archived FAILED,
    UNKNOWN_TYPE or INVALID; soak A's resource values over the run ride along; ``details``
    names the requests behind each non-zero count. A run that never staged its requests
    has no queue observations (FAIL rows: not observed).
    """
    a = analysis if analysis is not None else analyze(run)
    out = _observe_driver(run, a)
    driver = read_observations(run).get("observations") or {}
    if "staged" not in driver:
        out.update(dict.fromkeys(("staged", "archived", "pending", "duplicates", "misrouted", "decision_entries")))
    tracebacks, failed = out.get("errors"), driver.get("failed_requests")
    out["errors"] = None if tracebacks is None and failed is None else (tracebacks or 0) + (failed or 0)
    out.update({k: v for k, v in observe_a(run, a).items() if k in B_RESOURCE_METRICS})
    out["fifo_ok"] = driver.get("fifo_ok")
    out["details"] = driver.get("details") or {}
    return out


def observe_c(run: Run, analysis: dict[str, Any] | None = None) -> dict[str, Any]:
    """Observed values of soak C by metric id, from observations.json, ``loop.parquet`` and the samples.

    The driver's values win; for a partial run (interrupted before the driver finished)
    cycles, dispatches, stuck requests and the convergence trend are recomputed from
    ``loop.parquet`` (flushed during the run) and the rest from the samples. Memory growth
    and errors (tracebacks) come from the samples.
    """
    from soaklib.analysis import convergence_trend
    from soaklib.store import read_table

    a = analysis if analysis is not None else analyze(run)
    out = _observe_driver(run, a)
    driver = read_observations(run).get("observations") or {}
    if "cycles" in driver:
        return out
    s, loop = run.samples, read_table(run.path / "loop.parquet")
    last = loop.iloc[-1] if not loop.empty else None
    probe = next((c for c in loop.columns if c.startswith("probe_")), None)
    if last is not None:
        out.update(cycles=int(last["cycles"]), selfplay_dispatches=int(last["selfplay"]),
                   queue_stuck=int(last["requests_stuck"]))
        if _col(s, "draws"):
            added = float(s["draws"].dropna().iloc[-1] - s["draws"].dropna().iloc[0])
            out["draws_ingested_delta"] = abs(added - float(last["draws_injected"]))
    if probe is not None:
        d = loop[["cycles", probe]].dropna()
        d = d[d["cycles"] >= 1].groupby("cycles", sort=True)[probe].last()
        target = 1.0 if probe == "probe_hit_rate" else None
        x, y = d.index.to_numpy(dtype=float), d.to_numpy(dtype=float)
        conv = convergence_trend(x, y, target=target)
        slope = _num(conv["slope"])
        out["convergence"] = conv | {"metric": probe.removeprefix("probe_"), "x": "cycle",
                                     "points": [[float(a), float(b)] for a, b in zip(x, y)],
                                     "intercept": float(np.median(y - slope * x)) if slope is not None and len(x) else None}
    if _col(s, "heuristic_fallback"):
        out["heuristic_fallbacks"] = _num(s["heuristic_fallback"].max())
    if _col(s, "policy_candidates"):
        pc = s["policy_candidates"].dropna()
        out["policy_candidates"] = _num(pc.iloc[-1] - pc.iloc[0])
    if _col(s, "telemetry_valid"):
        models = s["telemetry_models"].dropna() if "telemetry_models" in s else pd.Series(dtype=float)
        out["telemetry_valid"] = bool(s["telemetry_valid"].dropna().astype(bool).all()) and \
            len(models) > 1 and float(models.iloc[-1]) > float(models.iloc[0])
    return out


OBSERVERS: dict[str, Callable[[Run, dict[str, Any] | None], dict[str, Any]]] = {
    "a": observe_a, "b": observe_b, "c": observe_c}


def _metric_notes(run: Run, obs: dict[str, Any], observed: dict[str, Any]) -> dict[str, str]:
    """Why a metric has no value, or what its value means, for the criteria rows."""
    notes: dict[str, str] = {}
    halt = obs.get("halt") or {}
    if "halt_s" in observed and observed.get("halt_s") is None:
        if halt.get("forced"):
            notes["halt_s"] = halt.get("error") or "did not exit within the halt timeout; process tree terminated"
        elif obs.get("target_exit") is not None:
            notes["halt_s"] = "the target exited on its own before the halt"
        elif not obs:
            notes["halt_s"] = "the run ended before the halt (partial run)"
        elif obs.get("interrupted"):
            notes["halt_s"] = "the soak was interrupted before the halt"
    te = obs.get("target_exit")
    if te is not None:
        notes["target_alive"] = f"exited at {te.get('exited_at_s', float('nan')):.1f} s, code {te.get('returncode')}, signal {te.get('signal')}"
    if not obs:
        for k, v in observed.items():
            if v is None:
                notes.setdefault(k, "not observed: the run ended early (partial run)")
    return notes


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
    soak = _soak(run)
    obs = read_observations(run)
    a = analyze(run)
    observed = OBSERVERS[soak](run, a)
    rows = evaluate(soak_criteria(soak), observed, duration_h=a["duration_h"] or None,
                    overrides=_params(run).get("criteria") or None, intervals=memory_intervals(a))
    metric_notes = _metric_notes(run, obs, observed)
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
        "parameters": _params(run),
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
    alive = _alive(s)
    fits = {c: f for c in ("tree_rss_bytes", "rss_bytes") if _col(alive, c) and (f := _slope_fit(alive, c, warmup))}
    fd_col = _col(alive, "tree_num_fds", "num_fds") or "num_fds"
    vram_fit = _slope_fit(alive, "gpu_target_bytes", warmup) if _col(alive, "gpu_target_bytes") else None
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


def write_signoff(run_dir: str | os.PathLike[str], *, figures: bool = True) -> dict[str, Path]:
    """Compute the signoff of ``run_dir`` and write ``{run_id}.json`` / ``.md`` beside it (+ PNGs)."""
    run = load_run(run_dir)
    signoff = build_signoff(run)
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

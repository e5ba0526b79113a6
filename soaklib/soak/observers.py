"""Observed values of a WATCHER soak's criteria, computed from its run folder alone.

``analyze(run)`` fits memory growth (the segmented verdict, ``analysis.leak``), time to exhaustion, FD stability, disk growth and LLM health
from the samples; ``observe_a`` / ``observe_b`` / ``observe_c`` turn that and the run's
``observations.json`` into observed values by metric id, which
:mod:`soaklib.report.signoff` evaluates against the criteria.
"""
from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from soaklib.analysis import DEFAULT_CRITERIA, Criterion
from soaklib.analysis.criteria import CriterionRow
from soaklib.analysis.growth import disk_growth, fd_stability, judged_bounds, memory_growth
from soaklib.analysis.units import MIB, format_duration
from soaklib.redact import redact
from soaklib.runs import Run
from soaklib.soak import registry
from soaklib.soak.forecast import forecasts
from soaklib.soak.memory_verdict import figure_fit, verdict_note

MAX_AUTO_WARMUP_S = 600.0
LOG_TAIL_LINES = 20  # last lines of target.log shown when the target died or did not start
LOG_TAIL_BYTES = 64 * 1024  # read at most this much of the end of target.log
MIN_RUNNING_SAMPLES = 2  # fewer samples of a live target than this: it never ran one interval
TARGET_STARTED_TRIAGE = (
    "The target did not start: read the last lines of target.log (below), then run target.command by hand in "
    "project_dir with target.env; check the daemon's config files and its Python path. The harness judged "
    "nothing else: no resource or queue criterion can be measured on a process that never ran.")
TARGET_ALIVE = Criterion(
    "target_alive", "Target alive until the halt: no crash or exit on its own", "bool", True, True, "eq",
    triage="The daemon died during the soak: read the end of target.log (the exit code and signal are in the "
           "events); a signal 9 with no traceback often means the kernel's OOM killer (dmesg).")


#: Soak A's resource rows that soak B is judged by as well (issue: "plus the soak A resource criteria").
B_RESOURCE_METRICS = ("memory_slope_mb_per_h", "fd_range", "fd_trend", "disk_growth_mb", "llm_reconnect")


FIFO = Criterion(
    "fifo", "Request pickup ordering (FIFO): dispatched in filename order", "bool", True, True, "eq",
    triage="The daemon dispatched requests out of filename order: check how it lists watcher_requests/ "
           "(sorted by name?) and whether it re-reads the queue mid-cycle; the out-of-order requests are "
           "named in the signoff's observed.details.")


def soak_criteria(soak: str) -> list[Criterion]:
    """The pass criteria of a soak: the plan's table (DEFAULT_CRITERIA) plus ``target_alive``;
    soak B also carries FIFO order and soak A's resource rows."""
    extra = [FIFO, *(c for c in DEFAULT_CRITERIA["a"] if c.metric in B_RESOURCE_METRICS)] if soak == "b" else []
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


def run_params(run: Run) -> dict[str, Any]:
    return run.manifest.get("parameters") or {}


def soak_of(run: Run) -> str:
    """The run's soak letter, from its manifest; a ``ParameterError`` when it names no registered soak."""
    kind = run.manifest.get("soak") or str(run.manifest.get("kind", "")).removeprefix("watcher-")
    return registry.get(kind or None).letter


def has_llm(run: Run) -> bool:
    """False when the run's parameters say the daemon has no LLM server (``llm.health_url: null``)."""
    llm = run_params(run).get("llm")
    return not (isinstance(llm, dict) and "health_url" in llm and llm["health_url"] is None)


NO_LLM_NOTE = "the daemon has no LLM server (llm.health_url: null): nothing to probe, not judged"


def run_criteria(run: Run, soak: str) -> list[Criterion]:
    """The criteria a run is judged by: its soak type's, with ``llm_reconnect`` optional (SKIP)
    when the daemon has no LLM server."""
    criteria = registry.get(soak).criteria()
    if soak == "csys":  # soak C on the real system: rows for the run's own processes
        from soaklib.soak.system_soak import run_system_criteria, target_names

        criteria = run_system_criteria(target_names(run))
    if has_llm(run):
        return criteria
    return [replace(c, optional=True) if c.metric == "llm_reconnect" else c for c in criteria]


def warmup_for(run: Run, duration_s: float) -> float:
    """The run's ``warmup_s``, else 5% of the sampled span, at most ``MAX_AUTO_WARMUP_S``."""
    w = run_params(run).get("warmup_s")
    return float(w) if w is not None else min(MAX_AUTO_WARMUP_S, 0.05 * max(0.0, duration_s))


def alive_samples(samples: pd.DataFrame) -> pd.DataFrame:
    if samples.empty or "alive" not in samples:
        return samples
    return samples[samples["alive"].fillna(False).astype(bool)]


def first_column(samples: pd.DataFrame, *names: str) -> str | None:
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


def slope_fit(samples: pd.DataFrame, column: str, warmup_s: float) -> dict[str, Any] | None:
    """The memory verdict's fit of a column for a figure: slope, band, the warm-up cut and onset found."""
    return figure_fit(samples, column, warmup_s)


def analyze(run: Run) -> dict[str, Any]:
    """Every statistic of the samples a signoff reports (pure, from the run folder)."""
    s = run.samples
    if s.empty or "t_s" not in s:
        return {"n_samples": 0, "duration_h": 0.0, "warmup_s": 0.0}
    alive = alive_samples(s)
    span_s = float(s["t_s"].max() - s["t_s"].min()) if len(s) > 1 else 0.0
    warmup, given = warmup_for(run, span_s), float(run_params(run).get("warmup_s") or 0.0)
    out: dict[str, Any] = {"n_samples": int(len(s)), "n_alive": int(len(alive)), "duration_h": span_s / 3600.0,
                           "warmup_s": warmup, "memory_warmup_s": given}  # memory: the warm-up is found in the data
    for key, col in (("tree_rss", "tree_rss_bytes"), ("rss", "rss_bytes"), ("uss", "uss_bytes"),
                     ("vram", "gpu_target_bytes"), ("gpu_used", "gpu_used_bytes")):
        out[key] = memory_growth(alive, col, warmup_s=given, verdict="segmented") if first_column(alive, col) else None
    out["exhaustion"] = forecasts(alive, s, read_observations(run).get("limits"), run_params(run), given)
    fd_col = first_column(alive, "tree_num_fds", "num_fds")
    out["fds"] = fd_stability(alive, fd_col, warmup_s=warmup) | {"column": fd_col} if fd_col else None
    out["threads"] = fd_stability(alive, "threads", warmup_s=warmup, tolerance=2) if first_column(alive, "threads") else None
    out["disk"] = disk_growth(s, "watched_bytes") if first_column(s, "watched_bytes") else None
    out["disk_free"] = disk_growth(s, "disk_free_bytes", free=True) if first_column(s, "disk_free_bytes") else None
    out["llm"] = llm_reconnect(s)
    last = s.iloc[-1]
    out["logs"] = {k: _num(s[c].max()) if first_column(s, c) else None
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
        "harness_rss_mb_max": _num(s["harness_rss_bytes"].max() / MIB) if first_column(s, "harness_rss_bytes") else None,
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
        "memory_growth_raw_mb": _num(mem["raw_growth_mb"]) if mem else None,
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
    """The confidence bounds the memory rows are judged at: (lower, upper) of the slope (MiB/h) and of the growth
    over the run (MiB). The segmented verdict's upper bound is one-sided (the PASS test), its lower the 95%
    interval's low end (the FAIL test); a Theil–Sen verdict gives its 95% interval."""
    return growth_intervals(analysis.get("tree_rss") or analysis.get("rss"), analysis.get("duration_h") or 0.0)


def growth_intervals(mem: dict[str, Any] | None, duration_h: float) -> dict[str, tuple[float, float]]:
    """``memory_slope_mb_per_h`` and ``memory_growth_mb`` judged at the slope's bounds (:func:`judged_bounds`)."""
    b = judged_bounds(mem)
    if b is None:
        return {}
    lo, hi = b
    return {"memory_slope_mb_per_h": (lo, hi), "memory_growth_mb": (lo * duration_h, hi * duration_h)}


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
        "memory_growth_raw_mb": _num(mem["raw_growth_mb"]) if mem else None,
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
    out["fifo_ok"] = out["fifo"] = driver.get("fifo_ok")
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
        if first_column(s, "draws"):
            added = float(s["draws"].dropna().iloc[-1] - s["draws"].dropna().iloc[0])
            out["draws_ingested_delta"] = abs(added - float(last["draws_injected"]))
    if probe is not None:
        rows = loop[["cycles", probe]].dropna()
        per_cycle = rows[rows["cycles"] >= 1].groupby("cycles", sort=True)[probe].last()
        target = 1.0 if probe == "probe_hit_rate" else None
        x, y = per_cycle.index.to_numpy(dtype=float), per_cycle.to_numpy(dtype=float)
        conv = convergence_trend(x, y, target=target)
        slope = _num(conv["slope"])
        out["convergence"] = conv | {"metric": probe.removeprefix("probe_"), "x": "cycle",
                                     "points": [[float(a), float(b)] for a, b in zip(x, y)],
                                     "intercept": float(np.median(y - slope * x)) if slope is not None and len(x) else None}
    if first_column(s, "heuristic_fallback"):
        out["heuristic_fallbacks"] = _num(s["heuristic_fallback"].max())
    if first_column(s, "policy_candidates"):
        pc = s["policy_candidates"].dropna()
        out["policy_candidates"] = _num(pc.iloc[-1] - pc.iloc[0])
    if first_column(s, "telemetry_valid"):
        models = s["telemetry_models"].dropna() if "telemetry_models" in s else pd.Series(dtype=float)
        out["telemetry_valid"] = bool(s["telemetry_valid"].dropna().astype(bool).all()) and \
            len(models) > 1 and float(models.iloc[-1]) > float(models.iloc[0])
    return out


def criterion_notes(run: Run, obs: dict[str, Any], observed: dict[str, Any]) -> dict[str, str]:
    """Why a metric has no value, or what its value means, for the criteria rows."""
    notes: dict[str, str] = {}
    if "llm_reconnect" in observed and observed.get("llm_reconnect") is None and not has_llm(run):
        notes["llm_reconnect"] = NO_LLM_NOTE
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
        for k, v in observed.items():
            if v is None:
                notes.setdefault(k, f"not observed: the target exited at {format_duration(te.get('exited_at_s'))} "
                                    f"(code {te.get('returncode')}) before this could be measured")
    if not obs:
        for k, v in observed.items():
            if v is None:
                notes.setdefault(k, "not observed: the run ended early (partial run)")
    return notes


def memory_note(analysis: dict[str, Any], observed: dict[str, Any]) -> str | None:
    """What the memory_growth_mb row's number is: fitted (slope × run length), next to the raw growth."""
    mem = analysis.get("tree_rss") or analysis.get("rss")
    fitted, slope = observed.get("memory_growth_mb"), observed.get("memory_slope_mb_per_h")
    if not mem or fitted is None or slope is None:
        return None
    raw = _num(mem.get("raw_growth_mb"))
    run = format_duration((analysis.get("duration_h") or 0.0) * 3600.0)
    text = verdict_note(mem, slope, run)
    if raw is not None:
        text += (f"; raw growth {raw:+.3g} MiB ({mem['first_mb']:.1f} → {mem['last_mb']:.1f} MiB, "
                 "last − first bin median after the warm-up)")
    return text


# --------------------------------------------------------------------------- did the target run?


def log_tail(run: Run, lines: int = LOG_TAIL_LINES, name: str = "target.log") -> list[str]:
    """The last ``lines`` non-empty lines of the run's target log, secrets redacted ([] without one)."""
    p = run.path / name
    if not p.is_file():
        return []
    with p.open("rb") as fh:
        size = fh.seek(0, 2)
        fh.seek(max(0, size - LOG_TAIL_BYTES))
        chunk = fh.read().decode("utf-8", errors="replace")
    text = chunk.splitlines()[1:] if size > LOG_TAIL_BYTES else chunk.splitlines()
    return [str(redact(line.rstrip())) for line in text if line.strip()][-lines:]


def target_start(run: Run, obs: dict[str, Any]) -> tuple[bool, str]:
    """Whether the target started and ran, and if not, why (the harness's error or its exit).

    Not started: the harness could not start or attach to it (a ``TargetError``, no live
    sample), or it exited on its own with fewer than ``MIN_RUNNING_SAMPLES`` live samples,
    i.e. before it ran one sampling interval.
    """
    s = run.samples
    n_alive = int(s["alive"].fillna(False).astype(bool).sum()) if not s.empty and "alive" in s else 0
    error = str(obs.get("error") or run.manifest.get("error") or "")
    if n_alive == 0 and error.startswith("TargetError"):
        return False, str(redact(error.removeprefix("TargetError: ")))
    te = obs.get("target_exit")
    if te is not None and n_alive < MIN_RUNNING_SAMPLES:
        sig = f", signal {te['signal']}" if te.get("signal") is not None else ""
        return False, (f"the target exited on its own after {format_duration(te.get('exited_at_s'))} with code "
                       f"{te.get('returncode')}{sig}, before it ran one sampling interval")
    return True, ""


def target_started_row(reason: str, tail: list[str]) -> CriterionRow:
    """The one criteria row of a soak whose target did not start: FAIL, the reason, the log's last line."""
    last = f"; last log line: {tail[-1]}" if tail else "; target.log is empty"
    return CriterionRow(metric="target_started", label="The target started and ran for at least one sampling interval",
                        observed=False, unit="bool", pass_bound=True, fail_bound=True, status="FAIL",
                        note=reason + last, triage=TARGET_STARTED_TRIAGE, direction="eq")


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
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from soaklib.analysis import evaluate, verdict
from soaklib.analysis.criteria import CriterionRow, observed_bounds
from soaklib.analysis.units import MIB, bound_text, format_duration
from soaklib.artifacts import SIGNOFF_SCHEMA_VERSION, Signoff
from soaklib.report.soak_markdown import to_markdown
from soaklib.report.verdict import provenance, signoff_verdict, verdict_line
from soaklib.runs import Run, load_run
from soaklib.soak import faults, registry
from soaklib.soak.observers import (
    alive_samples,
    analyze,
    criterion_notes,
    event_data,
    first_column,
    llm_reconnect,
    log_tail,
    memory_intervals,
    memory_note,
    observe_a,
    observe_b,
    observe_c,
    read_observations,
    run_criteria,
    run_params,
    slope_fit,
    soak_criteria,
    soak_of,
    target_start,
    target_started_row,
)
from soaklib.store import atomic_write_json, atomic_write_text, signoff_paths

__all__ = [
    "analyze",
    "build_signoff",
    "criteria_frame",
    "growth_table",
    "llm_reconnect",
    "observe_a",
    "observe_b",
    "observe_c",
    "soak_criteria",
    "soak_figures",
    "to_markdown",
    "verdict_line",
    "write_signoff",
]  # fmt: skip

SCHEMA_VERSION = SIGNOFF_SCHEMA_VERSION
# --------------------------------------------------------------------------- the signoff


def _notes(run: Run, obs: dict[str, Any], a: dict[str, Any], complete: bool, started: bool) -> list[str]:
    notes: list[str] = []
    if not complete:
        notes.append("incomplete run: the harness did not finish it; samples up to the last flush are analysed "
                     "and an incomplete run cannot pass")
    for bad in run.bad_parts:
        lost = f"its {bad.rows} samples are" if bad.rows is not None else "its samples are"
        notes.append(f"part file {os.path.relpath(bad.path, run.path)} could not be read ({bad.error}): "
                     f"{lost} not analysed")
    if obs.get("interrupted"):
        notes.append("interrupted (Ctrl-C / SIGTERM): samples flushed, target stopped")
    if obs.get("error"):
        notes.append(f"the soak stopped on an error: {obs['error']}")
    notes += [str(n) for n in obs.get("notes") or []]  # the harness's own: dropped log bytes, sampler cost, ...
    if not a.get("gpu_available"):
        reason = next(iter(obs.get("gpu_notes") or []), None) or \
            ((run.manifest.get("environment") or {}).get("gpu") or {}).get("reason") or "no GPU reading"
        notes.append(f"GPU metrics unavailable: {reason}")
    for metric, reason in (obs.get("sampler_notes") or {}).items():
        notes.append(f"metric {metric} could not always be read: {reason}")
    for f in obs.get("preflight_failed") or []:
        notes.append(f"preflight finding (soaked anyway with --force): {f.get('message')}")
    if a.get("n_samples") and started:
        notes.append(f"growth fits leave out the first {format_duration(a['warmup_s'])} (warm-up)" if a["warmup_s"]
                     else "growth fits use every sample (no warm-up)")
        if not a.get("memory_warmup_s"):
            notes.append("the memory verdict finds its warm-up, a leak onset and one-time steps in the data "
                         "(the memory rows' notes say what it found)")
    stop = obs.get("stop_on_fail") or {}
    if stop.get("stopped"):
        notes.append(f"stop_on_fail: the soak was ended at {format_duration(stop.get('stopped_at_s'))}, when the "
                     f"{stop.get('metric')} row's FAIL was conclusive ({stop.get('series')}, look {stop.get('look')})")
    return notes


def _rows(run: Run, soak: str, obs: dict[str, Any], a: dict[str, Any], observed: dict[str, Any]) -> list[CriterionRow]:
    rows = evaluate(run_criteria(run, soak), observed, duration_h=a["duration_h"] or None,
                    overrides=run_params(run).get("criteria") or None,
                    intervals=memory_intervals(a) | observed_bounds(observed))
    metric_notes = criterion_notes(run, obs, observed)
    mem = memory_note(a, observed)
    if mem:
        metric_notes["memory_growth_mb"] = "; ".join(x for x in (mem, metric_notes.get("memory_growth_mb")) if x)
    for row in rows:
        extra = metric_notes.get(row["metric"])
        if extra:
            row["note"] = "; ".join(x for x in (extra, row["note"]) if x)
    halt_params = (run_params(run).get("target") or {}).get("halt") or {}
    faults.judge_halt_exit(rows, obs.get("halt"), halt_params.get("normal_exit_codes"))
    halted = faults.daemon_halted_row(run.samples, run.events,
                                      last_words=bool((obs.get("sampling") or {}).get("last_words")))
    stop = faults.stop_exit_row(run.events, halt_params.get("normal_exit_codes"))
    rows += [r for r in (halted, stop) if r is not None]
    return rows


def build_signoff(run: Run) -> Signoff:
    """The :class:`~soaklib.artifacts.Signoff` of a (partial) WATCHER soak run: criteria rows, verdict and context.

    Beside the verdict (PASS / FAIL) it says what that may be called (``verdict_label``,
    ``production_ready``, ``verdict_reasons``: :mod:`soaklib.report.verdict`), what was
    soaked for how long against the plan (``provenance``, ``run_length_s``,
    ``plan_length_s``), and for a target that died or never started its last log lines
    (``target_log_tail``, redacted). A target that did not start gets one
    ``target_started`` FAIL row; the criteria it could not be judged by are ``not_judged``.
    """
    soak = soak_of(run)
    obs = read_observations(run)
    a = analyze(run)
    observed = registry.get(soak).observe(run, a)
    started, why = target_start(run, obs)
    bad_halt = faults.halt_exit_abnormal(obs.get("halt"), ((run_params(run).get("target") or {}).get("halt") or {})
                                         .get("normal_exit_codes"))
    tail = log_tail(run) if not started or obs.get("target_exit") is not None or obs.get("error") or bad_halt else []
    if started:
        rows, not_judged = _rows(run, soak, obs, a, observed), []
    else:
        rows, not_judged = [target_started_row(why, tail)], [c.metric for c in run_criteria(run, soak)]
    complete = bool(run.complete and obs and not obs.get("interrupted") and not obs.get("error"))
    result = verdict(rows) if complete else "FAIL"
    events = event_data(run.events)
    counts: dict[str, int] = {}
    for e in events:
        counts[e["kind"]] = counts.get(e["kind"], 0) + 1
    run_length_s = (a["duration_h"] or 0.0) * 3600.0
    prov = provenance(run, run_length_s)
    signoff = Signoff(
        run_id=run.run_id,
        soak=soak,
        verdict=result,
        complete=complete,
        interrupted=bool(obs.get("interrupted")),
        started_at=run.manifest.get("started_at"),
        completed_at=run.manifest.get("completed_at"),
        duration_h=a["duration_h"],
        criteria=rows,
        observed=observed,
        analysis=a,
        halt=obs.get("halt"),
        target_exit=obs.get("target_exit"),
        events={"counts": counts, "first": events[:50]},
        notes=_notes(run, obs, a, complete, started),
        parameters=run_params(run),
        environment=run.manifest.get("environment") or {},
        provenance=prov,
        run_length_s=run_length_s,
        plan_length_s=prov["plan_length_s"],
        plan_length_max_s=prov["plan_length_max_s"],
        target_started=started,
        target_log_tail=tail,
        not_judged=not_judged,
        stop_on_fail=obs.get("stop_on_fail"),
    )
    words = signoff_verdict(signoff)
    return replace(signoff, verdict_label=words.label, production_ready=words.production_ready,
                   verdict_reasons=words.reasons)


def growth_table(signoff: Mapping[str, Any]) -> pd.DataFrame:
    """Memory series of the signoff's analysis (tree RSS, RSS, USS, VRAM): levels, slope with CI, trend.

    ``raw_growth_mb`` is the last − first bin median after the warm-up; ``fitted_growth_mb``
    the judged slope × the run's length (what the memory_growth_mb row judges); ``warmup_cut_s``
    and ``onset_s``: a warm-up end and a leak onset the memory verdict found (None: none)."""
    a = signoff.get("analysis") or {}
    hours = a.get("duration_h") or 0.0
    rows = []
    for key, label in (("tree_rss", "tree RSS"), ("rss", "RSS"), ("uss", "USS"), ("vram", "target VRAM"),
                       ("gpu_used", "GPU used (device)")):
        m = a.get(key)
        if m:
            slope = m["slope_mb_per_h"]
            rows.append({"series": label, "first_mb": m["first_mb"], "last_mb": m["last_mb"],
                         "raw_growth_mb": m["raw_growth_mb"], "slope_mb_per_h": slope,
                         "slope_low_mb_per_h": m["slope_low_mb_per_h"], "slope_high_mb_per_h": m["slope_high_mb_per_h"],
                         "fitted_growth_mb": slope * hours if slope is not None else None,
                         "trend": m["trend"], "kendall_p": m["p_value"], "n_bins": m["n_bins"],
                         "warmup_cut_s": m.get("warmup_end_s"), "onset_s": m.get("onset_s")})
    return pd.DataFrame(rows)


def criteria_frame(signoff: Mapping[str, Any]) -> pd.DataFrame:
    """The criteria rows as the Markdown shows them: bounds with their direction (≤ 12.5, > 50, ≥ 5)."""
    cols = ["metric", "observed", "unit", "pass", "fail", "status", "note"]
    return pd.DataFrame([{"metric": r["metric"], "observed": r["observed"], "unit": r["unit"],
                          "pass": bound_text(r["pass_bound"], r.get("direction"), kind="pass"),
                          "fail": bound_text(r["fail_bound"], r.get("direction"), kind="fail"),
                          "status": r["status"], "note": r.get("note") or ""} for r in signoff["criteria"]],
                        columns=cols)


def triage_lines(signoff: Mapping[str, Any]) -> list[str]:
    """What an operator reads next, as Markdown list items: the named details of each metric
    (the duplicated requests, …), then the triage of every FAIL and WARN row."""
    lines = [f"- **{metric}**: " + "; ".join(names) for metric, names in
             ((signoff.get("observed") or {}).get("details") or {}).items()]
    lines += [f"- **{r['metric']}** ({r['status']}): {r['triage']}" for r in signoff["criteria"]
              if r["status"] in ("FAIL", "WARN") and r.get("triage")]
    return lines


def requests_table(run: Run) -> pd.DataFrame:
    """Soak B's per-request table (``requests.parquet``: status, decision lines, handled times,
    dispatch rank); empty for a run without one."""
    from soaklib.store import read_table

    return read_table(run.path / "requests.parquet")


def soak_figures(run: Run, signoff: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The signoff's figures: leak curve with fit and band, FDs, threads, VRAM, disk, LLM health;
    soak B's request queue (``requests.parquet``); soak C's convergence (isotonic fit over
    the cycles) and loop (``loop.parquet``). None for a target that did not start."""
    from soaklib.report import plots

    s = run.samples
    if s.empty or "t_s" not in s or (signoff or {}).get("target_started") is False:
        return {}
    warmup = float(run_params(run).get("warmup_s") or 0.0)  # memory fits: a given warm-up; the rest is found
    alive = alive_samples(s)
    fits = {c: f for c in ("tree_rss_bytes", "rss_bytes") if first_column(alive, c) and (f := slope_fit(alive, c, warmup))}
    fd_col = first_column(alive, "tree_num_fds", "num_fds") or "num_fds"
    vram_fit = slope_fit(alive, "gpu_target_bytes", warmup) if first_column(alive, "gpu_target_bytes") else None
    figs = {
        "leak": plots.leak_figure(alive, fits),
        "fds": plots.resource_figure(alive, fd_col, "open FDs", title="File descriptors (target tree)", count=True),
        "threads": plots.resource_figure(alive, "threads", "threads", title="Threads (target)", count=True),
        "vram": plots.resource_figure(alive, "gpu_target_bytes", "target VRAM (MiB)", scale=1 / MIB,
                                      title="GPU memory of the target", fit=vram_fit),
        "disk": plots.resource_figure(s, "watched_bytes", "watched bytes (MiB)", scale=1 / MIB,
                                      title="Disk: watched folders and target log"),
        "llm": plots.llm_health_figure(s),
    }
    soak = registry.get((signoff or {}).get("soak") or soak_of(run))
    for name in soak.figures:
        figs[name] = _OWN_FIGURES[name](run, signoff, soak)
    return {k: v for k, v in figs.items() if v is not None}


def _queue_figure(run: Run, signoff: Mapping[str, Any] | None, soak: registry.SoakType) -> Any:
    from soaklib.report import plots
    from soaklib.store import read_table

    return plots.queue_figure(run.samples, read_table(run.path / "requests.parquet"))


def _convergence_figure(run: Run, signoff: Mapping[str, Any] | None, soak: registry.SoakType) -> Any:
    from soaklib.report import plots

    observed = (signoff or {}).get("observed") or soak.observe(run, analyze(run))
    conv = observed.get("convergence") if isinstance(observed.get("convergence"), dict) else {}
    points = (conv or {}).get("points") or []
    return plots.convergence_figure([p[0] for p in points], [p[1] for p in points], conv,
                                    label=(conv or {}).get("metric", "metric"))


def _loop_figure(run: Run, signoff: Mapping[str, Any] | None, soak: registry.SoakType) -> Any:
    from soaklib.report import plots
    from soaklib.store import read_table

    return plots.loop_figure(read_table(run.path / "loop.parquet"))


#: the figures a soak type may name as its own (``SoakType.figures``)
_OWN_FIGURES = {"queue": _queue_figure, "convergence": _convergence_figure, "loop": _loop_figure}


def write_signoff(
    run_dir: str | os.PathLike[str] | Run, *, figures: bool = True, signoff: Mapping[str, Any] | None = None
) -> dict[str, Path]:
    """Compute the signoff of a run and write ``{run_id}.json`` / ``.md`` beside it (+ PNGs).

    Pass the loaded ``Run`` (and a signoff already built from it) to skip loading and
    analysing a large run twice, as the notebook does."""
    run = run_dir if isinstance(run_dir, Run) else load_run(run_dir)
    signoff = build_signoff(run) if signoff is None else \
        signoff if isinstance(signoff, Signoff) else Signoff.from_json(signoff)
    json_path, md_path = signoff_paths(run.path)
    paths: dict[str, Path] = {}
    if figures:
        from soaklib.report.plots import save_figure

        written = dict(signoff.figures)
        for name, fig in soak_figures(run, signoff).items():
            png = save_figure(fig, run.path / "figures" / f"{name}.png")
            written[name] = os.path.relpath(png, json_path.parent)
            paths[f"{name}_png"] = png
        signoff = replace(signoff, figures=written)
    paths["json"] = atomic_write_json(json_path, signoff.to_json())
    paths["md"] = atomic_write_text(md_path, to_markdown(signoff))
    return paths

"""Evidence of a multi-provider validation: ``{run_id}.json`` + ``{run_id}.md`` (+ figures).

Works on the seed-format run dict only (no dispatch objects), so an old JSON can be
re-rendered and the notebook and the CLI share one writer. The console lines of a lane
(``job_line``, ``round_line``, ``clean_text``, ``runner_text``) are built here too, so the
console and the Markdown say the same thing. Keys added after the seed are read with
``.get``: a seed JSON renders.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from soaklib.analysis.lane import CONFIDENCE_HEADERS, ProviderConfidence, confidence_rows
from soaklib.analysis.latency import summarize
from soaklib.artifacts import LaneEvidence
from soaklib.store import atomic_write_json, atomic_write_text

PERCENTILE_NOTE = (
    "Percentiles use `latency_ms`, the final attempt's latency (its `dx-runner start` call to the "
    "provider's exit), of **successful jobs only**; *job p50/max* use `job_latency_ms` (the job's "
    "first start call to its final exit, with failed attempts, retry backoff and concurrency-cap "
    "waits) of the same jobs. Failed jobs are counted in *failed* and listed apart, not in the percentiles."
)


# the console's wording (dispatch/console.py), so the Markdown and the notebook say what it says
from soaklib.dispatch.console import (  # noqa: E402
    _cell,
    _fmt_ms,
    clean_text,
    rate_text,
    retry_text,
    runner_text,
)


def provider_table(evidence: Mapping[str, Any]) -> pd.DataFrame:
    """Provider summary with percentiles (successful jobs only), one row per provider."""
    rows = [{"provider": p, **s} for p, s in evidence.get("provider_summary", {}).items()]
    return pd.DataFrame(rows)


def round_table(evidence: Mapping[str, Any]) -> pd.DataFrame:
    """One row per round: jobs, passed, pass rate, completed, retries, duration and latency percentiles."""
    rows = []
    for r in evidence.get("rounds", []):
        lat = r.get("latency", {})
        rows.append({
            "round": r["round_num"], "jobs": r["job_count"], "passed": r["passed"],
            "pass_rate": r["pass_rate"], "completed": r.get("completed", True),
            "retries": (r.get("retry_summary") or {}).get("retries", 0),
            "cap_backoffs": (r.get("retry_summary") or {}).get("cap_backoffs", 0), "duration_sec": r["duration_sec"],
            **{k: lat.get(k) for k in ("latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "latency_ms_max")},
        })  # fmt: skip
    return pd.DataFrame(rows)


def job_table(evidence: Mapping[str, Any]) -> pd.DataFrame:
    """Every job of every round (final attempt, with its attempts, backoffs and job latency) as a flat table."""
    rows = []
    for r in evidence.get("rounds", []):
        for j in r["jobs"]:
            s = j["job_spec"]
            rows.append({
                "round": s["round_num"], "provider": s["provider"], "prompt_id": s["prompt_id"],
                "beads_id": s["beads_id"], "success": j["success"], "status": j["status"],
                "reason_code": j["reason_code"], "runner_reason_code": j.get("runner_reason_code"),
                "selected_model": j["selected_model"], "latency_ms": j["latency_ms"],
                "latency_source": j.get("latency_source"), "job_latency_ms": j.get("job_latency_ms"),
                "retries": j["retries"], "attempts": len(j.get("attempts") or [None] * (j["retries"] + 1)),
                "cap_backoffs": j.get("cap_backoffs", 0), "wait_s": j.get("wait_s", 0.0), "detail": j.get("stderr") or "",
            })  # fmt: skip
    return pd.DataFrame(rows)


def attempt_table(evidence: Mapping[str, Any], *, retried_only: bool = False) -> pd.DataFrame:
    """Every attempt of every job (``jobs[k].attempts``), one row each; with ``retried_only``
    only the attempts of jobs that were retried or backed off on the concurrency cap."""
    rows = [
        {"round": j["job_spec"]["round_num"], "provider": j["job_spec"]["provider"], "beads_id": j["job_spec"]["beads_id"], **a}
        for r in evidence.get("rounds", []) for j in r["jobs"] for a in j.get("attempts") or []
        if not retried_only or len(j["attempts"]) > 1 or j.get("cap_backoffs")
    ]  # fmt: skip
    return pd.DataFrame(rows)


def latency_table(evidence: Mapping[str, Any], by: list[str] | None = None) -> pd.DataFrame:
    """``summarize`` per group: total/passed/failed of all jobs, latency percentiles of successful ones."""
    by = by or ["provider"]
    jobs = job_table(evidence)
    if jobs.empty:
        return summarize(pd.DataFrame(columns=[*by, "latency_ms", "success"]), by=by)
    counts = summarize(jobs, by=by)[[*by, "total", "passed", "failed"]]
    stats = summarize(jobs[jobs["success"].astype(bool)], by=by).drop(columns=["total", "passed", "failed"])
    return counts.merge(stats, on=by, how="left")


def failure_reasons(evidence: Mapping[str, Any]) -> pd.DataFrame:
    """Count of failed jobs by provider and reason code."""
    jobs = job_table(evidence)
    if jobs.empty or jobs["success"].all():
        return pd.DataFrame(columns=["provider", "reason_code", "runner_reason_code", "jobs"])
    failed = jobs[~jobs["success"]].fillna({"runner_reason_code": "–", "reason_code": "–"})
    return failed.groupby(["provider", "reason_code", "runner_reason_code"]).size().reset_index(name="jobs")


def gate_table(evidence: Mapping[str, Any]) -> pd.DataFrame:
    """The gate's rules with observed, expected and PASS / FAIL / SKIP."""
    rows = [
        {"rule": r["rule"], "observed": r["observed"], "expected": r["expected"], "status": _status(r),
         "meaning": r["explanation"] + (f" ({r['note']})" if r.get("note") else "")}
        for r in evidence.get("gate", {}).get("rules", [])
    ]  # fmt: skip
    return pd.DataFrame(rows)


def _status(rule: dict[str, Any]) -> str:
    return str(rule.get("status") or ("PASS" if rule["passed"] else "FAIL"))


# --------------------------------------------------------------------------- Markdown


def _md_providers(e: Mapping[str, Any]) -> list[str]:
    out = ["## Providers", "", "| provider | jobs | passed | failed | in percentiles | mean ms | p50 ms | p90 ms | p95 ms "
           "| p99 ms | max ms | job p50 ms | job max ms | retries | cap backoffs |", "|---|" + "---|" * 14]  # fmt: skip
    for p, s in e["provider_summary"].items():
        lat = " | ".join(_fmt_ms(s.get(f"latency_ms_{k}")) for k in ("mean", "p50", "p90", "p95", "p99", "max"))
        n_pct = s.get("latency_count", "–")
        out.append(f"| {p} | {s['total']} | {s['passed']} | {s['failed']} | {n_pct} | {lat} | "
                   f"{_fmt_ms(s.get('job_latency_ms_p50'))} | {_fmt_ms(s.get('job_latency_ms_max'))} | "
                   f"{s.get('retries', '–')} | {s.get('cap_backoffs', '–')} |")
    out += ["", PERCENTILE_NOTE if "latency_count" in next(iter(e["provider_summary"].values()), {}) else
            "Percentiles as recorded by the run that wrote this JSON (an older format: the jobs they cover are not stated)."]
    jobs = job_table(e)
    failed = jobs[~jobs["success"].astype(bool)] if not jobs.empty else jobs
    out += ["", f"### Failed jobs, not in the percentiles: {len(failed)}", ""]
    if not len(failed):
        out.append("Every job passed." if len(jobs) else "No job ran.")
    else:
        out += ["| provider | failed | reasons | latency ms of the failed (final attempt) |", "|---|---|---|---|"]
        for p, g in failed.groupby("provider", sort=False):
            reasons = ", ".join(f"{k} ×{v}" for k, v in Counter(g["reason_code"].fillna(g["status"])).items())
            lats = g["latency_ms"].dropna()
            span = "–" if lats.empty else f"{_fmt_ms(lats.min())} … {_fmt_ms(lats.max())}"
            out.append(f"| {p!s} | {len(g)} | {reasons} | {span} |")
    return out


def _md_retries(e: Mapping[str, Any]) -> list[str]:
    jobs = [j for r in e["rounds"] for j in r["jobs"] if len(j.get("attempts") or []) > 1 or j.get("cap_backoffs")]
    note = retry_text(e.get("retry_summary"))
    out = ["## Retries and backoffs", ""]
    if not note:
        ran = any(r["jobs"] for r in e["rounds"])
        return out + ["Every job ran once, at its first `start` call: no retries, no concurrency-cap backoffs."
                      if ran else "No job ran.", ""]
    out += [f"{note[0].upper()}{note[1:]}. Each attempt below is a row of `jobs.parquet`; the job's final attempt decides.", ""]
    out += ["| beads id | attempt | result | reason | runner state | latency ms | cap backoffs | cap wait s | backoff before s "
            "| started (UTC) | detail |", "|---|" + "---|" * 10]  # fmt: skip
    for j in jobs:
        for a in j.get("attempts") or []:
            reason = (a.get("reason_code") or "–") + (f" ({a['runner_reason_code']})" if a.get("runner_reason_code") and not a["success"] else "")
            out.append(f"| `{j['job_spec']['beads_id']}` | {a['attempt']} | {'PASS' if a['success'] else 'FAIL'} | {reason} | "
                       f"{a['status']} | {_fmt_ms(a.get('latency_ms'))} | {a.get('cap_backoffs', 0)} | {a.get('cap_wait_s', 0):.2f} | "
                       f"{a.get('backoff_s', 0):.2f} | {a.get('started_at') or '–'} | {_cell(a.get('detail') or '') or '–'} |")
    return out + [""]


def _md_round(r: dict[str, Any]) -> list[str]:
    cut = " (interrupted by Ctrl-C / SIGTERM: not counted as completed)" if r.get("completed") is False else ""
    n = r["job_count"]
    out = ["", f"## Round {r['round_num']}{cut}: {r['passed']}/{n} passed ({rate_text(r['passed'], n)}), {r['duration_sec']:.1f} s", ""]
    out += ["| provider | prompt | beads id | result | runner state | reason | model | latency ms | source | job ms | retries "
            "| cap backoffs |", "|---|" + "---|" * 11]  # fmt: skip
    for j in r["jobs"]:
        s = j["job_spec"]
        reason = j["reason_code"] or "–"
        if j.get("runner_reason_code") and not j["success"]:
            reason += f" ({j['runner_reason_code']})"
        out.append(
            f"| {s['provider']} | {s['prompt_id']} | `{s['beads_id']}` | {'PASS' if j['success'] else 'FAIL'} | "
            f"{j['status']} | {reason} | {j['selected_model'] or '–'} | {_fmt_ms(j['latency_ms'])} | "
            f"{j.get('latency_source') or '–'} | {_fmt_ms(j.get('job_latency_ms'))} | {j['retries']} | {j.get('cap_backoffs', 0)} |"
        )
    details = [j for j in r["jobs"] if not j["success"] and j.get("stderr")]
    if details:
        out += ["", "Failure details (redacted):", ""]
        for j in details:
            snippet = " ".join(j["stderr"].strip().splitlines()[-3:])[:300].replace("|", "\\|")
            out.append(f"- `{j['job_spec']['beads_id']}`: {snippet}")
    return out


def _md_confidence(e: Mapping[str, Any]) -> list[str]:
    """``## Confidence``: per provider, the Wilson 95% interval, pass^k and the clean rounds still needed."""
    gc = e.get("gate_confidence") or {}
    names = set(ProviderConfidence.__dataclass_fields__)
    items = [ProviderConfidence(**{k: v for k, v in c.items() if k in names}) for c in (gc.get("providers") or {}).values()]
    if not items:
        return []
    out = ["## Confidence", "", f"How much these jobs show (the pass rule stays the gate's): clean rounds needed for "
           f"a per-job success of at least {gc['target']:.0%} at 95% confidence (Wilson lower bound).", "",
           "| " + " | ".join(CONFIDENCE_HEADERS) + " |", "|" + "---|" * len(CONFIDENCE_HEADERS)]
    out += ["| " + " | ".join(row) + " |" for row in confidence_rows(items)]
    return out + [""]


def to_markdown(evidence: Mapping[str, Any], figures: dict[str, str] | None = None) -> str:
    """The human-readable report: provenance, summary, providers (percentiles of successful jobs,
    failed jobs apart), retries and backoffs, gate, preflight, per-round job tables."""
    e = evidence
    total = e["total_jobs"]
    status = "PASSED" if e["passed"] else ("INTERRUPTED" if e.get("interrupted") else "FAILED")
    rs = e.get("retry_summary") or {}
    out = [f"# Multi-provider soak validation: {e['run_id']}", ""]
    out += [f"**Result: {status}** · exit code {e.get('exit_code') if e.get('exit_code') is not None else '–'} · all clean: {clean_text(e).lower()}", ""]
    out += [f"**Runner:** {runner_text(e)}", ""]
    out += ["## Summary", "", "| total jobs | passed | failed | pass rate | retries | cap backoffs | waited | duration | started (UTC) |",
            "|---|" + "---|" * 8]  # fmt: skip
    out += [f"| {total} | {e['total_passed']} | {e['total_failed']} | {rate_text(e['total_passed'], total)} | "
            f"{rs.get('retries', '–')} | {rs.get('cap_backoffs', '–')} | {rs.get('wait_s', 0.0):.1f} s | "
            f"{e['duration_sec']:.1f} s | {e['started_at']} |", ""]
    failed_pf = e.get("preflight", {}).get("failed_providers") or []
    if not total:
        why = f"preflight failed for {', '.join(failed_pf)}" if failed_pf else "the run was interrupted before any job started"
        out += [f"No job ran: {why}. The pass rate of no jobs is n/a; the rules that judge jobs read SKIP.", ""]
    out += _md_providers(e) + [""]
    out += _md_confidence(e)
    out += _md_retries(e)
    out += ["## Gate", "", "The lane passes when every rule holds (SKIP: not evaluated, another rule carries the failure):", ""]
    out += ["| rule | observed | expected | result | meaning |", "|---|---|---|---|---|"]
    for rule in e["gate"]["rules"]:
        meaning = rule["explanation"] + (f" ({rule['note']})" if rule.get("note") else "")
        out.append(f"| {rule['rule']} | {json.dumps(rule['observed'])} | {json.dumps(rule['expected'])} | {_status(rule)} | {meaning} |")
    pf = e["preflight"]
    out += ["", "## Preflight", ""]
    for r in pf["results"]:
        out.append(f"- **{r['provider']}**: {'passed' if r['passed'] else 'FAILED'} (exit {r['returncode']}, {r['duration_sec']} s)")
        for line in r["failing_lines"][:10]:
            out.append(f"    - `{line}`")
    for r in e["rounds"]:
        out += _md_round(r)
    if figures:
        out += ["", "## Figures", ""]
        out += [f"![{name}]({path})" for name, path in figures.items()]
    out += ["", "Latency: `latency_ms` runs from the `dx-runner start` call that launched the final attempt to the",
            "provider's exit: the `.rc` file's mtime where it exists (`rc_mtime`), else the first observed terminal",
            "state (`observed`). `job_latency_ms` runs from the job's first `start` call to that exit.", ""]  # fmt: skip
    return "\n".join(out)


def write_evidence(evidence: Mapping[str, Any], output_dir: str | Path, *, figures: bool = True) -> dict[str, Path]:
    """Write ``{run_id}.json`` and ``{run_id}.md`` atomically (and the latency figure)."""
    out = Path(output_dir)
    run_id = evidence["run_id"]
    paths: dict[str, Path] = {}
    figs: dict[str, str] = {}
    if figures and evidence.get("total_jobs"):
        from soaklib.report.plots import latency_figure, save_figure

        jobs = job_table(evidence)
        fig = latency_figure(jobs[jobs["success"].astype(bool)])
        if fig is not None:
            png = save_figure(fig, out / run_id / "figures" / "latency.png")
            figs["latency per provider (successful jobs)"] = str(png.relative_to(out))
            paths["latency_png"] = png
    paths["json"] = atomic_write_json(out / f"{run_id}.json", evidence)
    paths["md"] = atomic_write_text(out / f"{run_id}.md", to_markdown(evidence, figs))
    return paths


def read_evidence(path: str | Path) -> LaneEvidence:
    """Load a ``{run_id}.json`` written by ``write_evidence`` (or by the seed runner)."""
    return LaneEvidence.from_json(json.loads(Path(path).read_text(encoding="utf-8")))

"""Evidence of a multi-provider validation: ``{run_id}.json`` + ``{run_id}.md`` (+ figures).

Works on the seed-format run dict only (no dispatch objects), so an old JSON can be
re-rendered and the notebook and the CLI share one writer.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from soaklib.store import atomic_write_json, atomic_write_text


def _fmt_ms(v: Any) -> str:
    return "–" if v is None else f"{float(v):,.0f}"


def provider_table(evidence: dict[str, Any]) -> pd.DataFrame:
    """Provider summary with percentiles, one row per provider."""
    rows = [{"provider": p, **s} for p, s in evidence.get("provider_summary", {}).items()]
    return pd.DataFrame(rows)


def round_table(evidence: dict[str, Any]) -> pd.DataFrame:
    """One row per round: jobs, passed, pass rate, duration and latency percentiles."""
    rows = []
    for r in evidence.get("rounds", []):
        lat = r.get("latency", {})
        rows.append({
            "round": r["round_num"], "jobs": r["job_count"], "passed": r["passed"],
            "pass_rate": r["pass_rate"], "duration_sec": r["duration_sec"],
            **{k: lat.get(k) for k in ("latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "latency_ms_max")},
        })  # fmt: skip
    return pd.DataFrame(rows)


def job_table(evidence: dict[str, Any]) -> pd.DataFrame:
    """Every job of every round (final attempt) as a flat table."""
    rows = []
    for r in evidence.get("rounds", []):
        for j in r["jobs"]:
            s = j["job_spec"]
            rows.append({
                "round": s["round_num"], "provider": s["provider"], "prompt_id": s["prompt_id"],
                "beads_id": s["beads_id"], "success": j["success"], "status": j["status"],
                "reason_code": j["reason_code"], "runner_reason_code": j.get("runner_reason_code"),
                "selected_model": j["selected_model"], "latency_ms": j["latency_ms"],
                "latency_source": j.get("latency_source"), "retries": j["retries"], "detail": j.get("stderr") or "",
            })  # fmt: skip
    return pd.DataFrame(rows)


def failure_reasons(evidence: dict[str, Any]) -> pd.DataFrame:
    """Count of failed jobs by provider and reason code."""
    jobs = job_table(evidence)
    if jobs.empty or jobs["success"].all():
        return pd.DataFrame(columns=["provider", "reason_code", "runner_reason_code", "jobs"])
    failed = jobs[~jobs["success"]].fillna({"runner_reason_code": "–", "reason_code": "–"})
    return failed.groupby(["provider", "reason_code", "runner_reason_code"]).size().reset_index(name="jobs")


def to_markdown(evidence: dict[str, Any], figures: dict[str, str] | None = None) -> str:
    """The human-readable report: summary, providers, gate, preflight, per-round job tables."""
    e = evidence
    total = e["total_jobs"]
    rate = 100.0 * e["total_passed"] / total if total else 0.0
    status = "PASSED" if e["passed"] else ("INTERRUPTED" if e.get("interrupted") else "FAILED")
    out = [f"# Multi-provider soak validation: {e['run_id']}", ""]
    out += [f"**Result: {status}** · exit code {e.get('exit_code', '–')} · all clean: {'yes' if e['all_clean'] else 'no'}", ""]
    out += ["## Summary", "", "| total jobs | passed | failed | pass rate | duration | started (UTC) |", "|---|---|---|---|---|---|"]
    out += [f"| {total} | {e['total_passed']} | {e['total_failed']} | {rate:.1f}% | {e['duration_sec']:.1f} s | {e['started_at']} |", ""]
    out += ["## Providers", "", "| provider | total | passed | failed | mean ms | p50 ms | p90 ms | p95 ms | p99 ms | max ms |"]
    out += ["|---|---|---|---|---|---|---|---|---|---|"]
    for p, s in e["provider_summary"].items():
        lat = " | ".join(_fmt_ms(s.get(f"latency_ms_{k}")) for k in ("mean", "p50", "p90", "p95", "p99", "max"))
        out.append(f"| {p} | {s['total']} | {s['passed']} | {s['failed']} | {lat} |")
    out += ["", "## Gate", "", "The lane passes when every rule holds:", "", "| rule | observed | expected | result | meaning |"]
    out += ["|---|---|---|---|---|"]
    for rule in e["gate"]["rules"]:
        out.append(
            f"| {rule['rule']} | {json.dumps(rule['observed'])} | {json.dumps(rule['expected'])} | "
            f"{'PASS' if rule['passed'] else 'FAIL'} | {rule['explanation']} |"
        )
    pf = e["preflight"]
    out += ["", "## Preflight", ""]
    for r in pf["results"]:
        out.append(f"- **{r['provider']}**: {'passed' if r['passed'] else 'FAILED'} (exit {r['returncode']}, {r['duration_sec']} s)")
        for line in r["failing_lines"][:10]:
            out.append(f"    - `{line}`")
    for r in e["rounds"]:
        out += ["", f"## Round {r['round_num']}: {r['passed']}/{r['job_count']} passed ({100 * r['pass_rate']:.1f}%), {r['duration_sec']:.1f} s", ""]
        out += ["| provider | prompt | beads id | result | status | reason | model | latency ms | source | retries |"]
        out += ["|---|---|---|---|---|---|---|---|---|---|"]
        for j in r["jobs"]:
            s = j["job_spec"]
            reason = j["reason_code"] or "–"
            if j.get("runner_reason_code") and not j["success"]:
                reason += f" ({j['runner_reason_code']})"
            out.append(
                f"| {s['provider']} | {s['prompt_id']} | `{s['beads_id']}` | {'PASS' if j['success'] else 'FAIL'} | "
                f"{j['status']} | {reason} | {j['selected_model'] or '–'} | {_fmt_ms(j['latency_ms'])} | "
                f"{j.get('latency_source') or '–'} | {j['retries']} |"
            )
        details = [j for j in r["jobs"] if not j["success"] and j.get("stderr")]
        if details:
            out += ["", "Failure details (redacted):", ""]
            for j in details:
                snippet = " ".join(j["stderr"].strip().splitlines()[-3:])[:300].replace("|", "\\|")
                out.append(f"- `{j['job_spec']['beads_id']}`: {snippet}")
    if figures:
        out += ["", "## Figures", ""]
        out += [f"![{name}]({path})" for name, path in figures.items()]
    out += ["", "Latency is measured from the `dx-runner start` call to the provider's exit: the `.rc` file's",
            "mtime where it exists (`rc_mtime`), else the first observed terminal state (`observed`).", ""]  # fmt: skip
    return "\n".join(out)


def write_evidence(evidence: dict[str, Any], output_dir: str | Path, *, figures: bool = True) -> dict[str, Path]:
    """Write ``{run_id}.json`` and ``{run_id}.md`` atomically (and the latency figure)."""
    out = Path(output_dir)
    run_id = evidence["run_id"]
    paths: dict[str, Path] = {}
    figs: dict[str, str] = {}
    if figures and evidence.get("total_jobs"):
        from soaklib.report.plots import latency_figure, save_figure

        fig = latency_figure(job_table(evidence))
        if fig is not None:
            png = save_figure(fig, out / run_id / "figures" / "latency.png")
            figs["latency per provider"] = str(png.relative_to(out))
            paths["latency_png"] = png
    paths["json"] = atomic_write_json(out / f"{run_id}.json", evidence)
    paths["md"] = atomic_write_text(out / f"{run_id}.md", to_markdown(evidence, figs))
    return paths


def read_evidence(path: str | Path) -> dict[str, Any]:
    """Load a ``{run_id}.json`` written by ``write_evidence`` (or by the seed runner)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def gate_table(evidence: dict[str, Any]) -> pd.DataFrame:
    """The gate's rules with observed, expected and PASS/FAIL."""
    rows = [
        {"rule": r["rule"], "observed": r["observed"], "expected": r["expected"], "status": "PASS" if r["passed"] else "FAIL", "meaning": r["explanation"]}
        for r in evidence.get("gate", {}).get("rules", [])
    ]
    return pd.DataFrame(rows)

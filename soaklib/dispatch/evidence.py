"""The evidence of a multi-provider lane: the seed-format run dict, built from round results.

Every key of the established JSON is kept with its meaning; what this module adds is
named in ``ADDED_KEYS`` (DESIGN.md section 3: add, never rename). Latency percentiles are
computed over successful jobs only (``LATENCY_DEFINITIONS`` says so in the JSON itself);
the gate is a list of criteria rows ``{metric, observed, unit, pass_bound, fail_bound,
status}`` as the soaks have, with the established ``gate`` rules derived from them.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from soaklib.analysis.criteria import Criterion, CriterionRow, evaluate
from soaklib.analysis.lane import lane_confidence
from soaklib.analysis.latency import percentiles
from soaklib.artifacts import EVIDENCE_SCHEMA_VERSION, LaneEvidence
from soaklib.dispatch.dx_runner import DxRunner, PreflightResult
from soaklib.dispatch.job import JobOutcome
from soaklib.observe.environment import Environment
from soaklib.params import MultiProviderParams, to_dict
from soaklib.store import utc_now

SCHEMA_VERSION = EVIDENCE_SCHEMA_VERSION
ADDED_KEYS = (
    "schema_version", "interrupted", "exit_code", "pass_rate", "provenance", "retry_summary",
    "latency_definitions", "preflight", "parameters", "environment", "gate", "criteria",
)  # fmt: skip
LATENCY_DEFINITIONS = {
    "latency_ms": "the job's final attempt: from the dx-runner start call that launched it to the provider's "
    "exit (the .rc mtime, else the first observed terminal state; see latency_source)",
    "attempts[].latency_ms": "one attempt: from the start call that launched it to its provider's exit",
    "job_latency_ms": "the whole job: from its first start call to the final attempt's provider exit, "
    "including failed attempts, retry backoff and concurrency-cap (exit 26) waits",
    "percentiles": "provider_summary and rounds[].latency: latency_ms_* over successful jobs only "
    "(latency_count of them) and job_latency_ms_* over the same jobs; failed jobs are counted in "
    "failed and listed in failed_beads_ids, not in the percentiles",
}
JOB_COLUMNS = [
    "run_id", "round_num", "job_index", "attempt", "beads_id", "provider", "prompt_id", "model",
    "selected_model", "status", "reason_code", "runner_reason_code", "success", "completion",
    "retries", "latency_ms", "latency_source", "started_at", "completed_at",
    "cap_backoffs", "cap_wait_s", "backoff_s",
]  # fmt: skip
_STATS = ("mean", "p50", "p90", "p95", "p99", "max")
_VERSION = re.compile(r"\b(\d+\.\d+(?:\.\d+)?(?:[-+.][0-9A-Za-z.]+)?)\b")


@dataclass
class RoundResult:
    """One round's jobs; ``completed`` is False for a round cut by Ctrl-C (not counted as run)."""

    round_num: int
    outcomes: list[JobOutcome]
    started_at: datetime
    completed_at: datetime
    duration_s: float
    completed: bool = True

    @property
    def passed(self) -> int:
        return sum(o.final.success for o in self.outcomes)


def _stats(prefix: str, values: list[float | None]) -> dict[str, float | None]:
    pct = percentiles([v for v in values if v is not None])
    return {f"{prefix}_{k}": None if (v := pct[k]) is None else round(float(v), 1) for k in _STATS}


def latency_summary(outcomes: list[JobOutcome]) -> dict[str, Any]:
    """Counts of all jobs; latency percentiles of the successful ones only (see LATENCY_DEFINITIONS)."""
    ok = [o for o in outcomes if o.final.success]
    passed = len(ok)
    return {
        "total": len(outcomes),
        "passed": passed,
        "failed": len(outcomes) - passed,
        **_stats("latency_ms", [o.final.latency_ms for o in ok]),
        "latency_count": sum(o.final.latency_ms is not None for o in ok),
        **_stats("job_latency_ms", [o.job_latency_ms for o in ok]),
        "failed_beads_ids": [o.spec.beads_id for o in outcomes if not o.final.success],
        "retries": sum(len(o.attempts) - 1 for o in outcomes),
        "cap_backoffs": sum(o.cap_backoffs for o in outcomes),
    }


def retry_summary(outcomes: list[JobOutcome]) -> dict[str, Any]:
    """What it took to get the jobs through: retries, failed attempts, concurrency-cap backoffs, waits."""
    waits = [o.waits() for o in outcomes]
    return {
        "retries": sum(len(o.attempts) - 1 for o in outcomes),
        "jobs_retried": sum(len(o.attempts) > 1 for o in outcomes),
        "failed_attempts": sum(not a.success for o in outcomes for a in o.attempts),
        "cap_backoffs": sum(o.cap_backoffs for o in outcomes),
        "jobs_cap_backed_off": sum(o.cap_backoffs > 0 for o in outcomes),
        "cap_wait_s": round(sum(w["cap_wait_s"] for w in waits), 3),
        "retry_wait_s": round(sum(w["retry_wait_s"] for w in waits), 3),
        "wait_s": round(sum(w["wait_s"] for w in waits), 3),
    }


def round_dict(rr: RoundResult) -> dict[str, Any]:
    """``rounds[i]``: the seed's keys plus ``completed``, ``interrupted``, ``latency``, ``retry_summary``."""
    n = len(rr.outcomes)
    return {
        "round_num": rr.round_num, "job_count": n, "passed": rr.passed,
        "pass_rate": round(rr.passed / n, 4) if n else None,
        "started_at": rr.started_at.isoformat(), "completed_at": rr.completed_at.isoformat(),
        "duration_sec": round(rr.duration_s, 3),
        "completed": rr.completed, "interrupted": not rr.completed,
        "latency": latency_summary(rr.outcomes),
        "retry_summary": retry_summary(rr.outcomes),
        "jobs": [o.to_seed_dict() for o in rr.outcomes],
    }  # fmt: skip


def build_evidence(
    run_id: str,
    params: MultiProviderParams,
    runner: DxRunner,
    models: dict[str, str],
    preflight: list[PreflightResult],
    rounds: list[RoundResult],
    started_at: datetime,
    duration_s: float,
    interrupted: bool,
    provenance: dict[str, Any] | None = None,
) -> LaneEvidence:
    """The seed-format run (add, never rename) plus percentiles, retries, preflight, gate, criteria."""
    all_jobs = [o for rr in rounds for o in rr.outcomes]
    provider_summary = {p: latency_summary([o for o in all_jobs if o.spec.provider == p]) for p in params.providers}
    total = len(all_jobs)
    passed_jobs = sum(o.final.success for o in all_jobs)
    failed_pf = [pf.provider for pf in preflight if not pf.passed]
    criteria = gate_criteria(params, preflight, rounds, interrupted)
    gate = gate_from_criteria(criteria, failed_pf, bool(all_jobs))
    all_clean = gate["passed"]
    prov = provenance or runner_provenance(runner, params)
    return LaneEvidence(
        run_id=run_id,
        passed=all_clean,
        all_clean=all_clean,
        interrupted=interrupted,
        total_jobs=total,
        total_passed=passed_jobs,
        total_failed=total - passed_jobs,
        pass_rate=round(passed_jobs / total, 4) if total else None,
        started_at=started_at.isoformat(),
        completed_at=utc_now().isoformat(),
        duration_sec=round(duration_s, 3),
        provenance=prov,
        provider_summary=provider_summary,
        retry_summary=retry_summary(all_jobs),
        latency_definitions=LATENCY_DEFINITIONS,
        rounds=[round_dict(rr) for rr in rounds],
        preflight={"passed": not failed_pf, "failed_providers": failed_pf, "results": [pf.as_dict() for pf in preflight]},
        parameters=to_dict(params) | {"run_id": run_id},
        environment=environment(runner, params, models, prov),
        gate=gate,
        criteria=criteria,
        gate_confidence=gate_confidence(all_jobs, params),
    )


def gate_confidence(jobs: list[JobOutcome], params: MultiProviderParams) -> dict[str, Any]:
    """Per provider: success with its Wilson 95% bounds, pass^k over rounds, clean rounds still needed
    (``soaklib.analysis.lane``); the pass rule stays the gate's."""
    target = params.success_target
    items = lane_confidence(((o.spec.provider, o.spec.prompt_id, bool(o.final.success)) for o in jobs),
                            jobs_per_round=params.jobs_per_provider, target=target)
    return {"target": target, "confidence": 0.95,
            "method": "Wilson score interval of final job outcomes; pass^k = mean over prompts of C(c,k)/C(n,k), "
                      "k = the rounds a prompt ran; clean jobs needed until the Wilson lower bound reaches the target",
            "providers": {c.provider: c.to_json() for c in items}}


_EXPLAIN = {
    "preflight": "every provider that runs passes dx-runner preflight",
    "rounds_completed": "every planned round ran to the end (a round cut by Ctrl-C is not completed)",
    "consecutive_clean_rounds": "consecutive completed rounds with a 100% pass rate",
    "failed_jobs": "no job failed on any provider (final attempts)",
    "model_policy_violations": "selected models are canonical; no zai-coding-plan or alias_for fallback",
}


def gate_criteria(
    params: MultiProviderParams, preflight: list[PreflightResult], rounds: list[RoundResult], interrupted: bool
) -> list[CriterionRow]:
    """The gate as criteria rows (``soaklib.analysis.criteria``): PASS, FAIL, or SKIP for a rule
    that cannot be judged because no job ran (the preflight or rounds rule carries the failure)."""
    jobs = [o for rr in rounds for o in rr.outcomes]
    failed_pf = [pf.provider for pf in preflight if not pf.passed]
    streak = best = 0
    for rr in rounds:
        clean = rr.completed and bool(rr.outcomes) and rr.passed == len(rr.outcomes)
        streak = streak + 1 if clean else 0
        best = max(best, streak)
    ran = not failed_pf and bool(preflight)
    observed: dict[str, Any] = {
        "preflight": len(failed_pf),
        "rounds_completed": sum(rr.completed for rr in rounds) if ran else None,
        "consecutive_clean_rounds": best if ran else None,
        "failed_jobs": sum(not o.final.success for o in jobs) if jobs else None,
        "model_policy_violations": sum(o.final.reason_code == "model_policy_violation" for o in jobs) if jobs else None,
    }
    r = params.rounds
    table = [
        Criterion("preflight", _EXPLAIN["preflight"], "failed providers", 0, 0, "max"),
        Criterion("rounds_completed", _EXPLAIN["rounds_completed"], "rounds", r, r, "min", optional=True),
        Criterion("consecutive_clean_rounds", _EXPLAIN["consecutive_clean_rounds"], "rounds", r, r, "min", optional=True),
        Criterion("failed_jobs", _EXPLAIN["failed_jobs"], "jobs", 0, 0, "max", optional=True),
        Criterion("model_policy_violations", _EXPLAIN["model_policy_violations"], "jobs", 0, 0, "max", optional=True),
    ]
    why = f"preflight failed for {', '.join(failed_pf)}" if failed_pf else ("interrupted" if interrupted else "no round ran")
    rows = evaluate(table, observed)
    for row in rows:
        if row["status"] == "SKIP":
            row["note"] = f"not evaluated: no job ran; {why}"
    return rows


def gate_from_criteria(criteria: list[CriterionRow], failed_providers: list[str], any_job: bool) -> dict[str, Any]:
    """The established ``gate`` (rules with observed, expected, passed, explanation) plus each
    rule's ``status`` (PASS / FAIL / SKIP; a SKIP rule has ``passed`` true: it did not fail, and
    the gate passes only when some job ran)."""
    rules = []
    for row in criteria:
        obs: Any
        if row["metric"] == "preflight":
            obs, exp = failed_providers, []
        else:  # a rule not evaluated observed nothing: 0 rounds, 0 jobs
            obs, exp = (0 if row["observed"] is None else row["observed"]), row["pass_bound"]
        rules.append({
            "rule": row["metric"], "observed": obs, "expected": exp, "passed": row["status"] != "FAIL",
            "status": row["status"], "explanation": row["label"], **({"note": row["note"]} if row["note"] else {}),
        })  # fmt: skip
    return {"passed": any_job and all(r["passed"] for r in rules), "rules": rules}


def runner_provenance(runner: DxRunner, params: MultiProviderParams) -> dict[str, Any]:
    """What answered the calls: the built-in simulator (and its scenario) or a real runner's path,
    version (``--version``; None when it has none) and sha256."""
    from soaklib import __version__

    if params.dry_run:
        from soaklib.sim.dx_runner import VERSION

        return {
            "simulator": True, "kind": "simulator", "scenario": params.scenario, "seed": params.seed,
            "runner_path": None, "runner_version": VERSION, "runner_sha256": None,
            "runner_argv": list(runner.argv_prefix),
            "description": f"dx-runner simulator, scenario {params.scenario} (built into soaklib {__version__}; "
            f"simulates dx-runner {VERSION}; no real provider was called)",
        }  # fmt: skip
    path = runner.argv_prefix[0]
    version = runner_version(runner)
    return {
        "simulator": False, "kind": "dx-runner", "scenario": None, "seed": None,
        "runner_path": path, "runner_version": version, "runner_sha256": _sha256(path),
        "runner_argv": list(runner.argv_prefix),
        "description": f"dx-runner {path}, version {version or 'unknown (no --version)'}",
    }  # fmt: skip


def runner_version(runner: DxRunner, timeout_s: float = 10.0) -> str | None:
    """``dx-runner --version`` → ``"2.0.0"``; None when the runner prints no version number."""
    c = runner.call(["--version"], timeout_s)
    m = _VERSION.search(c.stdout + "\n" + c.stderr) if not c.timed_out else None
    return m.group(1) if m else None


def _sha256(path: str) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def environment(runner: DxRunner, params: MultiProviderParams, models: dict[str, str], prov: dict[str, Any]) -> dict[str, Any]:
    """What the run ran on: the one :class:`~soaklib.observe.environment.Environment` of every run
    (host, platform, Python, packages, commit, CPUs, GPUs), then the lane's own: soaklib's
    version, the runner (and its version), the simulator's scenario, the canonical models."""
    from soaklib import __version__

    return {
        **Environment().to_json(),
        "soaklib": __version__,
        "runner": " ".join(runner.argv_prefix),
        "runner_version": prov.get("runner_version"),
        "simulator": params.dry_run,
        "scenario": params.scenario if params.dry_run else None,
        "outcome_dir": str(runner.outcome_dir),
        "canonical_models": models,
    }


def jobs_frame(run_id: str, rounds: list[RoundResult]) -> pd.DataFrame:
    """One row per attempt: the columns of DESIGN.md section 3, then the added ``cap_backoffs``,
    ``cap_wait_s`` (exit-26 waits before the attempt launched) and ``backoff_s`` (retry wait before it)."""
    rows = []
    for rr in rounds:
        for o in rr.outcomes:
            for a in o.attempts:
                s = o.spec
                rows.append({
                    "run_id": run_id, "round_num": s.round_num, "job_index": s.job_index, "attempt": a.attempt,
                    "beads_id": s.beads_id, "provider": s.provider, "prompt_id": s.prompt_id, "model": s.model,
                    "selected_model": a.selected_model, "status": a.status, "reason_code": a.reason_code,
                    "runner_reason_code": a.runner_reason_code, "success": a.success, "completion": a.completion,
                    "retries": a.attempt, "latency_ms": a.latency_ms, "latency_source": a.latency_source,
                    "started_at": a.started_at, "completed_at": a.completed_at,
                    "cap_backoffs": a.cap_waits, "cap_wait_s": a.cap_wait_s, "backoff_s": a.backoff_s,
                })  # fmt: skip
    frame = pd.DataFrame(rows, columns=JOB_COLUMNS)
    for col in ("started_at", "completed_at"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    for col in ("latency_ms", "cap_wait_s", "backoff_s"):
        frame[col] = frame[col].astype("float64")
    frame["cap_backoffs"] = frame["cap_backoffs"].astype("int64")
    return frame

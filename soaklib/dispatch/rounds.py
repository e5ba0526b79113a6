"""Multi-provider validation: preflight → deterministic plan → bounded parallel rounds → evidence.

``run_lane(params)`` returns a ``LaneResult`` whose ``evidence`` is the seed-compatible run
dict (every key of the established JSON plus percentiles, preflight, parameters, environment
and gate); ``soaklib.report.multi_provider`` writes it as JSON + Markdown.
"""
from __future__ import annotations

import platform
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Executor, Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from soaklib.analysis.latency import percentiles
from soaklib.dispatch.dx_runner import SIMULATOR_ARGV, DxRunner, PreflightResult, find_runner
from soaklib.dispatch.job import JobOutcome, JobRunner, JobSpec
from soaklib.params import MultiProviderParams, canonical_models, to_dict
from soaklib.store import atomic_write_text, check_run_id, run_dir_for, utc_now, utc_stamp, write_table

SCHEMA_VERSION = "1.1"
PROMPTS: dict[str, tuple[str, str]] = {
    "echo_ok": ("Reply with exactly the word OK and nothing else. (prompt_id: echo_ok)", "OK"),
    "echo_ready": ("Reply with exactly the word READY and nothing else. (prompt_id: echo_ready)", "READY"),
}
JOB_COLUMNS = [
    "run_id", "round_num", "job_index", "attempt", "beads_id", "provider", "prompt_id", "model",
    "selected_model", "status", "reason_code", "runner_reason_code", "success", "completion",
    "retries", "latency_ms", "latency_source", "started_at", "completed_at",
]  # fmt: skip
Echo = Callable[[str], None]


@dataclass
class RoundResult:
    round_num: int
    outcomes: list[JobOutcome]
    started_at: datetime
    completed_at: datetime
    duration_s: float

    @property
    def passed(self) -> int:
        return sum(o.final.success for o in self.outcomes)


@dataclass
class LaneResult:
    run_id: str
    params: MultiProviderParams
    run_dir: Path
    evidence: dict[str, Any]
    jobs: pd.DataFrame
    exit_code: int
    rounds: list[RoundResult] = field(default_factory=list)


def plan_round(run_id: str, round_num: int, params: MultiProviderParams, worktree: Path, models: dict[str, str]) -> list[JobSpec]:
    """The deterministic jobs of one round, providers interleaved so each is exercised early."""
    jobs = []
    for i in range(1, params.jobs_per_provider + 1):
        for p in params.providers:
            prompt_id = "echo_ok" if i % 2 == 1 else "echo_ready"
            prompt, hint = PROMPTS[prompt_id]
            jobs.append(
                JobSpec(
                    beads_id=f"{run_id}-r{round_num}-{p}-{i}",
                    provider=p,
                    prompt_id=prompt_id,
                    prompt=prompt,
                    success_hint=hint,
                    model=models[p],
                    worktree=str(worktree),
                    round_num=round_num,
                    job_index=i,
                )
            )
    return jobs


def ensure_worktree(run_id: str, worktree: str | None) -> Path:
    """The given worktree, or a fresh git repository under /tmp/agents/<run_id>/repo."""
    if worktree:
        return Path(worktree)
    path = Path("/tmp/agents") / run_id / "repo"
    path.mkdir(parents=True, exist_ok=True)
    if not (path / ".git").exists() and shutil.which("git"):
        subprocess.run(["git", "init", "-q", str(path)], check=False, timeout=30, capture_output=True)
    return path


def make_runner(params: MultiProviderParams, run_id: str, cancel: threading.Event) -> DxRunner:
    """The real dx-runner, or the simulator for a dry run (with its own fresh state folder)."""
    env: dict[str, str] = {}
    if params.dry_run:
        argv = list(SIMULATOR_ARGV)
        outcome_dir = Path(params.outcome_dir or f"/tmp/dx-runner-sim/{run_id}")
        if outcome_dir.exists() and not params.outcome_dir:
            shutil.rmtree(outcome_dir, ignore_errors=True)  # ours: same run id → same outcomes
        env = {"DX_SIM_STATE_DIR": str(outcome_dir), "DX_SIM_SCENARIO": params.scenario, "DX_SIM_SEED": str(params.seed)}
    else:
        argv, outcome_dir = find_runner(params.dx_runner), Path(params.outcome_dir or "/tmp/dx-runner")
    return DxRunner(
        argv,
        outcome_dir=outcome_dir,
        env=env,
        preflight_timeout_s=params.preflight_timeout_s,
        start_timeout_s=params.start_timeout_s,
        check_timeout_s=params.check_timeout_s,
        cancel=cancel,
    )


def run_lane(
    params: MultiProviderParams,
    *,
    echo: Echo | None = None,
    progress: bool = False,
    executor_factory: Callable[[int], Executor] = lambda n: ThreadPoolExecutor(max_workers=n),
    cancel: threading.Event | None = None,
) -> LaneResult:
    """Run the validation; a Ctrl-C stops running jobs and returns a partial, interrupted result."""
    params.validate()
    say = echo or (lambda _s: None)
    run_id = check_run_id(params.run_id or f"soak-{utc_stamp()}")
    cancel = cancel or threading.Event()
    runner = make_runner(params, run_id, cancel)
    run_dir = run_dir_for(params.output_dir, run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    models = canonical_models()
    started_at, t0 = utc_now(), time.monotonic()
    say("=== Multi-Provider Soak Validation ===")
    say(f"Run ID: {run_id}")
    say(f"Rounds: {params.rounds}")
    say(f"Providers: {', '.join(params.providers)} ({params.jobs_per_provider} jobs each)")
    say(f"Runner: {' '.join(runner.argv_prefix)}{' (simulator, scenario ' + params.scenario + ')' if params.dry_run else ''}")

    rounds: list[RoundResult] = []
    interrupted = False
    preflight: list[PreflightResult] = []
    try:
        with ThreadPoolExecutor(max_workers=len(params.providers)) as pool:
            preflight = list(pool.map(runner.preflight, params.providers))
        for pf in preflight:
            if not pf.passed:
                say(f"Preflight FAILED for {pf.provider}: " + "; ".join(pf.failing_lines[:3]))
        if all(pf.passed for pf in preflight):
            worktree = ensure_worktree(run_id, params.worktree)
            jobs_runner = JobRunner(
                runner,
                timeout_s=params.timeout_sec,
                canonical_models=models,
                no_op_is_success=params.no_op_is_success,
                max_retries=params.max_retries,
                max_concurrent_starts=params.max_concurrent_starts,
            )
            for r in range(1, params.rounds + 1):
                say(f"\n--- Round {r}/{params.rounds} ---")
                rr = _run_round(r, run_id, params, worktree, models, jobs_runner, run_dir, executor_factory, progress)
                rounds.append(rr)
                _print_round(say, rr)
                if cancel.is_set():
                    interrupted = True
                    break
    except KeyboardInterrupt:
        interrupted = True
        cancel.set()
    evidence = build_evidence(
        run_id, params, runner, models, preflight, rounds, started_at, time.monotonic() - t0, interrupted
    )
    jobs = jobs_frame(run_id, rounds)
    write_table(run_dir / "jobs.parquet", jobs)
    code = 21 if evidence["preflight"]["failed_providers"] else 130 if interrupted else 0 if evidence["passed"] else 1
    evidence["exit_code"] = code
    say("\n=== Validation Complete ===")
    say(f"Status: {'PASSED' if evidence['passed'] else 'INTERRUPTED' if interrupted else 'FAILED'}")
    say(f"All Clean: {'Yes' if evidence['all_clean'] else 'No'}")
    say(f"Total: {evidence['total_passed']}/{evidence['total_jobs']} passed")
    say(f"Duration: {evidence['duration_sec']:.1f}s")
    return LaneResult(run_id, params, run_dir, evidence, jobs, code, rounds)


def _run_round(
    r: int,
    run_id: str,
    params: MultiProviderParams,
    worktree: Path,
    models: dict[str, str],
    jobs_runner: JobRunner,
    run_dir: Path,
    executor_factory: Callable[[int], Executor],
    progress: bool,
) -> RoundResult:
    specs = plan_round(run_id, r, params, worktree, models)
    prompt_dir = run_dir / "prompts"
    started_at, t0 = utc_now(), time.monotonic()
    outcomes: dict[str, JobOutcome] = {}
    bar = _progress(len(specs), f"round {r}", progress)
    pool = executor_factory(params.parallel)
    try:
        futures: dict[Future[JobOutcome], JobSpec] = {}
        for spec in specs:
            prompt_file = atomic_write_text(prompt_dir / f"{spec.beads_id}.txt", spec.prompt + "\n")
            futures[pool.submit(jobs_runner.run, spec, prompt_file)] = spec
        try:
            for fut in as_completed(futures):
                outcomes[futures[fut].beads_id] = fut.result()
                if bar is not None:
                    bar.update(1)
        except KeyboardInterrupt:
            jobs_runner.runner.cancel.set()
            for fut, spec in futures.items():  # each job stops itself when it sees the cancel
                outcomes[spec.beads_id] = fut.result()
    finally:
        pool.shutdown(wait=True)
        if bar is not None:
            bar.close()
    ordered = [outcomes[s.beads_id] for s in sorted(specs, key=lambda s: (params.providers.index(s.provider), s.job_index))]
    return RoundResult(r, ordered, started_at, utc_now(), time.monotonic() - t0)


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="job", leave=False, file=sys.stderr)


def _print_round(say: Echo, rr: RoundResult) -> None:
    n = len(rr.outcomes)
    rate = 100.0 * rr.passed / n if n else 0.0
    say(f"Round {rr.round_num}: {'PASSED' if rr.passed == n else 'FAILED'} ({rate:.1f}% pass rate)")
    for o in rr.outcomes:
        a = o.final
        answer = o.spec.success_hint if a.success else (a.reason_code or a.status)
        lat = f", {a.latency_ms / 1000:.2f}s" if a.latency_ms is not None else ""
        say(f"  [{o.spec.provider}] {o.spec.prompt_id}: {answer} ({'success' if a.success else a.status}{lat})")


def jobs_frame(run_id: str, rounds: list[RoundResult]) -> pd.DataFrame:
    """One row per attempt, columns of DESIGN.md section 3."""
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
                })  # fmt: skip
    frame = pd.DataFrame(rows, columns=JOB_COLUMNS)
    for col in ("started_at", "completed_at"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    frame["latency_ms"] = frame["latency_ms"].astype("float64")
    return frame


def _summary(values: list[float | None], total: int, passed: int) -> dict[str, Any]:
    pct = percentiles([v for v in values if v is not None])
    out: dict[str, Any] = {"total": total, "passed": passed, "failed": total - passed}
    for key in ("mean", "p50", "p90", "p95", "p99", "max"):
        v = pct.get(key) if pct else None
        out[f"latency_ms_{key}"] = None if v is None else round(float(v), 1)
    return out


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
) -> dict[str, Any]:
    """The seed-format run dict (add, never rename) plus percentiles, preflight, gate."""
    all_jobs = [o for rr in rounds for o in rr.outcomes]
    provider_summary = {}
    for p in params.providers:
        mine = [o for o in all_jobs if o.spec.provider == p]
        provider_summary[p] = _summary([o.final.latency_ms for o in mine], len(mine), sum(o.final.success for o in mine))
    round_dicts = []
    for rr in rounds:
        n = len(rr.outcomes)
        round_dicts.append({
            "round_num": rr.round_num, "job_count": n, "passed": rr.passed,
            "pass_rate": round(rr.passed / n, 4) if n else 0.0,
            "started_at": rr.started_at.isoformat(), "completed_at": rr.completed_at.isoformat(),
            "duration_sec": round(rr.duration_s, 3),
            "latency": _summary([o.final.latency_ms for o in rr.outcomes], n, rr.passed),
            "jobs": [o.to_seed_dict() for o in rr.outcomes],
        })  # fmt: skip
    total = len(all_jobs)
    passed_jobs = sum(o.final.success for o in all_jobs)
    failed_pf = [pf.provider for pf in preflight if not pf.passed]
    gate = gate_rules(params, preflight, round_dicts, all_jobs, interrupted)
    all_clean = all(rule["passed"] for rule in gate["rules"])
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "passed": all_clean,
        "all_clean": all_clean,
        "interrupted": interrupted,
        "total_jobs": total,
        "total_passed": passed_jobs,
        "total_failed": total - passed_jobs,
        "started_at": started_at.isoformat(),
        "completed_at": utc_now().isoformat(),
        "duration_sec": round(duration_s, 3),
        "provider_summary": provider_summary,
        "rounds": round_dicts,
        "preflight": {"passed": not failed_pf, "failed_providers": failed_pf, "results": [pf.as_dict() for pf in preflight]},
        "parameters": to_dict(params) | {"run_id": run_id},
        "environment": environment(runner, params, models),
        "gate": gate,
    }


def gate_rules(
    params: MultiProviderParams, preflight: list[PreflightResult], rounds: list[dict[str, Any]], jobs: list[JobOutcome], interrupted: bool
) -> dict[str, Any]:
    """The pass/fail gate as rules, each with what was observed and what was expected."""
    clean = [r["passed"] == r["job_count"] and r["job_count"] > 0 for r in rounds]
    streak = best = 0
    for c in clean:
        streak = streak + 1 if c else 0
        best = max(best, streak)
    violations = sum(o.final.reason_code == "model_policy_violation" for o in jobs)
    failed_pf = [pf.provider for pf in preflight if not pf.passed]
    rules = [
        ("preflight", failed_pf, [], not failed_pf, "every provider that runs passes dx-runner preflight"),
        ("rounds_completed", len(rounds), params.rounds, len(rounds) == params.rounds and not interrupted,
         "every planned round ran to the end (not interrupted)"),
        ("consecutive_clean_rounds", best, params.rounds, best >= params.rounds,
         "consecutive rounds with a 100% pass rate"),
        ("failed_jobs", sum(not o.final.success for o in jobs), 0, all(o.final.success for o in jobs) and bool(jobs),
         "no job failed on any provider"),
        ("model_policy_violations", violations, 0, violations == 0,
         "selected models are canonical; no zai-coding-plan or alias_for fallback"),
    ]  # fmt: skip
    return {
        "passed": all(r[3] for r in rules),
        "rules": [{"rule": n, "observed": o, "expected": e, "passed": ok, "explanation": x} for n, o, e, ok, x in rules],
    }


def environment(runner: DxRunner, params: MultiProviderParams, models: dict[str, str]) -> dict[str, Any]:
    """What the run ran on: host, Python, soaklib version, runner, canonical models."""
    from soaklib import __version__

    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "soaklib": __version__,
        "runner": " ".join(runner.argv_prefix),
        "simulator": params.dry_run,
        "scenario": params.scenario if params.dry_run else None,
        "outcome_dir": str(runner.outcome_dir),
        "canonical_models": models,
    }

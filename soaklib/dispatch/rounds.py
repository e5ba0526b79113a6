"""Multi-provider validation: preflight → deterministic plan → bounded parallel rounds → evidence.

``run_lane(params)`` returns a ``LaneResult`` whose ``evidence`` is the seed-compatible run
dict (every key of the established JSON plus percentiles, retries, provenance, preflight,
parameters, environment, gate and criteria; built by ``soaklib.dispatch.evidence``);
``soaklib.report.multi_provider`` writes it as JSON + Markdown.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from soaklib.artifacts import LaneEvidence
from soaklib.dispatch.console import clean_text, job_line, rate_text, round_line
from soaklib.dispatch.dx_runner import SIMULATOR_ARGV, DxRunner, PreflightResult, find_runner
from soaklib.dispatch.evidence import (  # noqa: F401 - re-exported for callers of the old home
    JOB_COLUMNS,
    SCHEMA_VERSION,
    RoundResult,
    build_evidence,
    environment,
    jobs_frame,
    round_dict,
    runner_provenance,
)
from soaklib.dispatch.job import Attempt, JobOutcome, JobRunner, JobSpec
from soaklib.errors import EXIT_FAIL, EXIT_INTERRUPTED, EXIT_OK, EXIT_PREFLIGHT, ParameterError
from soaklib.params import MultiProviderParams, canonical_models
from soaklib.sim.dx_runner.scenarios import SCENARIOS
from soaklib.store import atomic_write_text, check_run_id, run_dir_for, utc_now, utc_stamp, write_table

PROMPTS: dict[str, tuple[str, str]] = {
    "echo_ok": ("Reply with exactly the word OK and nothing else. (prompt_id: echo_ok)", "OK"),
    "echo_ready": ("Reply with exactly the word READY and nothing else. (prompt_id: echo_ready)", "READY"),
}
Echo = Callable[[str], None]


@dataclass
class LaneResult:
    run_id: str
    params: MultiProviderParams
    run_dir: Path
    evidence: LaneEvidence
    jobs: pd.DataFrame
    exit_code: int
    rounds: list[RoundResult] = field(default_factory=list)


def check_scenario(scenario: str) -> str:
    """The scenario, or a ``ParameterError`` (exit 2) naming the simulator's scenarios."""
    if scenario not in SCENARIOS:
        raise ParameterError(
            f"unknown scenario {scenario!r}: the simulator's scenarios are {', '.join(SCENARIOS)}",
            key="scenario",
            value=scenario,
        )
    return scenario


def plan_round(run_id: str, round_num: int, params: MultiProviderParams, worktree: Path, models: dict[str, str]) -> list[JobSpec]:
    """The deterministic jobs of one round, providers interleaved so each is exercised early.

    ``beads_id = {run_id}-r{round}-{provider}-{i}`` and ``job_index`` ``i`` count from 0, as the
    seed's runner does; prompts alternate ``echo_ok`` (even ``i``) and ``echo_ready`` (odd ``i``).
    """
    jobs = []
    for i in range(params.jobs_per_provider):
        for p in params.providers:
            prompt_id = "echo_ok" if i % 2 == 0 else "echo_ready"
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
    """Run the validation; a Ctrl-C stops running jobs and returns a partial, interrupted result.

    An unknown ``scenario`` is a ``ParameterError`` (exit 2) before anything runs."""
    params.validate()
    check_scenario(params.scenario)
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
    provenance = runner_provenance(runner, params)
    say(f"Runner: {provenance['description']}")

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
                if cancel.is_set() or not rr.completed:
                    interrupted = True
                    break
    except KeyboardInterrupt:
        interrupted = True
        cancel.set()
    evidence = build_evidence(
        run_id, params, runner, models, preflight, rounds, started_at, time.monotonic() - t0, interrupted, provenance
    )
    jobs = jobs_frame(run_id, rounds)
    _add_worker_hosts(evidence, jobs, rounds)
    write_table(run_dir / "jobs.parquet", jobs)
    code = (EXIT_PREFLIGHT if evidence.preflight["failed_providers"] else EXIT_INTERRUPTED if interrupted
            else EXIT_OK if evidence.passed else EXIT_FAIL)
    evidence = replace(evidence, exit_code=code)
    say("\n=== Validation Complete ===")
    say(f"Status: {'PASSED' if evidence['passed'] else 'INTERRUPTED' if interrupted else 'FAILED'}")
    say(f"All Clean: {clean_text(evidence)}")
    say(f"Total: {evidence['total_passed']}/{evidence['total_jobs']} passed "
        f"(pass rate {rate_text(evidence['total_passed'], evidence['total_jobs'])})")
    say(f"Rounds completed: {sum(rr.completed for rr in rounds)}/{params.rounds}")
    say(f"Duration: {evidence['duration_sec']:.1f}s")
    say(f"Runner: {provenance['description']}")
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
    cut = False
    futures: dict[Future[JobOutcome], JobSpec] = {}
    try:
        try:
            # an executor of jobs (a cluster's) takes the job itself; a plain pool runs it here
            submit_job = getattr(pool, "submit_job", None)
            for spec in specs:
                prompt_file = atomic_write_text(prompt_dir / f"{spec.beads_id}.txt", spec.prompt + "\n")
                fut = submit_job(spec, prompt_file) if submit_job else pool.submit(jobs_runner.run, spec, prompt_file)
                futures[fut] = spec
            for fut in as_completed(futures):
                outcomes[futures[fut].beads_id] = fut.result()
                if bar is not None:
                    bar.update(1)
        except KeyboardInterrupt:
            cut = True
            jobs_runner.runner.cancel.set()
            if hasattr(pool, "interrupt"):
                pool.interrupt()
            for fut, spec in futures.items():  # each job stops itself when it sees the cancel
                outcomes[spec.beads_id] = fut.result()
    finally:
        pool.shutdown(wait=True)
        if bar is not None:
            bar.close()
    for spec in specs:  # never submitted: cut before it started
        if spec.beads_id not in outcomes:
            now = utc_now()
            outcomes[spec.beads_id] = JobOutcome(spec, [Attempt(
                0, status="interrupted", reason_code="interrupted", detail="interrupted before start",
                started_at=now, completed_at=now)])  # fmt: skip
    ordered = [outcomes[s.beads_id] for s in sorted(specs, key=lambda s: (params.providers.index(s.provider), s.job_index))]
    cut = cut or any(o.final.status == "interrupted" for o in ordered)
    return RoundResult(r, ordered, started_at, utc_now(), time.monotonic() - t0, completed=not cut)


def _add_worker_hosts(evidence: LaneEvidence, jobs: pd.DataFrame, rounds: list[RoundResult]) -> None:
    """Jobs that ran on a cluster's worker say which (``worker_host``, in the JSON and in
    ``jobs.parquet``); a local run's artifacts are left exactly as they are."""
    hosts = {o.spec.beads_id: getattr(o, "worker_host", None) for rr in rounds for o in rr.outcomes}
    if not any(hosts.values()):
        return
    for j in evidence.jobs():
        j["worker_host"] = hosts.get(j["job_spec"]["beads_id"])
    jobs["worker_host"] = jobs["beads_id"].map(hosts)


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="job", leave=False, file=sys.stderr)


def _print_round(say: Echo, rr: RoundResult) -> None:
    r = round_dict(rr)
    say(round_line(r))
    for j in r["jobs"]:
        say(job_line(j))

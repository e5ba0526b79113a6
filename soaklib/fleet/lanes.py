"""A lane's jobs on a Dask cluster: each job's start → wait → report runs on a worker.

:class:`DaskJobExecutor` is what ``run_lane`` submits a round's jobs to when the executor is
``dask://HOST:PORT``. Per job, a thread of this process (the client) takes a lease of the
job's provider from a distributed semaphore (``soaklib-cap-{provider}``, as many leases as
the provider's cap: the caps hold across the cluster, and across lanes sharing it), picks the
live worker with the fewest of this lane's jobs, and submits the job pinned there. On the
worker the job runs through the worker's own dx-runner (``JobRunner``: the same client, the
same retries, timeouts and classification as a local run), and comes back with the worker's
name (``worker_host``). A worker lost mid-job is noticed by the client within a poll: the
lost attempt is recorded as ``executor_exception`` with the reason, and the job gets a fresh
attempt on another worker while ``--max-retries`` allows, else it is recorded failed. Every
wait has a deadline (the job's timeout plus a margin), so a round always completes.
"""
from __future__ import annotations

import dataclasses
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from soaklib.dispatch.job import Attempt, JobOutcome, JobRunner, JobSpec
from soaklib.errors import ParameterError
from soaklib.fleet.cluster import ExecutorSpec, WorkerInfo, connect, submit_pinned
from soaklib.fleet.cluster import workers as list_workers
from soaklib.params import MultiProviderParams, canonical_models
from soaklib.store import atomic_write_text, utc_now

#: the runner's own per-provider caps (dx-runner v2 defaults), held across the cluster
DEFAULT_CAPS = {"opencode": 2, "cc-glm": 2, "gemini": 1}
#: "cluster": a distributed semaphore per provider, shared by every lane on the scheduler;
#: "lane": this client's own semaphores (the lane's jobs all pass through it: no round trip)
CAPS_SCOPES = ("cluster", "lane")
ALIVE_EVERY_S = 1.0  # how often a waiting job asks whether its worker is still there
PICK_GRACE_S = 5.0  # how long a job waits for a worker when the cluster has none
DEADLINE_MARGIN_S = 60.0  # beyond the job's timeout: start (preflight), report, the transfer


@dataclass
class RemoteJobOutcome(JobOutcome):
    """A job's outcome with the worker it ran on (its host, as the worker is named)."""

    worker_host: str | None = None


@dataclass(frozen=True)
class LaneConfig:
    """What a worker needs to run the lane's jobs (it travels with each job)."""

    params: MultiProviderParams
    run_id: str
    models: dict[str, str]
    stop_name: str


_RUNNERS: dict[str, tuple[JobRunner, threading.Event]] = {}
_RUNNERS_LOCK = threading.Lock()


def _worker_runner(cfg: LaneConfig) -> JobRunner:
    """One ``JobRunner`` per lane in each worker process (the runner's state folder is shared by
    the lane's jobs on that machine), with a thread that sets its cancel on the lane's stop."""
    from soaklib.dispatch.rounds import make_runner

    with _RUNNERS_LOCK:
        if cfg.run_id not in _RUNNERS:
            cancel = threading.Event()
            p = cfg.params
            runner = make_runner(p, cfg.run_id, cancel)
            jr = JobRunner(runner, timeout_s=p.timeout_sec, canonical_models=cfg.models,
                           no_op_is_success=p.no_op_is_success, max_retries=p.max_retries,
                           max_concurrent_starts=p.max_concurrent_starts)
            _RUNNERS[cfg.run_id] = (jr, cancel)
            threading.Thread(target=_watch_stop, args=(cfg.stop_name, cancel), daemon=True).start()
        return _RUNNERS[cfg.run_id][0]


class _LocalLeases:
    """A provider's cap held by this client alone (``acquire(timeout="1s")`` as a distributed
    semaphore's)."""

    def __init__(self, n: int) -> None:
        self._sem = threading.BoundedSemaphore(n)

    def acquire(self, timeout: str = "1s") -> bool:
        return self._sem.acquire(timeout=float(timeout.removesuffix("s")))

    def release(self) -> None:
        self._sem.release()


def _watch_stop(name: str, cancel: threading.Event) -> None:
    from distributed import Event

    try:
        Event(name).wait()  # set by the client on Ctrl-C
        cancel.set()
    except Exception:
        pass


def run_job_on_worker(cfg: LaneConfig, spec: JobSpec, max_retries: int) -> RemoteJobOutcome:
    """Run one job here (a Dask worker): prompt and worktree on this machine, then the job."""
    from distributed import get_worker

    from soaklib.dispatch.rounds import ensure_worktree

    jr = _worker_runner(cfg)
    worktree = ensure_worktree(cfg.run_id, cfg.params.worktree)
    spec = dataclasses.replace(spec, worktree=str(worktree))
    folder = Path(tempfile.gettempdir()) / "soaklib-lane" / cfg.run_id / "prompts"
    prompt = atomic_write_text(folder / f"{spec.beads_id}.txt", spec.prompt + "\n")
    runner = JobRunner(jr.runner, timeout_s=jr.timeout_s, canonical_models=jr.canonical_models,
                       no_op_is_success=jr.no_op_is_success, max_retries=max_retries)
    runner._start_slots = jr._start_slots  # the worker's start calls share one bound
    outcome = runner.run(spec, prompt)
    return RemoteJobOutcome(outcome.spec, outcome.attempts, worker_host=str(get_worker().name))


class DaskJobExecutor(Executor):
    """Submits a round's jobs to the cluster (see the module docstring); ``submit_job`` returns a
    ``concurrent.futures.Future`` of the job's outcome, as a local pool's would (``submit``
    runs any other callable in this process's pool)."""

    def __init__(self, client: Any, params: MultiProviderParams, run_id: str, parallel: int,
                 caps: dict[str, int] | None = None, caps_scope: str = "cluster") -> None:
        from distributed import Event, Semaphore

        self.client, self.params, self.run_id = client, params, run_id
        self.cfg = LaneConfig(params, run_id, canonical_models(), f"soaklib-lane-stop-{run_id}")
        self.stop = Event(self.cfg.stop_name, client=client)
        self.caps = {p: (caps or DEFAULT_CAPS).get(p, parallel) for p in params.providers}
        if caps_scope not in CAPS_SCOPES:
            raise ParameterError(f"caps_scope = {caps_scope!r}: expected one of {', '.join(CAPS_SCOPES)}",
                                 key="caps_scope", value=caps_scope)
        self.sems: dict[str, Any] = {
            p: Semaphore(max_leases=n, name=f"soaklib-cap-{p}", scheduler_rpc=client.scheduler, loop=client.loop)
            if caps_scope == "cluster" else _LocalLeases(n) for p, n in self.caps.items()}
        self.pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="lane-dask")
        self.load: dict[str, int] = {}
        self.lock = threading.Lock()
        self.cancel = threading.Event()
        self.remote: Callable[..., RemoteJobOutcome] = run_job_on_worker  # what runs on the worker
        self._alive: tuple[float, dict[str, WorkerInfo]] = (-1e9, {})

    def submit_job(self, spec: JobSpec, prompt_file: Path) -> Future[JobOutcome]:
        return self.pool.submit(self._drive, spec)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self.pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=cancel_futures)

    def interrupt(self) -> None:
        """Ctrl-C: the workers' runners stop their jobs; the drivers stop waiting for leases."""
        self.cancel.set()
        try:
            self.stop.set()
        except Exception:
            pass

    # ------------------------------------------------------------------ one job

    def alive(self, fresh: bool = False) -> dict[str, WorkerInfo]:
        """The cluster's workers by address, asked of the scheduler at most every ALIVE_EVERY_S / 2."""
        with self.lock:
            at, known = self._alive
            if not fresh and time.monotonic() - at < ALIVE_EVERY_S / 2:
                return known
        known = {w.address: w for w in list_workers(self.client).values()}
        with self.lock:
            self._alive = (time.monotonic(), known)
        return known

    def _pick(self) -> WorkerInfo | None:
        alive = self.alive()
        for _ in range(int(PICK_GRACE_S / ALIVE_EVERY_S)):  # none now: one may be (re)starting
            if alive or self.cancel.is_set():
                break
            time.sleep(ALIVE_EVERY_S)
            alive = self.alive(fresh=True)
        if not alive:
            return None
        with self.lock:
            w = min(alive.values(), key=lambda w: (self.load.get(w.address, 0), w.name))
            self.load[w.address] = self.load.get(w.address, 0) + 1
        return w

    def _lost(self, spec: JobSpec, n: int, why: str) -> Attempt:
        now = utc_now()
        return Attempt(n, status="executor_exception", reason_code="executor_exception", detail=why,
                       started_at=now, completed_at=now)

    def _drive(self, spec: JobSpec) -> JobOutcome:
        sem = self.sems[spec.provider]
        while not sem.acquire(timeout="1s"):
            if self.cancel.is_set():
                return JobOutcome(spec, [Attempt(0, status="interrupted", reason_code="interrupted",
                                                 detail="interrupted before start", started_at=utc_now(),
                                                 completed_at=utc_now())])
        try:
            return self._run(spec)
        finally:
            sem.release()

    def _run(self, spec: JobSpec) -> JobOutcome:
        attempts: list[Attempt] = []
        host = None
        budget = self.params.max_retries
        while True:
            w = self._pick()
            if w is None:
                attempts.append(self._lost(spec, len(attempts), "no Dask worker left in the cluster"))
                break
            key = f"lane-{spec.beads_id}-a{len(attempts)}"
            fut = submit_pinned(self.client, w, self.remote, self.cfg, spec, budget - len(attempts), key=key)
            try:
                got, why = self._wait(fut, w)
            finally:
                with self.lock:
                    self.load[w.address] -= 1
            if got is not None:
                base = len(attempts)
                for i, a in enumerate(got.attempts):
                    a.attempt = base + i
                attempts += got.attempts
                host = got.worker_host
                break
            attempts.append(self._lost(spec, len(attempts), why))
            if len(attempts) > budget or self.cancel.is_set():
                break
        return RemoteJobOutcome(spec, attempts, worker_host=host)

    def _wait(self, fut: Any, w: WorkerInfo) -> tuple[RemoteJobOutcome | None, str]:
        limit_s = self.params.timeout_sec + self.params.start_timeout_s + DEADLINE_MARGIN_S
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            try:
                return fut.result(timeout=ALIVE_EVERY_S), ""
            except TimeoutError:
                if fut.status != "error":
                    if w.address not in self.alive():
                        fut.cancel()
                        return None, f"Dask worker {w.name} ({w.address}) was lost mid-job"
                    continue
                err = fut.exception(timeout=5)
                return None, f"executor_exception on worker {w.name}: {type(err).__name__}: {err}"[:500]
            except Exception as e:  # the worker's crash is this attempt's failure
                return None, f"executor_exception on worker {w.name}: {type(e).__name__}: {e}"[:500]
        fut.cancel()
        return None, f"no result from worker {w.name} within {limit_s:.0f} s"


def dask_lane(spec: ExecutorSpec, params: MultiProviderParams, run_id: str,
              caps: dict[str, int] | None = None) -> tuple[Callable[[int], DaskJobExecutor], Callable[[], None]]:
    """An ``executor_factory`` for ``run_lane`` on the cluster at ``spec``, and its closer."""
    client = connect(spec)
    made: list[DaskJobExecutor] = []

    def factory(parallel: int) -> DaskJobExecutor:
        ex = DaskJobExecutor(client, params, run_id, parallel, caps)
        made.append(ex)
        return ex

    def close() -> None:
        client.close(timeout=10)

    return factory, close


def run_lane_on(executor: str, params: MultiProviderParams, **kwargs: Any) -> Any:
    """``run_lane(params)`` with its jobs on ``executor`` (``local``: this machine, as before;
    ``dask://HOST:PORT``: the cluster's workers); returns the ``LaneResult``."""
    from soaklib.dispatch.rounds import run_lane
    from soaklib.fleet.cluster import parse_executor
    from soaklib.store import check_run_id, utc_stamp

    spec = parse_executor(executor)
    if spec.kind != "dask":
        return run_lane(params, **kwargs)
    params.validate()
    run_id = check_run_id(params.run_id or f"soak-{utc_stamp()}")
    params = dataclasses.replace(params, run_id=run_id)
    if params.dry_run and not params.outcome_dir:  # one simulator state folder for the run's jobs
        import shutil

        state = f"/tmp/dx-runner-sim/{run_id}"
        shutil.rmtree(state, ignore_errors=True)
        params = dataclasses.replace(params, outcome_dir=state)
    factory, close = dask_lane(spec, params, run_id)
    try:
        return run_lane(params, executor_factory=factory, **kwargs)
    finally:
        close()

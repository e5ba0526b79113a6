"""Beyond one machine: the fleet analysis at 100 and 1,000 hosts, and a lane's jobs on Dask.

1. **Fleet analysis.** A fleet run of H hosts × 24 h of samples at 1/30 Hz (2,880 samples a
   host, the full soak sample schema, one compacted part per host in ``samples/host=NAME/``,
   as finished soaks leave them), 1% of the hosts with a planted memory leak (40 MB/h) and one
   with an FD leak. Timed: ``fleet_verdict`` (DuckDB: per-host time-binned medians in SQL;
   the Theil–Sen / Kendall fits of each host's <= 500 bins; the growth rows), split into the
   DuckDB part and the fits, then the signoff with the leak-curves figure. Median of 3.
   Also: were exactly the planted hosts named as outliers.
2. **A lane's jobs on Dask against local threads.** N jobs (default 10,000) of a simulated
   job that does no work (so what is measured is the executor's own cost), through the local
   path (a thread pool, as ``run_lane`` runs jobs) and through ``DaskJobExecutor`` (provider
   caps as distributed semaphores, pinned submissions, results back) on a ``dask scheduler``
   and 2 ``dask worker`` processes on loopback. Harness CPU per job: this process (the client)
   plus, for Dask, the scheduler's and the workers' CPU, all divided by N; wall time of the lane.

    .venv/bin/python bench/fleet_scale.py [--quick] [--hosts 100,1000] [--jobs 10000] [--parallel 64]
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import ROOT, Report, Stat, num, parser, ratio, table

sys.path.insert(0, str(ROOT))
import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from soaklib.dispatch.job import Attempt, JobSpec
from soaklib.fleet.cluster import connect, parse_executor
from soaklib.fleet.lanes import DaskJobExecutor, RemoteJobOutcome
from soaklib.fleet.report import write_fleet_signoff
from soaklib.fleet.verdict import fleet_verdict
from soaklib.params import MultiProviderParams
from soaklib.soak.sampling import sample_schema
from soaklib.store import start_manifest, utc_now

MIB = 2**20
STEP_S, HOURS = 30.0, 24.0
LEAK_MB_PER_H = 40.0


def write_fleet(run_dir: Path, hosts: int, step_s: float = STEP_S, hours: float = HOURS) -> tuple[int, set[str], set[str]]:
    """The fleet run on disk; returns (samples, memory-leak hosts, FD-leak hosts)."""
    schema = sample_schema()
    t = np.arange(0.0, hours * 3600.0, step_s)
    n = t.size
    leaky = {f"host-{i:04d}" for i in range(0, hosts, 100)}  # 1%
    fd_leak = {f"host-{hosts // 2 + 1:04d}"}
    rng = np.random.default_rng(7)
    start_manifest(run_dir, run_dir.name, "fleet-a", soak="a", hosts=[f"host-{i:04d}" for i in range(hosts)],
                   parameters={"warmup_s": 600.0})
    base_ts = np.datetime64("2026-12-01T00:00:00", "us")
    for i in range(hosts):
        host = f"host-{i:04d}"
        slope = LEAK_MB_PER_H if host in leaky else 0.0
        rss = (300 + rng.normal(0, 5)) * MIB + slope * MIB * t / 3600.0 + rng.normal(0, 0.5 * MIB, n)
        fds = 40 + (t / 3600.0 * 30).astype(int) if host in fd_leak else 40 + rng.integers(0, 3, n)
        cols = {"run_id": pa.array([run_dir.name] * n), "host": pa.array([host] * n),
                "ts": pa.array(base_ts + (t * 1e6).astype("timedelta64[us]"), pa.timestamp("us", tz="UTC")),
                "t_s": pa.array(t), "alive": pa.array(np.ones(n, bool)),
                "rss_bytes": pa.array(rss.astype(np.int64)), "tree_rss_bytes": pa.array((rss * 1.1).astype(np.int64)),
                "num_fds": pa.array(fds.astype(np.int64)), "tree_num_fds": pa.array(fds.astype(np.int64) + 3)}
        arrays = [cols[f.name].cast(f.type) if f.name in cols else pa.nulls(n, f.type) for f in schema]
        folder = run_dir / "samples" / f"host={host}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_arrays(arrays, schema=schema), folder / "part-00000-00047.parquet")
    return hosts * n, leaky, fd_leak


def fleet_section(rep: Report, host_counts: list[int], repeats: int, hours: float) -> None:
    rows, found_rows = [], []
    for hosts in host_counts:
        folder = Path(tempfile.mkdtemp(prefix="soak-bench-fleet-"))
        try:
            run_dir = folder / f"fleet-{hosts}"
            t0 = time.perf_counter()
            samples, leaky, fd_leak = write_fleet(run_dir, hosts, hours=hours)
            write_s = time.perf_counter() - t0
            disk_mb = sum(p.stat().st_size for p in (run_dir / "samples").rglob("*.parquet")) / MIB
            duck, fits, total, report = Stat(), Stat(), Stat(), Stat()
            fv = None
            for _ in range(repeats):
                fv = fleet_verdict(run_dir, signoffs=False)
                duck.values.append(fv.timing_s["duckdb_s"])
                fits.values.append(fv.timing_s["fits_s"] + fv.timing_s["signoffs_s"])
                t1 = time.perf_counter()
                write_fleet_signoff(fv)
                report.values.append(time.perf_counter() - t1)
                total.values.append(fv.timing_s["total_s"] + report.values[-1])
            assert fv is not None
            mem = {o.host for o in fv.outliers if o.metric == "memory_slope_mb_per_h"}
            fds = {o.host for o in fv.outliers if o.metric == "fd_slope_per_h"}
            rows.append([f"{hosts:,}", f"{samples:,}", num(disk_mb), num(write_s), duck.fmt(2), fits.fmt(2),
                         report.fmt(2), total.fmt(2), num(fv.bin_s, 0)])
            found_rows.append([f"{hosts:,}", f"{len(mem & leaky)}/{len(leaky)}", str(len(mem - leaky)),
                               f"{len(fds & fd_leak)}/{len(fd_leak)}", str(len(fds - fd_leak)),
                               str(sum(h.verdict != 'PASS' for h in fv.hosts))])
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    rep.add(table(["hosts", "samples", "parquet MB", "write s", "DuckDB s", "fits s", "signoff+figure s",
                   "fleet analysis total s", "bin s"], rows))
    rep.add(table(["hosts", "memory leaks named", "others named (memory)", "FD leak named", "others named (FD)",
                   "hosts FAIL"], found_rows))
    rep.add(f"{hours:g} h per host at 1/{STEP_S:g} Hz, the full sample schema ({len(sample_schema())} columns, "
            "most null), one part per host. DuckDB s: the per-host binned medians of tree RSS and FDs in one "
            "SQL query over every host's file (only those columns are read); fits s: memory_growth and "
            "fd_stability on each host's <= 500 bins plus the growth criteria rows; the figure overlays every "
            "host's leak curve. Median (min–max) of the repeats.")


# --------------------------------------------------------------------------- lanes


def noop_job(cfg: object, spec: JobSpec, max_retries: int) -> RemoteJobOutcome:
    """A simulated job that does no work (the executor's own cost is what is measured)."""
    now = utc_now()
    a = Attempt(0, status="exited_ok", reason_code=None, success=True, completion=True, started_at=now,
                completed_at=now, latency_ms=0.0)
    return RemoteJobOutcome(spec, [a], worker_host="w")


def specs(n: int, providers: list[str]) -> list[JobSpec]:
    return [JobSpec(f"bench-r1-{providers[i % 3]}-{i // 3}", providers[i % 3], "echo_ok", "p", "OK", "m", "/tmp",
                    1, i // 3) for i in range(n)]


def _cpu_of(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        for q in [p, *p.children(recursive=True)]:
            try:
                c = q.cpu_times()
                total += c.user + c.system
            except psutil.Error:
                pass
    return total


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def lane_section(rep: Report, n_jobs: int, parallel: int) -> None:
    params = MultiProviderParams(dry_run=True, parallel=parallel)
    jobs = specs(n_jobs, list(params.providers))
    rows = []
    # local: the thread pool run_lane uses, the same job function in this process
    c0, t0 = _self_cpu(), time.perf_counter()
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        done = list(pool.map(lambda s: noop_job(None, s, 0), jobs))
    local_wall, local_cpu = time.perf_counter() - t0, _self_cpu() - c0
    rows.append(["local (threads)", f"{len(done):,}", num(local_wall, 2), "–", num(local_cpu / n_jobs * 1e3, 2),
                 "–", "–", num(local_cpu / n_jobs * 1e3, 2), "–", "–"])
    folder = Path(tempfile.mkdtemp(prefix="soak-bench-dask-"))
    procs: list[subprocess.Popen[bytes]] = []
    dask = str(Path(sys.executable).with_name("dask"))
    try:
        sched_file = folder / "scheduler.json"
        procs.append(subprocess.Popen([dask, "scheduler", "--scheduler-file", str(sched_file), "--host", "127.0.0.1",
                                       "--port", "0", "--no-dashboard"], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True))
        while not (sched_file.exists() and sched_file.stat().st_size):
            time.sleep(0.05)
        for name in ("w1", "w2"):
            procs.append(subprocess.Popen([dask, "worker", "--scheduler-file", str(sched_file), "--name", name,
                                           "--nthreads", str(max(4, parallel // 2)), "--no-dashboard", "--no-nanny"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        address = json.loads(sched_file.read_text())["address"]
        client = connect(parse_executor("dask://" + address.removeprefix("tcp://")))
        while len(client.scheduler_info(n_workers=-1)["workers"]) < 2:
            time.sleep(0.1)
        ps = [psutil.Process(p.pid) for p in procs]
        for scope in ("lane", "cluster"):
            ex = DaskJobExecutor(client, params, f"bench-{scope}-{os.getpid()}", parallel, caps_scope=scope)
            ex.remote = noop_job
            ex.submit_job(jobs[0], Path("/dev/null")).result()  # warm: the function and the semaphores exist
            c0, o0, s0, t0 = _self_cpu(), _cpu_of(ps), _cpu_of(ps[:1]), time.perf_counter()
            futs = [ex.submit_job(s, Path("/dev/null")) for s in jobs]
            got = [f.result() for f in futs]
            wall, client_cpu, other_cpu = time.perf_counter() - t0, _self_cpu() - c0, _cpu_of(ps) - o0
            sched_cpu = _cpu_of(ps[:1]) - s0
            ex.shutdown()
            ok = sum(o.final.success for o in got)
            total = client_cpu + other_cpu
            per = lambda x: num(x / n_jobs * 1e3, 2)  # noqa: E731
            rows.append([f"Dask, caps held by the {scope}", f"{ok:,}", num(wall, 2), ratio(wall, local_wall),
                         per(client_cpu), per(sched_cpu), per(other_cpu - sched_cpu), per(total),
                         per(client_cpu - local_cpu), per(total - local_cpu)])
        client.close()
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            p.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)
    rep.add(table(["executor", "jobs done", "lane wall s", "wall ÷ local", "client CPU ms/job",
                   "scheduler CPU ms/job", "workers CPU ms/job", "harness CPU ms/job (all)",
                   "added by Dask: client ms/job", "added by Dask: all ms/job"], rows))
    rep.add(f"{n_jobs:,} simulated jobs that do no work, --parallel {parallel}, three providers interleaved. "
            "Dask (a scheduler and 2 workers): each job takes a lease of its provider's cap (opencode 2, cc-glm 2, "
            "gemini 1) from the lane's own semaphores (`lane`) or from a distributed semaphore on the "
            "scheduler (`cluster`: shared by every lane on it), is submitted pinned to the least-loaded worker and its outcome comes back; CPU of the scheduler and "
            "worker processes from psutil. A real job spends seconds to minutes in its provider and 5–10 ms of "
            "harness CPU in the dx-runner client (see 'Dispatch at scale'); the Dask path moves that client's "
            "polling to the worker and adds the figures in the last two columns.")


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--hosts", default="100,1000", help="fleet sizes, comma-separated")
    p.add_argument("--jobs", type=int, default=10000)
    p.add_argument("--parallel", type=int, default=64)
    args = p.parse_args()
    rep = Report("Beyond one machine: fleet analysis and a lane on Dask", args.quick)
    hosts = [10] if args.quick else [int(x) for x in args.hosts.split(",")]
    fleet_section(rep, hosts, 1 if args.quick else 3, 2.0 if args.quick else HOURS)
    lane_section(rep, 300 if args.quick else args.jobs, 16 if args.quick else args.parallel)
    rep.write(args.markdown)


if __name__ == "__main__":
    main()

"""Analysis of a multi-day soak: 10 k, 100 k, 1 M and 5 M samples (a sample a second).

A synthetic soak A run folder per size (the sampler's schema, a planted memory leak, an LLM
outage, manifest, observations and events as a soak writes them) is analysed twice, each in
a fresh process so that time and peak memory (``ru_maxrss`` from ``wait4``, the process
and its children) belong to that run alone:

- library call: ``load_run`` → ``build_signoff`` (leak verdict, criteria) → ``soak_figures``
  saved as PNG → signoff JSON + Markdown; the same steps as ``write_signoff``, timed apart;
- the watcher_soak notebook under papermill with ``-p run_dir``: kernel start, the same
  calls, figures rendered inline, the signoff exported.

Samples are written one part file per day of samples (86,400 rows); a soak flushing every
60 s writes 1,440 parts a day instead, whose cost ``bench/store_throughput.py`` measures.

    .venv/bin/python bench/analysis_scale.py [--quick] [--sizes 10000,100000] [--no-notebook]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from _common import ROOT, Report, num, parser, table

sys.path.insert(0, str(ROOT))
import numpy as np
import pyarrow as pa

MIB = 2**20
LEAK_MB_PER_H = 0.5  # planted in tree RSS and RSS
DAY_S = 86_400
NOTEBOOK = ROOT / "notebooks" / "watcher_soak.ipynb"


# --------------------------------------------------------------------------- synthetic run


def synthetic_samples(first: int, n: int, run_id: str, rng: np.random.Generator) -> pa.Table:
    """``n`` one-second samples from second ``first``, in the sampler's schema (a planted leak)."""
    from soaklib.soak.sampling import sample_schema

    t = np.arange(first, first + n, dtype=np.float64)
    start_us = int(datetime(2026, 3, 1, tzinfo=timezone.utc).timestamp() * 1e6)
    gc_saw = (t % 600.0) / 600.0 * 3 * MIB  # allocation sawtooth, freed every 10 min
    rss = 180 * MIB + LEAK_MB_PER_H * MIB / 3600.0 * t + gc_saw + rng.normal(0, 0.4 * MIB, n)
    outage = (t % (7 * DAY_S) >= 2 * DAY_S) & (t % (7 * DAY_S) < 2 * DAY_S + 300)  # 5 min a week
    fds = 40 + rng.integers(0, 3, n)
    archived = (t // 3600).astype(np.int64)
    cols = {
        "run_id": pa.array([run_id] * n, pa.string()), "host": pa.array(["bench-host"] * n, pa.string()),
        "ts": pa.array(start_us + (t * 1e6).astype(np.int64), pa.timestamp("us", tz="UTC")), "t_s": t,
        "alive": np.ones(n, bool), "rss_bytes": rss.astype(np.int64),
        "vms_bytes": (rss * 3).astype(np.int64), "uss_bytes": None, "threads": 12 + (rng.random(n) < 0.01),
        "num_fds": fds, "cpu_pct": rng.gamma(2.0, 1.5, n), "children": np.ones(n, np.int64),
        "tree_rss_bytes": (rss + 40 * MIB).astype(np.int64), "tree_num_fds": fds + 10,
        "tree_cpu_pct": rng.gamma(2.0, 2.0, n), "gpu_available": np.ones(n, bool),
        "gpu_used_bytes": (30 * 2**30 + rng.normal(0, 64 * MIB, n)).astype(np.int64),
        "gpu_total_bytes": np.full(n, 141 * 2**30, np.int64), "gpu_util_pct": rng.uniform(0, 100, n),
        "gpu_target_bytes": np.full(n, 20 * 2**30, np.int64),
        "disk_free_bytes": (500 * 2**30 - 1000 * t).astype(np.int64),
        "watched_bytes": (10 * MIB + 50 * t).astype(np.int64), "requests_pending": np.zeros(n, np.int64),
        "requests_archived": archived, "decision_lines": 2 * archived, "decisions_completed": 2 * archived,
        "dispatch_selfplay": archived, "dispatch_learning": np.zeros(n, np.int64),
        "unknown_type": np.zeros(n, np.int64), "heuristic_fallback": (t // DAY_S).astype(np.int64),
        "heuristic_steps": np.zeros(n, np.int64), "decision_bad_lines": np.zeros(n, np.int64),
        "draws": (5000 + t // 120).astype(np.int64), "policy_candidates": (t // 7200).astype(np.int64),
        "telemetry_models": np.full(n, 3, np.int64), "telemetry_valid": np.ones(n, bool),
        "llm_status": np.where(outage, 0, 200).astype(np.int64),
        "llm_latency_ms": np.where(outage, np.nan, rng.gamma(2.0, 2.5, n)),
        "log_errors": (t // 20_000).astype(np.int64), "log_tracebacks": np.zeros(n, np.int64),
        "harness_rss_bytes": np.full(n, 90 * MIB, np.int64), "harness_cpu_pct": rng.uniform(0, 0.2, n),
        "sample_cost_ms": rng.gamma(2.0, 0.15, n), "bytes_read": rng.integers(0, 2000, n),
    }
    schema = sample_schema()
    arrays = [cols.get(f.name) if isinstance(cols.get(f.name), pa.Array) else pa.array(cols.get(f.name), f.type)
              if cols.get(f.name) is not None else pa.nulls(n, f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def make_run(folder: Path, n: int) -> Path:
    """A complete soak A run of ``n`` one-second samples under ``folder``; returns the run folder."""
    from soaklib.store import atomic_write_json, finish_manifest, start_manifest, write_table

    run_id = f"bench-analysis-{n}"
    run_dir = folder / run_id
    params = {"soak": "a", "duration_s": float(n), "sampling": {"interval_s": 1.0, "flush_s": 60.0}}
    start_manifest(run_dir, run_id, "watcher-a", soak="a", parameters=params, environment={"host": "bench-host"})
    rng = np.random.default_rng(n)
    for part, first in enumerate(range(0, n, DAY_S)):
        rows = synthetic_samples(first, min(DAY_S, n - first), run_id, rng)
        write_table(run_dir / "samples" / f"part-{part:05d}.parquet", rows)
    events = [
        {"run_id": run_id, "ts": datetime(2026, 3, 1, tzinfo=timezone.utc), "t_s": 0.0, "kind": "soak_started",
         "message": "soak started", "data": "{}"},
        {"run_id": run_id, "ts": datetime(2026, 3, 1, tzinfo=timezone.utc), "t_s": float(n), "kind": "halt_requested",
         "message": "halt requested", "data": json.dumps({"method": "signal"})},
    ]
    write_table(run_dir / "events.parquet", pa.Table.from_pylist(events))
    atomic_write_json(run_dir / "observations.json", {
        "interrupted": False, "error": None, "notes": [], "observations": {}, "target_exit": None,
        "halt": {"method": "signal", "halt_s": 2.1, "forced": False},
    })
    finish_manifest(run_dir, complete=True, interrupted=False, error=None)
    return run_dir


# --------------------------------------------------------------------------- measuring in a child


def child(run_dir: str) -> None:
    """Run in a fresh process: the library steps of ``write_signoff``, each timed; prints JSON."""
    t0 = time.perf_counter()
    from soaklib import load_run
    from soaklib.report.plots import save_figure
    from soaklib.report.signoff import build_signoff, soak_figures, to_markdown
    from soaklib.store import atomic_write_json, atomic_write_text, signoff_paths

    t1 = time.perf_counter()
    run = load_run(run_dir)
    t2 = time.perf_counter()
    signoff = build_signoff(run)
    t3 = time.perf_counter()
    json_path, md_path = signoff_paths(run.path)
    for name, fig in soak_figures(run, signoff).items():
        png = save_figure(fig, run.path / "figures" / f"{name}.png")
        signoff["figures"][name] = os.path.relpath(png, json_path.parent)
    t4 = time.perf_counter()
    atomic_write_json(json_path, signoff)
    atomic_write_text(md_path, to_markdown(signoff))
    t5 = time.perf_counter()
    mem = (signoff["analysis"].get("tree_rss") or {})
    print(json.dumps({"imports": t1 - t0, "load": t2 - t1, "signoff": t3 - t2, "figures": t4 - t3,
                      "write": t5 - t4, "rows": len(run.samples), "verdict": signoff["verdict"],
                      "slope_mb_per_h": mem.get("slope_mb_per_h"), "n_bins": mem.get("n_bins")}))


def run_measured(argv: list[str], timeout_s: float) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) of the process and its children, and stdout."""
    start = time.monotonic()
    out = tempfile.TemporaryFile()  # noqa: SIM115 (the child writes to it; read and closed below)
    p = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = start + timeout_s
    while True:
        pid, status, usage = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            os.killpg(p.pid, 9)
            _, status, usage = os.wait4(p.pid, 0)
            break
        time.sleep(0.05)
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - start
    out.seek(0)
    text = out.read().decode("utf-8", "replace")
    if p.returncode != 0:
        raise RuntimeError(f"{argv[:3]} exited {p.returncode}:\n{text[-3000:]}")
    return wall, usage.ru_maxrss / 1024.0, text


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", help="comma-separated sample counts (default 10000,100000,1000000,5000000)")
    p.add_argument("--no-notebook", action="store_true", help="skip the papermill runs")
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: analyse this run folder, print JSON
    args = p.parse_args()
    if args.child:
        child(args.child)
        return
    q = args.quick
    sizes = [int(x) for x in (args.sizes or ("3000" if q else "10000,100000,1000000,5000000")).split(",")]
    notebook = not args.no_notebook and not q and NOTEBOOK.exists()
    rep = Report("Analysis of a multi-day soak", q)
    work = Path(tempfile.mkdtemp(prefix="soak-bench-analysis-"))
    rows, nb_rows = [], []
    try:
        for n in sizes:
            t = time.monotonic()
            run_dir = make_run(work, n)
            made_s = time.monotonic() - t
            disk_mb = sum(f.stat().st_size for f in (run_dir / "samples").iterdir()) / MIB
            wall, peak, out = run_measured([sys.executable, __file__, "--child", str(run_dir)], 1800)
            r = json.loads(out.strip().splitlines()[-1])
            rows.append([num(n), f"{n / 86400:.1f}", f"{disk_mb:.1f}", f"{r['load']:.2f}", f"{r['signoff']:.2f}",
                         f"{r['figures']:.2f}", f"{r['write']:.2f}",
                         f"{r['load'] + r['signoff'] + r['figures'] + r['write']:.2f}", f"{wall:.1f}", num(peak, 0),
                         f"{r['slope_mb_per_h']:.3f}" if r["slope_mb_per_h"] is not None else "–", r["n_bins"]])
            print(f"  {n} samples: run made in {made_s:.1f} s, library {wall:.1f} s", flush=True)
            if notebook:
                out_nb = work / f"{run_dir.name}.ipynb"
                nb_wall, nb_peak, _ = run_measured(
                    [sys.executable, "-m", "papermill", "--log-level", "WARNING", "-k", "python3", str(NOTEBOOK),
                     str(out_nb), "-p", "run_dir", str(run_dir), "-p", "fail_on_gate", "False"], 1800)
                nb_rows.append([num(n), f"{nb_wall:.1f}", num(nb_peak, 0), f"{out_nb.stat().st_size / MIB:.1f}"])
                print(f"  {n} samples: notebook {nb_wall:.1f} s", flush=True)
            shutil.rmtree(run_dir, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rep.add(table(["samples", "days at 1 s", "parquet MB", "load s", "signoff s", "figures s", "write s",
                   "library total s", "process wall s", "peak RSS MB", "leak slope MB/h (planted "
                   f"{LEAK_MB_PER_H})", "bins"], rows))
    rep.add("Library: `load_run` → `build_signoff` (analysis, leak verdict, criteria) → `soak_figures` saved as "
            "PNG → JSON + Markdown, in a fresh process; 'process wall' adds interpreter start and imports "
            "(pandas, scipy, matplotlib). Peak RSS of that process.")
    if nb_rows:
        rep.add(table(["samples", "papermill wall s", "peak RSS MB (largest of papermill, kernel)",
                       "executed notebook MB"],
                      nb_rows))
        rep.add("Notebook: `papermill notebooks/watcher_soak.ipynb out.ipynb -p run_dir RUN -p fail_on_gate False`, "
                "kernel start included.")
    elif not q:
        rep.add("Notebook runs skipped (--no-notebook, or notebooks/watcher_soak.ipynb missing).")
    rep.write(args.markdown)


if __name__ == "__main__":
    main()

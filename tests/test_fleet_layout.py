"""The fleet layout on disk (samples/host={host}/, events/host={host}/), the first layout still
read unchanged, SQL over both with DuckDB, and the fleet verdict from known-value hosts."""
from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from soaklib.errors import ParameterError
from soaklib.fleet.query import binned_medians, connect, query
from soaklib.fleet.report import write_fleet_signoff
from soaklib.fleet.soaks import run_fleet
from soaklib.fleet.verdict import fleet_verdict, is_fleet
from soaklib.params import SoakParams, load_params
from soaklib.parts import PartWriter, check_host, host_folder, scan_parts
from soaklib.report.signoff import build_signoff
from soaklib.runs import load_run
from soaklib.soak.context import EVENT_SCHEMA
from soaklib.soak.harness import run_soak
from soaklib.store import start_manifest, write_table
from tests.conftest import PYTHON, REPO
from tests.test_signoff import HALTED, make_run

MIB = 2**20


def write_host(run_dir: Path, host: str, *, hours: float = 2.0, step_s: float = 30.0, rss_mb_per_h: float = 0.0,
               fds_per_h: float = 0.0, seed: int = 0, flush_every: int = 40) -> int:
    """One host's samples in its partition, as a sampler on that host writes them; returns the rows."""
    rng = np.random.default_rng(seed)
    t = np.arange(0.0, hours * 3600.0, step_s)
    writer = PartWriter(host_folder(run_dir / "samples", host))
    for i, ts in enumerate(t):
        rss = 200 * MIB + rss_mb_per_h * MIB * ts / 3600.0 + rng.normal(0, 0.2 * MIB)
        writer.append({"run_id": run_dir.name, "host": host, "t_s": float(ts), "alive": True,
                       "rss_bytes": int(rss), "num_fds": int(20 + fds_per_h * ts / 3600.0)})
        if i % flush_every == flush_every - 1:
            writer.flush()
    writer.flush()
    write_table(host_folder(run_dir / "events", host) / "part-00000.parquet", pa.Table.from_pylist(
        [{"run_id": run_dir.name, "t_s": 0.0, "kind": "target_started", "message": host, "data": "{}"}],
        schema=EVENT_SCHEMA))
    return len(t)


def test_a_run_in_the_first_layout_loads_and_analyses_unchanged(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, rss_mb_per_h=200.0, observations=HALTED)
    assert not (run_dir / "samples" / "host=").exists() and list((run_dir / "samples").glob("part-*.parquet"))
    run = load_run(run_dir)
    assert run.samples.equals(scan_parts(run_dir / "samples").frame) and len(run.events) == 1
    signoff = build_signoff(run)
    assert {r["metric"]: r["status"] for r in signoff["criteria"]}["memory_slope_mb_per_h"] == "FAIL"
    assert not is_fleet(run_dir)
    n = query(run_dir, "SELECT count(*) AS n, count(DISTINCT run_id) AS runs FROM samples")
    assert int(n["n"].iloc[0]) == len(run.samples) and int(n["runs"].iloc[0]) == 1
    assert int(query(run_dir, "SELECT count(*) AS n FROM events")["n"].iloc[0]) == 1


def test_samplers_of_several_hosts_write_one_run_at_once_without_losing_a_part(tmp_path: Path) -> None:
    run_dir = tmp_path / "shared"
    hosts = [f"node-{i}" for i in range(6)]
    counts: dict[str, int] = {}

    def sampler(i: int, h: str) -> None:
        counts[h] = write_host(run_dir, h, hours=1.0, step_s=10.0, seed=i, flush_every=7)

    threads = [threading.Thread(target=sampler, args=(i, h)) for i, h in enumerate(hosts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run = load_run(run_dir)
    assert run.hosts == hosts and len(run.samples) == sum(counts.values()) and not run.bad_parts
    assert len(run.events) == len(hosts) and set(run.events["host"]) == set(hosts)
    with connect(run_dir) as db:
        got = db.sql("SELECT host, count(*) AS n FROM samples GROUP BY host ORDER BY host")
        assert dict(zip(got["host"], got["n"])) == counts
        one = db.sql("EXPLAIN SELECT max(rss_bytes) FROM samples WHERE host = 'node-3'")
        plan = "\n".join(one.iloc[:, 1])
        assert "host='node-3'" in plan.replace(" ", "")  # the host filter is pushed into the scan


def test_the_first_layout_and_host_partitions_read_as_one_table(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, "mixed", seconds=600.0, observations=HALTED)
    write_host(run_dir, "late", hours=0.2)
    run = load_run(run_dir)
    assert set(run.samples["host"].fillna("?")) >= {"late"} and len(run.samples) > 61
    hosts = query(run_dir, "SELECT DISTINCT coalesce(host, '?') AS h FROM samples ORDER BY 1")
    assert "late" in set(hosts["h"])


def test_a_broken_part_is_skipped_and_named(tmp_path: Path) -> None:
    run_dir = tmp_path / "broken"
    write_host(run_dir, "a", hours=0.5)
    write_host(run_dir, "b", hours=0.5)
    (host_folder(run_dir / "samples", "b") / "part-00099.parquet").write_bytes(b"PAR1 not really")
    with connect(run_dir) as db:
        assert db.hosts() == ["a", "b"] and [Path(b.path).name for b in db.bad_parts] == ["part-00099.parquet"]
    assert not load_run(run_dir).complete


def test_host_names_are_plain() -> None:
    assert check_host("gpu-rig-07.lab") == "gpu-rig-07.lab"
    for bad in ("../x", "", "a/b", "-x", "a b"):
        with pytest.raises(ParameterError):
            check_host(bad)


def test_fleet_verdict_names_the_leaking_hosts_and_fails_the_fleet(tmp_path: Path) -> None:
    run_dir = tmp_path / "fleet"
    start_manifest(run_dir, "fleet", "fleet-a", soak="a", hosts=[f"h{i}" for i in range(7)],
                   host_status={"h6": {"status": "FAIL", "reason": "no Dask worker named 'h6'"}})
    for i in range(6):
        write_host(run_dir, f"h{i}", seed=i, rss_mb_per_h=60.0 if i == 2 else 0.0, fds_per_h=40.0 if i == 4 else 0.0)
    with connect(run_dir) as db:
        bins, bin_s = binned_medians(db, ["rss_bytes", "num_fds"], max_bins=100)
    assert bins.groupby("host").size().max() <= 100 and bin_s == pytest.approx((2 * 3600 - 30) / 100)
    fv = fleet_verdict(run_dir)
    assert fv.verdict == "FAIL"
    assert {(o.host, o.metric) for o in fv.outliers} == {("h2", "memory_slope_mb_per_h"), ("h4", "fd_slope_per_h")}
    assert fv.host("h2").memory_slope_mb_per_h == pytest.approx(60.0, rel=0.05)
    rows = {h.host: {r["metric"]: r["status"] for r in h.criteria} for h in fv.hosts}
    assert rows["h2"]["memory_slope_mb_per_h"] == "FAIL" and rows["h4"]["fd_trend"] == "FAIL"
    assert all(fv.host(h).verdict == "PASS" for h in ("h0", "h1", "h3", "h5"))
    assert fv.host("h6").verdict == "FAIL" and "no Dask worker" in (fv.host("h6").reason or "")
    paths = write_fleet_signoff(fv)
    signoff = json.loads(paths["json"].read_text())
    assert signoff["fleet"]["hosts_failed"] == ["h2", "h4", "h6"] and paths["fleet_leak_curves_png"].stat().st_size
    assert {r["host"] for r in signoff["criteria"]} == {f"h{i}" for i in range(7)}
    assert "h2" in paths["md"].read_text()


def test_a_soak_with_host_writes_its_partition_and_names_the_host_in_rows_and_manifest(tmp_path: Path) -> None:
    params = load_params(SoakParams, overrides={
        "run_id": "named", "output_dir": str(tmp_path), "duration_s": 2, "warmup_s": 0.5, "host": "rig-7",
        "sampling": {"interval_s": 0.2, "flush_s": 0.5, "health_interval_s": 0.2, "health_timeout_s": 0.3},
        "sim": {"poll_s": 0.1}})
    result = run_soak(params)
    assert [p.name for p in (result.run_dir / "samples").iterdir()] == ["host=rig-7"]
    assert (result.run_dir / "events" / "host=rig-7" / "part-00000.parquet").is_file()
    run = load_run(result.run_dir)
    assert run.hosts == ["rig-7"] and run.manifest["host"] == "rig-7" and set(run.events["host"]) == {"rig-7"}
    assert not is_fleet(result.run_dir)  # one host: the single-run signoff
    bad = subprocess.run([PYTHON, "-m", "soaklib.cli", "watcher", "a", "--host", "../x", "--output-dir",
                          str(tmp_path)], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert bad.returncode == 2 and "host" in bad.stderr


def test_a_local_fleet_runs_each_hosts_soak_here_into_one_run(tmp_path: Path) -> None:
    base = load_params(SoakParams, overrides={
        "output_dir": str(tmp_path), "duration_s": 3, "warmup_s": 0.5,
        "sampling": {"interval_s": 0.2, "flush_s": 0.5, "health_interval_s": 0.2, "health_timeout_s": 0.3},
        "sim": {"poll_s": 0.1}})
    lines: list[str] = []
    run = run_fleet("a", ["p1", "p2"], base, executor="local", run_id="loc",
                    per_host={"p2": {"sim": {"leak_mb_per_h": 72000.0}}}, echo=lines.append)
    assert [(h.host, h.status) for h in run.hosts] == [("p1", "OK"), ("p2", "OK")]
    assert any(line.startswith("[p2] soak a: run p2") for line in lines), lines  # each host's progress
    assert sorted(p.name for p in (run.run_dir / "hosts").iterdir()) == ["p1", "p2"]
    fv = fleet_verdict(run.run_dir)
    assert fv.verdict == "FAIL" and fv.host("p1").verdict == "PASS" and fv.host("p2").verdict == "FAIL"
    assert {r["metric"]: r["status"] for r in fv.host("p2").criteria}["memory_slope_mb_per_h"] == "FAIL"
    with pytest.raises(ParameterError, match="already exists"):
        run_fleet("a", ["p1"], base, run_id="loc")
    with pytest.raises(ParameterError, match="not in --hosts"):
        run_fleet("a", ["p1"], base, run_id="other", per_host={"p9": {}})

"""Run folders: atomic writes, parquet part files, partial runs loaded back."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from soaklib.errors import ParameterError
from soaklib.parts import PartWriter, read_parts
from soaklib.runs import load_run
from soaklib.store import atomic_write_json, check_run_id, finish_manifest, start_manifest, utc_now


def test_parts_round_trip_with_schema_drift(tmp_path: Path) -> None:
    w = PartWriter(tmp_path / "samples")
    w.extend({"t_s": float(i), "rss_bytes": 100 + i, "gpu_used_bytes": None, "ts": utc_now()} for i in range(3))
    assert w.flush() is not None and w.flush() is None  # nothing buffered → no empty part
    w.extend({"t_s": float(i), "rss_bytes": 100 + i, "gpu_used_bytes": 5.0, "ts": utc_now()} for i in range(3, 5))
    w.flush()
    df = read_parts(tmp_path / "samples")
    assert list(df["t_s"]) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert str(df["gpu_used_bytes"].dtype) == "float64" and df["gpu_used_bytes"].isna().sum() == 3
    assert str(df["ts"].dt.tz) == "UTC"
    # a resumed writer continues the numbering instead of overwriting
    w2 = PartWriter(tmp_path / "samples")
    w2.append({"t_s": 5.0, "rss_bytes": 1, "gpu_used_bytes": None, "ts": utc_now()})
    assert w2.flush().name == "part-00002.parquet"
    assert len(read_parts(tmp_path / "samples")) == 6


def test_temporary_files_are_never_read(tmp_path: Path) -> None:
    folder = tmp_path / "samples"
    w = PartWriter(folder)
    w.append({"a": 1})
    w.flush()
    (folder / ".part-00001.parquet.123.tmp").write_bytes(b"half a parquet file")
    assert list(read_parts(folder)["a"]) == [1]


def test_atomic_json_and_run_ids(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "x.json", {"v": float("nan"), "t": utc_now()})
    data = json.loads((tmp_path / "x.json").read_text())
    assert data["v"] is None and data["t"].endswith("+00:00")
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
    for bad in ("../x", "a/b", "", ".hidden", "a" * 200):
        with pytest.raises(ParameterError, match="not a plain name"):
            check_run_id(bad)
    assert check_run_id("soak-a-20261128T101500Z") == "soak-a-20261128T101500Z"


def test_a_writer_killed_mid_run_leaves_a_loadable_partial_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "r1"
    code = (
        "import sys, time\n"
        "from soaklib.parts import PartWriter\nfrom soaklib.store import start_manifest\n"
        f"start_manifest({str(run_dir)!r}, 'r1', 'monitor')\n"
        f"w = PartWriter({str(run_dir / 'samples')!r})\n"
        "i = 0\n"
        "while True:\n"
        "    w.append({'t_s': float(i), 'v': i}); i += 1\n"
        "    if i % 10 == 0:\n"
        "        w.flush(); print(i, flush=True)\n"
        "    time.sleep(0.002)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        flushed = [int(p.stdout.readline()) for _ in range(5)][-1]
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.kill()
        p.wait(timeout=10)
    run = load_run(run_dir)
    assert not run.complete and run.kind == "monitor"
    assert len(run.samples) >= flushed and len(run.samples) % 10 == 0
    assert list(run.samples["v"]) == list(range(len(run.samples)))


def test_finished_run_loads_complete_with_its_signoff(tmp_path: Path) -> None:
    run_dir = tmp_path / "out" / "r2"
    start_manifest(run_dir, "r2", "watcher-a")
    finish_manifest(run_dir)
    atomic_write_json(tmp_path / "out" / "r2.json", {"verdict": "PASS"})
    for path in (run_dir, tmp_path / "out" / "r2.json"):
        run = load_run(path)
        assert run.complete and run.signoff == {"verdict": "PASS"} and run.samples.empty
    with pytest.raises(ParameterError, match="does not exist"):
        load_run(tmp_path / "nope")

"""Part files: damaged parts are skipped and named, compaction is crash-safe at every step."""
from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq

from soaklib.parts import PartWriter, compact_parts, live_parts, read_parts, scan_parts
from soaklib.runs import load_run
from soaklib.store import finish_manifest, start_manifest


def _write(folder: Path, parts: int, rows: int = 5) -> None:
    w = PartWriter(folder)
    for p in range(parts):
        w.extend({"t_s": float(p * rows + i), "rss_bytes": 1000 + p * rows + i} for i in range(rows))
        w.flush()


def test_a_corrupted_part_is_skipped_and_named(tmp_path: Path) -> None:
    folder = tmp_path / "samples"
    _write(folder, 4)
    victim = folder / "part-00002.parquet"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])  # truncated: no footer
    (folder / "part-00003.parquet").write_bytes(b"not parquet at all")
    scan = scan_parts(folder)
    assert list(scan.frame["t_s"]) == [float(i) for i in range(10)]
    assert [Path(b.path).name for b in scan.bad] == ["part-00002.parquet", "part-00003.parquet"]
    assert all(b.error for b in scan.bad)


def test_load_run_with_a_bad_part_is_incomplete_and_says_which(tmp_path: Path) -> None:
    rd = tmp_path / "run"
    start_manifest(rd, "run", "watcher-a", soak="a")
    _write(rd / "samples", 3)
    finish_manifest(rd, complete=True)
    (rd / "samples" / "part-00001.parquet").write_bytes(b"PAR1garbage")
    run = load_run(rd)
    assert not run.complete
    assert len(run.samples) == 10
    assert [Path(b.path).name for b in run.bad_parts] == ["part-00001.parquet"]


def test_compaction_merges_parts_into_one_range_file(tmp_path: Path) -> None:
    folder = tmp_path / "samples"
    _write(folder, 6)
    before = read_parts(folder)
    merged = compact_parts(folder)
    assert merged is not None and merged.name == "part-00000-00005.parquet"
    assert [p.name for p in folder.iterdir()] == [merged.name]
    after = read_parts(folder)
    assert after.equals(before)
    assert pq.read_metadata(merged).num_rows == 30
    assert compact_parts(folder) is None  # one file: nothing to merge


def test_a_crash_during_compaction_never_shows_a_sample_twice(tmp_path: Path) -> None:
    folder = tmp_path / "samples"
    _write(folder, 4)
    before = read_parts(folder)
    keep = tmp_path / "keep"
    shutil.copytree(folder, keep)
    compact_parts(folder)
    # the range file was renamed in, but the deletes never happened
    for p in keep.iterdir():
        shutil.copy2(p, folder / p.name)
    assert [p.name for p in live_parts(folder)] == ["part-00000-00003.parquet"]
    assert read_parts(folder).equals(before)
    # a resumed writer numbers after the range
    w = PartWriter(folder)
    w.append({"t_s": 99.0, "rss_bytes": 1})
    assert w.flush().name == "part-00004.parquet"  # type: ignore[union-attr]
    assert len(read_parts(folder)) == 21


def test_compaction_leaves_a_folder_with_a_bad_part_alone(tmp_path: Path) -> None:
    folder = tmp_path / "samples"
    _write(folder, 3)
    (folder / "part-00001.parquet").write_bytes(b"junk")
    assert compact_parts(folder) is None
    assert len(list(folder.iterdir())) == 3

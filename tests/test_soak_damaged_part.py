"""A run with a damaged part file still analyses: ``soak analyze`` exits 0/1 with a note naming
the file, never a traceback, and the signoff says the run is incomplete."""
from __future__ import annotations

import json
from pathlib import Path

from tests.test_soak_a import cli


def test_soak_analyze_names_a_corrupted_part_and_reads_the_rest(tmp_path: Path) -> None:
    out = tmp_path / "out"
    p = cli("watcher", "a", "--run-id", "dmg", "--output-dir", str(out), "--set", "duration_s=4",
            "--set", "warmup_s=1", "--set", "sampling.interval_s=0.2", "--set", "sampling.flush_s=0.5",
            "--set", "sim.poll_s=0.1", "--set", "llm.health_url=null", "--no-progress")
    assert p.returncode == 0, p.stdout + p.stderr
    run_dir = out / "dmg"
    parts = sorted((run_dir / "samples").rglob("part-*.parquet"))
    assert parts, "the run wrote no sample part file"
    victim = parts[0]
    victim.write_bytes(b"PAR1 this is not a parquet file any more")
    again = cli("analyze", str(run_dir))
    assert again.returncode in (0, 1), again.stderr
    assert "Traceback" not in again.stdout + again.stderr
    signoff = json.loads((out / "dmg.json").read_text())
    assert signoff["complete"] is False and signoff["verdict"] == "FAIL"
    named = [n for n in signoff["notes"] if victim.name in n]
    assert named and "could not be read" in named[0] and "not analysed" in named[0]
    assert victim.name in (out / "dmg.md").read_text()

"""Job numbering as the seed's runner does it: ``{run_id}-r{round}-{provider}-{i}``, i from 0."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from tests.test_multi_provider import jobs_of, soak


def test_beads_ids_and_job_index_count_from_zero(tmp_path: Path) -> None:
    code, out, e = soak(tmp_path, "--dry-run", "--providers", "opencode", "--rounds", "2", "--run-id", "num")
    assert code == 0, out
    assert e is not None
    ids = [j["job_spec"]["beads_id"] for j in jobs_of(e)]
    assert ids == ["num-r1-opencode-0", "num-r1-opencode-1", "num-r2-opencode-0", "num-r2-opencode-1"]
    assert [(j["job_spec"]["job_index"], j["job_spec"]["prompt_id"]) for j in jobs_of(e)][:2] == [(0, "echo_ok"), (1, "echo_ready")]
    md = (tmp_path / "out" / "num.md").read_text()
    assert "`num-r1-opencode-0`" in md and "`num-r1-opencode-1`" in md and "opencode-2`" not in md
    jobs = pd.read_parquet(tmp_path / "out" / "num" / "jobs.parquet")
    assert sorted(set(jobs["job_index"])) == [0, 1] and "num-r2-opencode-0" in set(jobs["beads_id"])

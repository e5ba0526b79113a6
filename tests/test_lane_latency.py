"""Latency percentiles are over successful jobs only; failed jobs are counted and listed apart."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.test_multi_provider import jobs_of, soak


def test_percentiles_leave_failed_jobs_out_and_say_so(tmp_path: Path) -> None:
    code, out, e = soak(tmp_path, "--dry-run", "--scenario", "no-op", "--providers", "opencode,cc-glm", "--rounds", "1",
                        "--run-id", "noop")  # fmt: skip
    assert code == 1, out
    assert e is not None
    cc, oc = e["provider_summary"]["cc-glm"], e["provider_summary"]["opencode"]
    assert (cc["total"], cc["passed"], cc["failed"], cc["latency_count"]) == (2, 0, 2, 0)
    assert cc["latency_ms_p50"] is None and cc["latency_ms_max"] is None  # failed no_op jobs are not timed in
    assert cc["failed_beads_ids"] == ["noop-r1-cc-glm-0", "noop-r1-cc-glm-1"]
    ok = [j["latency_ms"] for j in jobs_of(e) if j["job_spec"]["provider"] == "opencode"]
    assert oc["latency_count"] == 2 and abs(oc["latency_ms_p50"] - float(np.percentile(ok, 50))) <= 0.5
    assert e["rounds"][0]["latency"]["latency_count"] == 2
    md = (tmp_path / "out" / "noop.md").read_text()
    assert "| cc-glm | 2 | 0 | 2 | 0 | – | – |" in md
    assert "### Failed jobs, not in the percentiles: 2" in md and "| cc-glm | 2 | no_op ×2 |" in md
    assert "of **successful jobs only**" in md

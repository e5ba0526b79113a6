"""Retries and concurrency-cap backoffs are evidence: per attempt in the JSON, in the Markdown,
on the console, and a clean result that needed them says so."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from tests.test_multi_provider import jobs_of, soak


def test_cap_backoffs_are_recorded_and_reported(tmp_path: Path) -> None:
    code, out, e = soak(tmp_path, "--dry-run", "--scenario", "cap", "--providers", "gemini", "--rounds", "1", "--run-id", "cap")
    assert code == 0, out
    assert e is not None
    backed = [j for j in jobs_of(e) if j["cap_backoffs"]]
    assert backed, "with a cap of 1, one of two parallel gemini starts exits 26 and backs off"
    j = backed[0]
    first = j["attempts"][0]
    assert first["cap_backoffs"] == j["cap_backoffs"] >= 1 and first["cap_wait_s"] > 0 and j["cap_wait_s"] == first["cap_wait_s"]
    assert j["retries"] == 0 and len(j["attempts"]) == 1  # a cap backoff is not a retry
    assert first["first_start_at"] < first["started_at"]  # the refused start, then the one that launched
    assert j["job_latency_ms"] > j["latency_ms"] + 1000 * first["cap_wait_s"] - 50
    rs = e["retry_summary"]
    assert rs["cap_backoffs"] == j["cap_backoffs"] and rs["jobs_cap_backed_off"] == 1 and rs["retries"] == 0
    md = (tmp_path / "out" / "cap.md").read_text()
    assert "all clean: yes (after " in md and "concurrency-cap backoff" in md
    assert "## Retries and backoffs" in md and f"| `{j['job_spec']['beads_id']}` | 0 | PASS |" in md
    assert "All Clean: Yes (after " in out and "cap backoff" in out
    jobs = pd.read_parquet(tmp_path / "out" / "cap" / "jobs.parquet")
    assert jobs["cap_backoffs"].sum() == rs["cap_backoffs"] and jobs["cap_wait_s"].max() > 0


def test_flaky_retries_keep_every_attempt_and_the_whole_job_latency(tmp_path: Path) -> None:
    code, out, e = soak(tmp_path, "--dry-run", "--scenario", "flaky", "--providers", "gemini", "--rounds", "1",
                        "--max-retries", "1", "--run-id", "fl")  # fmt: skip
    assert code == 0, out
    assert e is not None
    for j in jobs_of(e):
        first, last = j["attempts"]
        assert j["retries"] == 1 and j["success"] and last["success"] and not first["success"]
        assert (first["reason_code"], first["runner_reason_code"]) == ("model_unavailable", "gemini_capacity_exhausted")
        assert "HTTP 429" in first["detail"] and first["latency_ms"] > 0
        assert last["backoff_s"] >= 0.9 and j["retry_wait_s"] == last["backoff_s"]
        assert j["latency_ms"] == last["latency_ms"]  # latency_ms keeps its meaning: the final attempt
        assert j["job_latency_ms"] >= first["latency_ms"] + 1000 * last["backoff_s"] + last["latency_ms"]
    rs = e["retry_summary"]
    assert (rs["retries"], rs["jobs_retried"], rs["failed_attempts"], rs["cap_backoffs"]) == (2, 2, 2, 0)
    assert e["rounds"][0]["retry_summary"]["retries"] == 2
    assert "job_latency_ms" in e["latency_definitions"] and "successful jobs only" in e["latency_definitions"]["percentiles"]
    assert e["provider_summary"]["gemini"]["job_latency_ms_p50"] > e["provider_summary"]["gemini"]["latency_ms_p50"]
    md = (tmp_path / "out" / "fl.md").read_text()
    assert "all clean: yes (after 2 retries on 2 jobs" in md
    assert "| `fl-r1-gemini-0` | 0 | FAIL | model_unavailable (gemini_capacity_exhausted) |" in md
    assert "| `fl-r1-gemini-0` | 1 | PASS |" in md and "HTTP 429" in md
    assert "Percentiles use `latency_ms`" in md and "successful jobs only" in md
    assert "All Clean: Yes (after 2 retries on 2 jobs" in out
    assert "2 attempts: #0 FAIL model_unavailable (gemini_capacity_exhausted)" in out

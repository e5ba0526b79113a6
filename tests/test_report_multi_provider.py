"""The multi-provider evidence tables and Markdown, on a small known run dict."""
from __future__ import annotations

from soaklib.analysis.latency import summarize
from soaklib.report.multi_provider import (
    failure_reasons,
    gate_table,
    job_table,
    provider_table,
    round_table,
    to_markdown,
)


def _job(provider: str, idx: int, ok: bool, latency_ms: int, reason: str | None = None) -> dict:
    return {
        "job_spec": {"beads_id": f"r-r1-{provider}-{idx}", "provider": provider, "prompt_id": "echo_ok", "prompt": "p",
                     "success_hint": "OK", "model": "m", "worktree": "/tmp/agents/r/repo", "round_num": 1, "job_index": idx},
        "success": ok, "status": "no_op_success" if ok else "exited_err", "reason_code": reason,
        "runner_reason_code": None if ok else "process_exit_with_rc", "selected_model": "m", "latency_ms": latency_ms,
        "latency_source": "rc_mtime", "completion": True, "retries": 0, "outcome_state": "success", "stdout": "OK",
        "stderr": "" if ok else "Verify your account | HTTP 403", "started_at": None, "completed_at": None, "raw_outcome": {},
    }


EVIDENCE = {
    "run_id": "r", "passed": False, "all_clean": False, "interrupted": False, "exit_code": 1, "total_jobs": 4,
    "total_passed": 3, "total_failed": 1, "started_at": "2026-11-28T00:00:00+00:00", "duration_sec": 9.5,
    "provider_summary": {"opencode": {"total": 2, "passed": 2, "failed": 0, "latency_ms_p50": 150.0},
                         "gemini": {"total": 2, "passed": 1, "failed": 1, "latency_ms_p50": 300.0}},
    "rounds": [{"round_num": 1, "job_count": 4, "passed": 3, "pass_rate": 0.75, "duration_sec": 9.5,
                "latency": {"latency_ms_p50": 200.0},
                "jobs": [_job("opencode", 1, True, 100), _job("opencode", 2, True, 200),
                         _job("gemini", 1, True, 300), _job("gemini", 2, False, 400, "auth_error")]}],
    "preflight": {"passed": True, "failed_providers": [], "results": [
        {"provider": "opencode", "passed": True, "returncode": 0, "duration_sec": 0.1, "failing_lines": []}]},
    "gate": {"passed": False, "rules": [
        {"rule": "failed_jobs", "observed": 1, "expected": 0, "passed": False, "explanation": "no job failed"}]},
}


def test_tables_from_the_evidence() -> None:
    jobs = job_table(EVIDENCE)
    assert len(jobs) == 4 and jobs["success"].sum() == 3
    per_provider = summarize(jobs, by=["provider"]).set_index("provider")
    assert per_provider.loc["opencode", "latency_ms_p50"] == 150.0 and per_provider.loc["gemini", "failed"] == 1
    reasons = failure_reasons(EVIDENCE)
    assert reasons.to_dict("records") == [
        {"provider": "gemini", "reason_code": "auth_error", "runner_reason_code": "process_exit_with_rc", "jobs": 1}]
    assert gate_table(EVIDENCE).loc[0, "status"] == "FAIL"
    assert list(provider_table(EVIDENCE)["provider"]) == ["opencode", "gemini"]
    assert round_table(EVIDENCE).loc[0, "pass_rate"] == 0.75


def test_markdown_explains_the_failure_and_escapes_table_cells() -> None:
    md = to_markdown(EVIDENCE, {"latency per provider": "r/figures/latency.png"})
    assert "**Result: FAILED**" in md and "| failed_jobs | 1 | 0 | FAIL |" in md
    assert "auth_error (process_exit_with_rc)" in md
    assert "Verify your account \\| HTTP 403" in md  # a '|' in a detail does not break the table
    assert "![latency per provider](r/figures/latency.png)" in md


def test_console_lines_never_put_a_success_word_beside_a_failure() -> None:
    from soaklib.dispatch.console import job_line

    drift = _job("opencode", 0, False, 1200, "model_policy_violation") | {
        "status": "no_op_success", "runner_reason_code": "outcome_exit_0", "selected_model": "zai-coding-plan/glm-5"}
    line = job_line(drift)
    assert line == ("  [opencode] echo_ok: FAIL model_policy_violation (runner state no_op_success, runner reason "
                    "outcome_exit_0, model zai-coding-plan/glm-5, 1.20s)")  # fmt: skip
    timeout = _job("gemini", 1, False, None, "wait_timeout") | {"status": "wait_timeout", "runner_reason_code": "check_timeout"}
    assert job_line(timeout) == "  [gemini] echo_ok: FAIL wait_timeout (runner reason check_timeout, model m)"
    assert job_line(_job("gemini", 0, True, 300)) == "  [gemini] echo_ok: OK (success, 0.30s)"


def test_pass_rate_of_no_jobs_and_clean_after_retries() -> None:
    from soaklib.report.multi_provider import clean_text, rate_text

    assert rate_text(0, 0) == "n/a" and rate_text(3, 4) == "75.0%"
    rs = {"retries": 2, "jobs_retried": 2, "failed_attempts": 2, "cap_backoffs": 1, "jobs_cap_backed_off": 1, "wait_s": 2.25}
    assert clean_text({"all_clean": True, "retry_summary": rs}) == (
        "Yes (after 2 retries on 2 jobs; 1 concurrency-cap backoff (exit 26) on 1 job; waited 2.2 s)")
    assert clean_text({"all_clean": True, "retry_summary": {**rs, "retries": 0, "cap_backoffs": 0}}) == "Yes"
    assert clean_text({"all_clean": True}) == "Yes" and clean_text({"all_clean": False, "retry_summary": rs}) == "No"


def test_a_seed_format_json_still_renders() -> None:
    md = to_markdown(EVIDENCE)  # no provenance, retries, latency_count or statuses: the older format
    assert "**Runner:** dx-runner unknown, version unknown" in md and "older format" in md
    assert "| 4 | 3 | 1 | 75.0% |" in md and "### Failed jobs, not in the percentiles: 1" in md

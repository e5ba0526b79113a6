"""The gate as criteria rows, SKIP when no job ran, pass rate n/a for no jobs, and console
lines that never put a success word beside a failure."""
from __future__ import annotations

from typing import Any

import pytest

from tests.test_multi_provider import jobs_of, soak

ROW_KEYS = {"metric", "observed", "unit", "pass_bound", "fail_bound", "status"}
RULES = ["preflight", "rounds_completed", "consecutive_clean_rounds", "failed_jobs", "model_policy_violations"]


@pytest.fixture(scope="module")
def drift(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, dict[str, Any], str]:
    tmp = tmp_path_factory.mktemp("drift")
    code, out, e = soak(tmp, "--dry-run", "--scenario", "model-drift", "--providers", "opencode,gemini", "--rounds", "1",
                        "--run-id", "drift")  # fmt: skip
    assert e is not None, out
    return code, out, e, (tmp / "out" / "drift.md").read_text()


@pytest.fixture(scope="module")
def no_jobs(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, dict[str, Any], str]:
    tmp = tmp_path_factory.mktemp("signoff")
    code, out, e = soak(tmp, "--dry-run", "--scenario", "signoff-2026-02-20", "--rounds", "1", "--run-id", "pf0")
    assert e is not None, out
    return code, out, e, (tmp / "out" / "pf0.md").read_text()


def test_criteria_rows_beside_the_gate(drift: tuple[int, str, dict[str, Any], str]) -> None:
    code, _, e, md = drift
    assert code == 1
    rows = e["criteria"]
    assert [r["metric"] for r in rows] == RULES == [r["rule"] for r in e["gate"]["rules"]]
    assert all(r.keys() >= ROW_KEYS and r["status"] in ("PASS", "FAIL", "SKIP") for r in rows)
    by = {r["metric"]: r for r in rows}
    mpv = by["model_policy_violations"]
    assert (mpv["observed"], mpv["unit"], mpv["pass_bound"], mpv["fail_bound"], mpv["status"]) == (2, "jobs", 0, 0, "FAIL")
    assert by["failed_jobs"]["status"] == "FAIL" and by["preflight"]["status"] == "PASS"
    assert by["rounds_completed"]["observed"] == 1 and by["rounds_completed"]["status"] == "PASS"
    gate = {r["rule"]: r for r in e["gate"]["rules"]}  # the established gate keeps its keys
    assert {"rule", "observed", "expected", "passed", "explanation"} <= gate["failed_jobs"].keys()
    assert gate["model_policy_violations"]["passed"] is False and e["gate"]["passed"] is False
    assert "| model_policy_violations | 2 | 0 | FAIL |" in md


def test_a_failure_is_never_printed_beside_a_success_state(drift: tuple[int, str, dict[str, Any], str]) -> None:
    _, out, e, md = drift
    opencode = [j for j in jobs_of(e) if j["job_spec"]["provider"] == "opencode"]
    assert {(j["status"], j["reason_code"]) for j in opencode} == {("no_op_success", "model_policy_violation")}
    lines = [ln for ln in out.splitlines() if ln.startswith("  [opencode]")]
    assert len(lines) == 2
    for ln in lines:
        assert ": FAIL model_policy_violation (runner state no_op_success, " in ln and "model zai-coding-plan/glm-5" in ln
        assert "(success" not in ln and "(no_op_success" not in ln
    assert all("(success" in ln for ln in out.splitlines() if ln.startswith("  [gemini]"))
    assert "| FAIL | no_op_success | model_policy_violation" in md


def test_no_jobs_skip_the_job_rules_and_have_no_pass_rate(no_jobs: tuple[int, str, dict[str, Any], str]) -> None:
    code, out, e, md = no_jobs
    assert code == 21 and e["total_jobs"] == 0 and e["pass_rate"] is None
    status = {r["metric"]: r["status"] for r in e["criteria"]}
    assert status == {"preflight": "FAIL", "rounds_completed": "SKIP", "consecutive_clean_rounds": "SKIP",
                      "failed_jobs": "SKIP", "model_policy_violations": "SKIP"}  # fmt: skip
    failed_jobs = next(r for r in e["gate"]["rules"] if r["rule"] == "failed_jobs")
    assert failed_jobs["status"] == "SKIP" and failed_jobs["passed"] is True and "preflight failed for cc-glm" in failed_jobs["note"]
    assert e["gate"]["passed"] is False and e["passed"] is False
    assert "| failed_jobs | 0 | 0 | SKIP |" in md and "| failed_jobs | 0 | 0 | FAIL |" not in md
    assert "| preflight | [\"cc-glm\"] | [] | FAIL |" in md
    assert "| 0 | 0 | 0 | n/a |" in md and "0.0%" not in md and "No job ran: preflight failed for cc-glm" in md
    assert "Total: 0/0 passed (pass rate n/a)" in out

"""Parsing, classification, model policy and redaction of the dx-runner client (no processes)."""
from __future__ import annotations

from soaklib.dispatch.dx_runner import as_int, parse_check, parse_kv, parse_report, parse_started, preflight_failures
from soaklib.dispatch.job import Attempt, JobOutcome, JobSpec, classify_failure, is_transient, model_policy_violation
from soaklib.dispatch.policy import REASON_CODES, transient
from soaklib.redact import redact

PREFLIGHT_FAILED = """=== dx-runner preflight: cc-glm ===
[OK] runtime claude found
ERROR_CODE=gemini_auth_missing severity=error action=set GEMINI_API_KEY
ERROR: model 'glm-5' unavailable
reason_code=secret_auth_resolution_failed_after_preflight
NO_AUTH_SOURCE
=== Preflight FAILED (3 error(s)) ===
"""


def test_preflight_failing_lines_are_the_error_lines() -> None:
    lines = preflight_failures(PREFLIGHT_FAILED)
    assert lines == [
        "ERROR_CODE=gemini_auth_missing severity=error action=set GEMINI_API_KEY",
        "ERROR: model 'glm-5' unavailable",
        "reason_code=secret_auth_resolution_failed_after_preflight",
        "NO_AUTH_SOURCE",
        "=== Preflight FAILED (3 error(s)) ===",
    ]
    assert preflight_failures("[OK] fine\n=== Preflight PASSED ===\n") == []


def test_started_line_and_outcome_kv() -> None:
    text = "=== Preflight PASSED ===\nstarted beads=r1-gemini-1 provider=gemini pid=4242 log=/tmp/dx-runner/gemini/r1-gemini-1.log\n"
    assert parse_started(text) == {"beads": "r1-gemini-1", "provider": "gemini", "pid": "4242", "log": "/tmp/dx-runner/gemini/r1-gemini-1.log"}
    assert parse_started("no such line") == {}
    kv = parse_kv("exit_code=0\nstate=success\nfallback_reason=\nselected_model=glm-5\ngarbage line\n")
    assert kv == {"exit_code": "0", "state": "success", "fallback_reason": "", "selected_model": "glm-5"}


def test_check_and_report_parsing_tolerates_noise_and_strings() -> None:
    assert parse_check('warning: slow\n{"state": "healthy", "reason_code": null}\n') == {"state": "healthy", "reason_code": None}
    assert parse_check("Traceback: not json") is None
    report = parse_report('{\n  "state": "exited_ok",\n  "exit_code": "0",\n  "duration_sec": "-"\n}\n')
    assert report is not None and as_int(report["exit_code"]) == 0 and as_int(report["duration_sec"]) is None
    assert parse_report("") is None and parse_report("{broken") is None


def test_model_policy() -> None:
    assert model_policy_violation("glm-5", None, "glm-5") is None
    assert "zai-coding-plan" in (model_policy_violation("zai-coding-plan/glm-5", None, "zhipuai-coding-plan/glm-5") or "")
    assert "alias_for" in (model_policy_violation("zhipuai-coding-plan/glm-5", "alias_for=x", "zhipuai-coding-plan/glm-5") or "")
    assert model_policy_violation("zhipuai/glm-5.1", None, "zhipuai-coding-plan/glm-5") is not None
    assert model_policy_violation(None, None, "glm-5") is not None


def test_failure_classification_and_transience() -> None:
    assert classify_failure("exited_err", "process_exit_with_rc", "ValidationRequiredError: Verify your account to continue (HTTP 403)") == "auth_error"
    assert classify_failure("exited_err", "gemini_capacity_exhausted", "") == "model_unavailable"
    assert classify_failure("exited_err", None, "ERROR: model 'x' unavailable") == "model_unavailable"
    assert classify_failure("stalled", None, "") == "stalled"
    assert classify_failure("no_op", None, "") == "no_op"
    assert classify_failure("blocked", None, "") == "permission_denied"
    assert classify_failure("exited_err", None, "segfault") == "runner_error"
    assert is_transient(Attempt(0, reason_code="model_unavailable", runner_reason_code="gemini_capacity_exhausted"))
    assert is_transient(Attempt(0, reason_code="auth_error", runner_reason_code="opencode_rate_limited"))
    assert not is_transient(Attempt(0, reason_code="auth_error", runner_reason_code="process_exit_with_rc"))
    assert not is_transient(Attempt(0, reason_code="model_policy_violation"))
    assert not is_transient(Attempt(0, success=True))
    assert "interrupted" in REASON_CODES and not transient("interrupted", "gemini_capacity_exhausted")
    assert not is_transient(Attempt(0, status="interrupted", reason_code="interrupted"))


def test_job_latency_and_waits_span_every_attempt() -> None:
    spec = JobSpec("r-r1-gemini-0", "gemini", "echo_ok", "p", "OK", "m", "/tmp/agents/r/repo", 1, 0)
    first = Attempt(0, reason_code="model_unavailable", latency_ms=900.0, t_first_mono=100.0, t_start_mono=100.5,
                    cap_waits=2, cap_wait_s=0.5)  # fmt: skip
    last = Attempt(1, success=True, latency_ms=700.0, t_first_mono=103.0, t_start_mono=103.0, backoff_s=1.0)
    job = JobOutcome(spec, [first, last])
    assert job.job_latency_ms == (103.0 - 100.0) * 1000 + 700.0  # first start call → final exit
    assert job.cap_backoffs == 2 and job.waits() == {"cap_wait_s": 0.5, "retry_wait_s": 1.0, "wait_s": 1.5}
    d = job.to_seed_dict()
    assert d["latency_ms"] == 700 and d["job_latency_ms"] == 3700 and d["retries"] == 1
    assert [a["attempt"] for a in d["attempts"]] == [0, 1] and d["attempts"][0]["cap_backoffs"] == 2
    assert JobOutcome(spec, [Attempt(0, status="wait_timeout")]).job_latency_ms is None


def test_redaction_of_secrets() -> None:
    text = (
        "GEMINI_API_KEY=AIzaSyD-planted-secret-0123456789\nAuthorization: Bearer sk-planted-bearer-token-abcdef\n"
        "token ref op://vault/item/field\nZAI_TOKEN: 'abc def'\nplain line stays"
    )
    out = redact(text) or ""
    assert "planted" not in out and "vault" not in out and "abc def" not in out
    assert out.count("[REDACTED]") == 4 and "plain line stays" in out
    assert redact(None) is None

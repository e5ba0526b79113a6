"""The lane's words for a person: one line per job and per round, rates, retries, the runner.

The console and the Markdown evidence use these same functions, so both say the same thing.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CLIENT_STATUSES = frozenset({"interrupted", "start_failed", "wait_timeout", "executor_exception", "runner_error", "pending"})


def _fmt_ms(v: Any) -> str:
    return "–" if v is None else f"{float(v):,.0f}"


def _secs(ms: Any) -> str:
    return "" if ms is None else f"{float(ms) / 1000:.2f}s"


def rate_text(passed: int, total: int) -> str:
    """``"83.3%"``, or ``"n/a"`` for no jobs (a rate of nothing is not 0%)."""
    return f"{100.0 * passed / total:.1f}%" if total else "n/a"


def _plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else (many or word + 's')}"


def retry_text(rs: dict[str, Any] | None) -> str:
    """``"2 retries on 2 jobs; 3 concurrency-cap backoffs (exit 26) on 1 job; waited 2.8 s"``; "" if none.

    Failed attempts are named when they are more than the retries (a job that failed at the end)."""
    if not rs or not (rs.get("retries") or rs.get("cap_backoffs")):
        return ""
    bits = []
    if rs.get("retries"):
        bits.append(f"{_plural(rs['retries'], 'retry', 'retries')} on {_plural(rs['jobs_retried'], 'job')}")
    if rs.get("failed_attempts", 0) > rs.get("retries", 0):
        bits.append(_plural(rs["failed_attempts"], "failed attempt"))
    if rs.get("cap_backoffs"):
        bits.append(f"{_plural(rs['cap_backoffs'], 'concurrency-cap backoff')} (exit 26) on "
                    f"{_plural(rs.get('jobs_cap_backed_off', 0), 'job')}")
    bits.append(f"waited {rs.get('wait_s', 0.0):.1f} s")
    return "; ".join(bits)


def clean_text(evidence: Mapping[str, Any]) -> str:
    """``Yes``, ``Yes (after 2 retries on 2 jobs …)`` or ``No``: a clean result that needed retries says so."""
    if not evidence["all_clean"]:
        return "No"
    note = retry_text(evidence.get("retry_summary"))
    return f"Yes (after {note})" if note else "Yes"


def runner_text(evidence: Mapping[str, Any]) -> str:
    """What answered the calls: ``dx-runner simulator, scenario flaky (…)`` or the runner's path and version."""
    prov = evidence.get("provenance")
    if prov and prov.get("description"):
        return str(prov["description"])
    env = evidence.get("environment") or {}
    if env.get("simulator"):
        return f"dx-runner simulator, scenario {env.get('scenario')}"
    return f"dx-runner {env.get('runner') or 'unknown'}, version unknown"


def _attempts_note(j: dict[str, Any]) -> str:
    atts = j.get("attempts") or []
    bits = []
    if len(atts) > 1:
        earlier = ", ".join(f"#{a['attempt']} FAIL {a.get('reason_code') or a['status']}"
                            + (f" ({a['runner_reason_code']})" if a.get("runner_reason_code") else "") for a in atts[:-1])
        bits.append(f"{len(atts)} attempts: {earlier}")
    if j.get("cap_backoffs"):
        bits.append(f"{_plural(j['cap_backoffs'], 'cap backoff')} (exit 26)")
    if bits:
        bits.append(f"waited {j.get('wait_s', 0.0):.2f}s")
        if j.get("job_latency_ms") is not None:
            bits.insert(0, f"job {_secs(j['job_latency_ms'])}")
    return "; " + ", ".join(bits) if bits else ""


def job_line(j: dict[str, Any]) -> str:
    """One console line per job; a failure never shows a success word beside it::

    [gemini] echo_ok: OK (success, 0.59s; job 2.10s, 2 attempts: #0 FAIL model_unavailable (…), waited 1.00s)
    [opencode] echo_ok: FAIL model_policy_violation (runner state no_op_success, model zai-coding-plan/glm-5, 1.20s)
    """
    s = j["job_spec"]
    head = f"  [{s['provider']}] {s['prompt_id']}: "
    lat = _secs(j.get("latency_ms"))
    if j["success"]:
        return head + f"{s['success_hint']} (success{', ' + lat if lat else ''}{_attempts_note(j)})"
    status = j["status"]
    if status in CLIENT_STATUSES:  # the client's own word, not a runner state
        parts = [] if status == j["reason_code"] else [status]
        parts += [_cell(j.get("stderr") or "")[:120]] if status == "interrupted" and j.get("stderr") else []
    else:
        parts = [f"runner state {status}"]
    if j.get("runner_reason_code"):
        parts.append(f"runner reason {j['runner_reason_code']}")
    if j.get("selected_model"):
        parts.append(f"model {j['selected_model']}")
    if lat:
        parts.append(lat)
    return head + f"FAIL {j['reason_code'] or j['status']} ({', '.join(parts)}{_attempts_note(j)})"


def round_line(r: dict[str, Any]) -> str:
    """``Round 1: PASSED (100.0% pass rate; after 2 retries …)``; a cut round says it is not completed."""
    n = r["job_count"]
    note = retry_text(r.get("retry_summary"))
    tail = f"{rate_text(r['passed'], n)} pass rate{'; ' + note if note else ''}"
    if r.get("completed") is False:
        return f"Round {r['round_num']}: INTERRUPTED (cut by Ctrl-C / SIGTERM, not counted as completed; {r['passed']}/{n} passed)"
    return f"Round {r['round_num']}: {'PASSED' if n and r['passed'] == n else 'FAILED'} ({tail})"


# --------------------------------------------------------------------------- tables


def _cell(text: Any) -> str:
    return " ".join(str(text).strip().splitlines())[:300].replace("|", "\\|")

"""How a job's outcome is judged: the reason codes, the model policy and the failure
classification (DESIGN.md section 3). Pure functions, no processes.
"""
from __future__ import annotations

import re

#: The seed's reason codes plus the ones DESIGN.md section 3 adds; ``interrupted``: cut by Ctrl-C.
REASON_CODES = (
    "model_unavailable",
    "auth_error",
    "permission_denied",
    "start_failed",
    "wait_timeout",
    "executor_exception",
    "model_policy_violation",
    "stalled",
    "no_op",
    "runner_error",
    "interrupted",
)
NON_TRANSIENT = frozenset({"auth_error", "permission_denied", "model_policy_violation", "no_op", "interrupted"})
_TRANSIENT_RUNNER = re.compile(r"(?i)(rate_?limit|capacity|concurrency|overload|timeout|temporar)")
_AUTH = re.compile(r"(?i)(\b40[13]\b|unauthori[sz]ed|forbidden|verify your account|auth|api key|credential|quota)")
_MODEL = re.compile(r"(?i)(model\b.*\b(unavailable|not found|not available)|model_unavailable|capacity|overloaded)")
_PERM = re.compile(r"(?i)(permission denied|DENIED|worktree|EACCES|read-only file system)")


def model_policy_violation(selected: str | None, fallback: str | None, canonical: str) -> str | None:
    """Why the model policy fails (None when it holds): canonical model, no zai/alias fallback."""
    if selected and selected.startswith("zai-coding-plan/"):
        return f"selected model {selected} is a zai-coding-plan fallback (canonical {canonical})"
    if fallback and "alias_for=" in fallback:
        return f"fallback_reason {fallback} (canonical {canonical})"
    if selected is None:
        return f"no selected_model reported (canonical {canonical})"
    if selected != canonical:
        return f"selected model {selected} is not the canonical {canonical}"
    return None


def classify_failure(state: str | None, runner_reason: str | None, detail: str) -> str:
    """Map a runner state + reason + detail text to one of ``REASON_CODES``."""
    text = f"{runner_reason or ''} {detail}"
    if state == "stalled":
        return "stalled"
    if state == "no_op":
        return "no_op"
    if state == "blocked" or _PERM.search(runner_reason or ""):
        return "permission_denied"
    if _MODEL.search(text):
        return "model_unavailable"
    if _AUTH.search(text) or (runner_reason and "rate_limit" in runner_reason):
        return "auth_error"
    if _PERM.search(detail):
        return "permission_denied"
    return "runner_error"


def transient(reason_code: str | None, runner_reason_code: str | None) -> bool:
    """A failure worth another attempt: a rate or capacity limit named by the runner, or any
    reason but auth / permission / model policy / no-op; never an interrupted one."""
    if reason_code == "interrupted":
        return False
    if runner_reason_code and _TRANSIENT_RUNNER.search(runner_reason_code):
        return True
    return reason_code not in NON_TRANSIENT

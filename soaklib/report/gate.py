"""The gate at the end of a notebook: the error that makes papermill exit non-zero.

One function for the three artifacts a notebook signs: a lane's evidence (the gate's
failing rules, or the providers whose preflight failed), a soak's signoff (its FAIL rows)
and the combined signoff (not production-ready: the failing rows, else why it is not
signed off). It returns the error to raise, or None when the artifact passes.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from soaklib.errors import GateFailed, PreflightError, SoakError

COMBINED_KIND = "watcher-soak-signoff"


def gate_error(artifact: Mapping[str, Any]) -> SoakError | None:
    """The error that the artifact's verdict calls for (None when it passes): ``GateFailed``
    (exit 1), or ``PreflightError`` (exit 21) for a lane whose preflight failed."""
    if artifact.get("kind") == COMBINED_KIND:
        if artifact.get("production_ready"):
            return None
        rows = [f"{r['soak'].upper()}:{r['metric']}" for r in artifact.get("failing") or []]
        why = ", ".join(rows) or "; ".join(artifact.get("verdict_reasons") or [])
        return GateFailed(f"autonomous loop {artifact['verdict']}: {why} (see above)", failing=tuple(rows))
    if "gate" in artifact and "passed" in artifact:  # a lane's evidence
        if artifact["passed"]:
            return None
        failed = list((artifact.get("preflight") or {}).get("failed_providers") or [])
        if failed:
            return PreflightError(f"preflight failed for run {artifact['run_id']} on {', '.join(failed)}: no job ran; "
                                  "fix the providers' auth and runtimes (see the preflight table)",
                                  providers=tuple(failed))
        failing = [r["rule"] for r in (artifact["gate"] or {}).get("rules") or [] if not r["passed"]]
        return GateFailed(f"gate failed for run {artifact['run_id']}: {', '.join(failing)} (see the tables above)",
                          run_id=artifact["run_id"], failing=tuple(failing))
    if artifact.get("verdict") != "FAIL":
        return None
    failing = [r["metric"] for r in artifact.get("criteria") or [] if r["status"] == "FAIL"]
    return GateFailed(f"soak {str(artifact['soak']).upper()} {artifact['run_id']} {artifact.get('verdict_label')}: "
                      f"{', '.join(failing) or 'incomplete run'} (see the criteria table above)",
                      run_id=artifact["run_id"], failing=tuple(failing))

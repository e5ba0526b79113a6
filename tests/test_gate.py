"""The notebooks' gate: which error each artifact's verdict calls for, with what message."""
from __future__ import annotations

from soaklib import GateFailed, PreflightError, gate_error
from soaklib.artifacts import LaneEvidence, Signoff

ROW = {"metric": "halt_s", "label": "Halt", "observed": 40.0, "unit": "s", "pass_bound": 10, "fail_bound": 30,
       "status": "FAIL", "note": "", "triage": "look at the halt", "direction": "max"}


def lane(**kw: object) -> LaneEvidence:
    return LaneEvidence.from_json({"run_id": "L", "passed": False, "rounds": [], "gate": {"rules": [
        {"rule": "failed_jobs", "passed": False}, {"rule": "preflight", "passed": True}]},
        "preflight": {"failed_providers": []}, **kw})


def test_a_passing_artifact_needs_no_error() -> None:
    assert gate_error(lane(passed=True)) is None
    assert gate_error(Signoff(run_id="S", soak="a", verdict="PASS", criteria=[])) is None
    assert gate_error({"kind": "watcher-soak-signoff", "production_ready": True}) is None


def test_a_failing_lane_names_its_rules_and_a_failed_preflight_is_exit_21() -> None:
    err = gate_error(lane())
    assert isinstance(err, GateFailed) and err.exit_code == 1 and err.failing == ("failed_jobs",)
    assert str(err).startswith("gate failed for run L: failed_jobs (see the tables above)")
    pre = gate_error(lane(preflight={"failed_providers": ["gemini"]}))
    assert isinstance(pre, PreflightError) and pre.exit_code == 21 and pre.providers == ("gemini",)
    assert "preflight failed for run L on gemini" in str(pre)


def test_a_failing_soak_and_a_combined_signoff_name_their_rows() -> None:
    s = Signoff(run_id="S", soak="b", verdict="FAIL", criteria=[ROW], verdict_label="FAIL (needs fixes)")  # type: ignore[list-item]
    err = gate_error(s)
    assert isinstance(err, GateFailed) and err.failing == ("halt_s",)
    assert str(err).startswith("soak B S FAIL (needs fixes): halt_s (see the criteria table above)")
    combined = {"kind": "watcher-soak-signoff", "production_ready": False, "verdict": "NEEDS FIXES",
                "failing": [{"soak": "a", "metric": "memory_slope_mb_per_h"}], "verdict_reasons": []}
    assert str(gate_error(combined)).startswith("autonomous loop NEEDS FIXES: A:memory_slope_mb_per_h")
    short = {**combined, "verdict": "NOT SIGNED OFF: short runs", "failing": [], "verdict_reasons": ["short run: A"]}
    assert str(gate_error(short)).startswith("autonomous loop NOT SIGNED OFF: short runs: short run: A")

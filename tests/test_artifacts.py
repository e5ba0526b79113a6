"""The signoff and the lane's evidence are typed values that read and write the same JSON."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from soaklib import ParameterError
from soaklib.artifacts import EVIDENCE_SCHEMA_VERSION, SIGNOFF_SCHEMA_VERSION, LaneEvidence, Signoff
from soaklib.report.multi_provider import read_evidence

ROW = {"metric": "halt_s", "label": "Halt", "observed": 1.5, "unit": "s", "pass_bound": 10, "fail_bound": 30,
       "status": "PASS", "note": "", "triage": "", "direction": "max"}


def test_signoff_round_trip_keeps_order_and_unknown_keys() -> None:
    data = {"schema_version": 1, "run_id": "r1", "soak": "a", "verdict": "FAIL", "complete": True,
            "criteria": [ROW, {**ROW, "metric": "tracebacks", "status": "FAIL"}], "from_a_newer_writer": {"x": 1}}
    s = Signoff.from_json(data)
    assert (s.run_id, s.soak, s.verdict, s.complete) == ("r1", "a", "FAIL", True)
    assert s.failing() == ["tracebacks"] and s.extra == {"from_a_newer_writer": {"x": 1}}
    out = s.to_json()
    assert list(out)[:4] == ["schema_version", "run_id", "soak", "verdict"]
    assert out["from_a_newer_writer"] == {"x": 1} and Signoff.from_json(out) == s
    # a read-only Mapping of its JSON: what the renderers and the notebooks read
    assert s["verdict"] == "FAIL" and s.get("nope") is None and "from_a_newer_writer" in s and dict(s) == out
    assert s["from_a_newer_writer"] == {"x": 1} and len(s) == len(out)
    with pytest.raises(KeyError):
        s["nope"]


def test_signoff_missing_keys_is_a_clear_error() -> None:
    with pytest.raises(ParameterError, match="not a Signoff: the keys criteria, soak, verdict are missing"):
        Signoff.from_json({"run_id": "r1"})
    with pytest.raises(ParameterError, match="is a JSON object, not list"):
        Signoff.from_json([])  # type: ignore[arg-type]


def test_schema_versions_have_one_home() -> None:
    from soaklib.dispatch import evidence
    from soaklib.report import signoff

    assert Signoff(run_id="r", soak="a", verdict="PASS", criteria=[]).schema_version == SIGNOFF_SCHEMA_VERSION
    assert signoff.SCHEMA_VERSION == SIGNOFF_SCHEMA_VERSION and evidence.SCHEMA_VERSION == EVIDENCE_SCHEMA_VERSION
    assert LaneEvidence(run_id="r").schema_version == EVIDENCE_SCHEMA_VERSION == "1.2"


def test_lane_evidence_reads_a_file_and_its_jobs(tmp_path: Path) -> None:
    job = {"job_spec": {"beads_id": "r-r1-gemini-0"}, "success": True}
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"run_id": "r", "passed": True, "rounds": [{"round_num": 1, "jobs": [job]}],
                                "exit_code": 0}))
    e = read_evidence(path)
    assert isinstance(e, LaneEvidence) and e.passed and e.exit_code == 0 and e.jobs() == [job]
    assert e["rounds"][0]["jobs"][0]["success"] is True and e.to_json()["run_id"] == "r"

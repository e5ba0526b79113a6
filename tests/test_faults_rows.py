"""Known values of the fault rows: the halt's exit code, a daemon that halted itself, the stop's exit code."""
from __future__ import annotations

import json
from typing import Any

import pandas as pd

from soaklib.analysis.criteria import CriterionRow
from soaklib.soak import faults


def halt_row() -> CriterionRow:
    return CriterionRow(metric="halt_s", label="halt", observed=0.02, unit="s", pass_bound=30.0, fail_bound=30.0,
                        status="PASS", note="", triage="", direction="max")


def events(*rows: tuple[str, float, dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([{"kind": k, "t_s": t, "message": "", "data": json.dumps(d)} for k, t, d in rows])


def test_the_halt_row_fails_on_an_exit_code_that_is_not_a_normal_stop() -> None:
    rows = [halt_row()]
    faults.judge_halt_exit(rows, {"exited": True, "forced": False, "returncode": 1})
    assert rows[0]["status"] == "FAIL" and "exit code 1 after the halt request" in rows[0]["note"]
    assert "normal_exit_codes" in rows[0]["triage"]
    for code, normal in ((0, None), (-15, None), (3, [0, 3])):
        rows = [halt_row()]
        faults.judge_halt_exit(rows, {"exited": True, "forced": False, "returncode": code}, normal)
        assert rows[0]["status"] == "PASS" and f"exit code {code} (normal stop)" in rows[0]["note"]
    rows = [halt_row()]
    faults.judge_halt_exit(rows, {"exited": True, "forced": False, "returncode": None})  # attached: unknown
    faults.judge_halt_exit(rows, {"exited": False, "forced": True, "returncode": -9})  # forced: its own FAIL
    assert rows[0]["status"] == "PASS" and rows[0]["note"] == ""


def test_halted_before_any_stop_request_is_a_daemon_halted_row() -> None:
    s = pd.DataFrame({"t_s": [0.0, 1.0, 2.0, 3.0], "daemon_state": ["RUNNING", "HALTED", "HALTED", "RUNNING"]})
    row = faults.daemon_halted_row(s, events(("halt_requested", 2.5, {})))
    assert row is not None and row["status"] == "FAIL" and "from 1.0 s" in row["note"] and "2 sample" in row["note"]
    asked = pd.DataFrame({"t_s": [0.0, 1.0, 2.0], "daemon_state": ["RUNNING", "RUNNING", "HALTED"]})
    assert faults.daemon_halted_row(asked, events(("halt_requested", 1.5, {}))) is None  # the soak asked
    last = pd.DataFrame({"t_s": [0.0, 1.0, 9.0], "daemon_state": ["RUNNING", "RUNNING", "HALTED"]})
    assert faults.daemon_halted_row(last, events(), last_words=True) is None  # after its exit
    assert faults.daemon_halted_row(last, events()) is not None
    assert faults.daemon_halted_row(pd.DataFrame({"t_s": [0.0]}), events()) is None  # no state file


def test_a_stop_by_the_harness_with_exit_code_1_is_a_stop_exit_code_row() -> None:
    stopped = {"exited": True, "forced": False, "returncode": 1, "halt_s": 0.1}
    row = faults.stop_exit_row(events(("target_stopped", 5.0, stopped)))
    assert row is not None and row["status"] == "FAIL" and row["observed"] == 1 and row["triage"]
    assert faults.stop_exit_row(events(("target_stopped", 5.0, stopped | {"returncode": -15}))) is None
    assert faults.stop_exit_row(events(("target_stopped", 5.0, stopped)), [0, 1]) is None
    assert faults.stop_exit_row(events(("target_stopped", 5.0, stopped | {"forced": True}))) is None
    assert faults.stop_exit_row(events()) is None


def test_end_notes_say_what_was_dropped_and_what_watching_cost() -> None:
    stats = {"bytes_total": 50 * 2**20, "bytes_dropped": 49 * 2**20, "rotations": 98, "first_rotation_s": 0.4,
             "write_error": None}
    costs = [(float(t), 0.5, 3 * 2**20, 12.0) for t in range(10)]
    notes = faults.output_notes(stats, 1.0, costs)
    assert "49.0 MiB of the target's 50.0 MiB" in notes[0] and "98 rotation(s) from 0 s" in notes[0]
    assert "up to 3.0 MiB of new log output" in notes[1] and "p50 12% of a core" in notes[1]
    assert faults.output_notes({}, 64.0, [(0.0, 0.4, 100, 1.0)]) == []  # a quiet run: nothing to say

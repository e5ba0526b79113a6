"""The WATCHER protocol profiles: request files, archive names, decision-log parsing."""
from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest

from soaklib.errors import ParameterError
from soaklib.watcher.decisions import Decision, DecisionCounters, classify, parse_decision_line, request_key
from soaklib.watcher.protocol import (
    PROFILES,
    build_request,
    get_profile,
    log_paths,
    parse_archive_name,
    scan_queue,
    write_request,
)

V2 = PROFILES["watcher-v2"]
PLAN = PROFILES["plan"]
STAMP = datetime(2026, 2, 3, 10, 0, 0, tzinfo=timezone.utc)


def test_profiles_carry_the_design_defaults():
    assert V2.archive_prefixed and not PLAN.archive_prefixed
    assert V2.request_types == {"selfplay": "selfplay_retrain", "learning_loop": "learning_loop"}
    assert PLAN.request_types == {"selfplay": "selfplay", "learning_loop": "learning_loop"}
    assert V2.halt_file == "/tmp/agent_halt" and not V2.halt_exits
    assert PLAN.halt_file == "watcher_halt.flag" and PLAN.halt_exits
    assert V2.log_file is None and PLAN.log_file == "logs/watcher_agent.log"
    assert V2.heuristic_in_log_regex and not V2.heuristic_in_decisions and PLAN.heuristic_in_decisions
    assert V2.expected_entries("selfplay") == 2 and V2.expected_entries("learning_loop") == 2
    assert PLAN.expected_entries("selfplay") == 1
    assert V2.routes_ok("selfplay", "ch13_request_selfplay_retrain") and not V2.routes_ok("learning_loop", "selfplay")


def test_profile_paths_absolute_and_relative(tmp_path):
    assert V2.path(tmp_path, "halt_file") == Path("/tmp/agent_halt")
    assert PLAN.path(tmp_path, "halt_file") == tmp_path / "watcher_halt.flag"
    assert V2.path(tmp_path, "log_file") is None
    assert log_paths(V2, tmp_path, tmp_path / "target.log") == [tmp_path / "target.log"]
    assert log_paths(PLAN, tmp_path, tmp_path / "target.log") == [tmp_path / "logs/watcher_agent.log"]


def test_get_profile_overrides_by_field_name():
    p = get_profile("watcher-v2", {"halt_file": "stop.flag", "batch_argv": ["--process-requests"],
                                   "routing": {"selfplay_retrain": ["selfplay"]}})
    assert p.halt_file == "stop.flag" and p.batch_argv == ("--process-requests",)
    assert p.routing == {"selfplay_retrain": frozenset({"selfplay"})}
    assert PROFILES["watcher-v2"].halt_file == "/tmp/agent_halt"  # the registry is untouched
    with pytest.raises(ParameterError, match=r"unknown profile field 'halt_flie'.*allowed fields are .*halt_file"):
        get_profile("watcher-v2", {"halt_flie": "x"})
    with pytest.raises(ParameterError, match="expected true or false"):
        get_profile("plan", {"halt_exits": "yes"})
    with pytest.raises(ParameterError, match="unknown protocol profile 'v3'"):
        get_profile("v3")


def test_request_bodies_per_profile():
    name, body = build_request(V2, "selfplay", 1, source="soak_test_B", episodes=2, stamp=STAMP, prefix="soak_B")
    assert name == "soak_B_01_20260203_100000.json"
    assert body["request_type"] == "selfplay_retrain" and body["episodes"] == 2 and "parameters" not in body
    assert body["source"] == "soak_test_B" and body["sequence_number"] == 1
    assert body["timestamp"] == "2026-02-03T10:00:00Z" and body["reason"]
    _, body = build_request(V2, "learning_loop", 6, source="s", scope="steps_3_5_6", stamp=STAMP)
    assert body["request_type"] == "learning_loop" and body["scope"] == "steps_3_5_6"
    _, body = build_request(PLAN, "selfplay", 3, source="s", episodes=2, extra={"policy_conditioned": True}, stamp=STAMP)
    assert body["request_type"] == "selfplay" and body["sequence_number"] == 3
    assert body["parameters"] == {"episodes": 2, "policy_conditioned": True} and "episodes" not in body
    _, body = build_request(V2, "pipeline_rerun", 1, source="s")  # the daemon's own names pass through
    assert body["request_type"] == "pipeline_rerun"
    with pytest.raises(ParameterError, match="allowed are"):
        build_request(V2, "retrain_everything", 1, source="s")
    with pytest.raises(ParameterError, match="width"):
        build_request(V2, "selfplay", 100, source="s")


def test_request_names_sort_in_sequence_order():
    names = [build_request(V2, "selfplay", i, source="s", stamp=STAMP, width=3)[0] for i in range(1, 120)]
    assert sorted(names) == names


def test_write_request_is_atomic_and_never_visible_half_written(tmp_path):
    folder = tmp_path / "watcher_requests"
    folder.mkdir()
    stop, seen, bad = threading.Event(), set(), []

    def reader():
        while not stop.is_set():
            for p in folder.glob("*.json"):
                try:
                    json.loads(p.read_text())
                    seen.add(p.name)
                except FileNotFoundError:
                    pass
                except ValueError:
                    bad.append(p.name)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(60):
            name, body = build_request(V2, "selfplay", i, source="s", episodes=2, extra={"pad": "x" * 20000})
            path = write_request(tmp_path, V2, name, body)
            assert json.loads(path.read_text()) == body
    finally:
        stop.set()
        t.join()
    assert not bad
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in folder.glob("*.json"))  # no temp left
    with pytest.raises(ParameterError):
        write_request(tmp_path, V2, "../escape.json", {})
    with pytest.raises(ParameterError):
        write_request(tmp_path, V2, "no_suffix", {})


@pytest.mark.parametrize(
    "filename,expected",
    [
        ("COMPLETED_20260203_100501_soak_B_01_20260203_100000.json", ("COMPLETED", "soak_B_01_20260203_100000.json")),
        ("REJECTED_BY_LLM_20260203_100501_x.json", ("REJECTED_BY_LLM", "x.json")),
        ("REJECTED_20260203_100501_x.json", ("REJECTED", "x.json")),
        ("UNKNOWN_TYPE_20260203_100501_a_b.json", ("UNKNOWN_TYPE", "a_b.json")),
        ("soak_B_01_20260203_100000.json", (None, "soak_B_01_20260203_100000.json")),
        ("COMPLETED_x.json", (None, "COMPLETED_x.json")),  # no stamp: not a prefix
        ("PENDING_20260203_100501_x.json", (None, "PENDING_20260203_100501_x.json")),  # unknown status
        ("COMPLETED_20260203_100501_x.1.json", ("COMPLETED", "x.json")),  # archived twice, not overwritten
        ("x.2.json", (None, "x.json")),
    ],
)
def test_parse_archive_name_with_and_without_prefix(filename, expected):
    assert parse_archive_name(V2, filename) == expected


def test_scan_queue(tmp_path):
    req = tmp_path / "watcher_requests"
    arc = req / "archive"
    arc.mkdir(parents=True)
    for n in ("b_02.json", "a_01.json"):
        (req / n).write_text("{}")
    (req / "c_03.json").write_text('{"request_type": ')  # half-written / corrupt
    (req / ".a_04.json.tmp").write_text("{}")  # a temp name is not pending
    (req / "notes.txt").write_text("")
    (arc / "COMPLETED_20260203_100501_x_00.json").write_text("{}")
    (arc / "COMPLETED_20260203_100502_x_00.json").write_text("{}")
    (arc / "INVALID_20260203_100503_y_00.json").write_text("")
    state = scan_queue(tmp_path, V2)
    assert state.pending == ["a_01.json", "b_02.json", "c_03.json"]
    assert state.corrupt == ["c_03.json"]
    assert state.archived["x_00.json"] == [
        ("COMPLETED", "COMPLETED_20260203_100501_x_00.json"),
        ("COMPLETED", "COMPLETED_20260203_100502_x_00.json"),
    ]
    assert state.archived_count == 3 and state.duplicates == {"x_00.json": 2}
    assert scan_queue(tmp_path / "nowhere", V2).pending == []


def test_parse_decision_line():
    assert parse_decision_line('{"a": 1}') == {"a": 1}
    assert parse_decision_line('{"a": 1') is None
    assert parse_decision_line("[1, 2]") is None
    assert parse_decision_line("") is None


V2_SELFPLAY = [
    {"timestamp": "t", "run_id": "r1", "dispatch_type": "selfplay", "status": "COMPLETED",
     "details": {"request_path": "watcher_requests/soak_B_01_x.json", "source": "soak_test_B"}},
    {"timestamp": "t", "run_id": "r1", "dispatch_type": "ch13_request_selfplay_retrain", "status": "COMPLETED",
     "details": {"request_path": "/abs/watcher_requests/soak_B_01_x.json", "source": "soak_test_B"}},
]
V2_LEARN = [
    {"dispatch_type": "learning_loop", "status": "COMPLETED", "details": {"request_path": "soak_B_06_x.json"}},
    {"dispatch_type": "ch13_request_learning_loop", "status": "COMPLETED", "details": {"request_path": "soak_B_06_x.json"}},
]
V2_STEP = {"step": 3, "step_name": "evaluate", "action": "proceed", "confidence": 0.8, "success": True,
           "parse_method": "heuristic", "timestamp": "t"}


def test_classify_both_v2_shapes_and_plan_shape():
    assert classify(V2_SELFPLAY[0], V2) == "dispatch"
    assert classify(V2_STEP, V2) == "step"
    assert classify({"foo": 1}, V2) == "other"
    plan_line = {"timestamp": "t", "sequence_number": 3, "source": "soak_test_B", "request_type": "selfplay",
                 "status": "COMPLETED", "dispatch_type": "selfplay"}
    assert classify(plan_line, PLAN) == "dispatch"
    assert classify({"sequence_number": 3, "request_type": "selfplay", "status": "COMPLETED"}, PLAN) == "dispatch"
    heuristic = {"timestamp": "t", "event": "heuristic_fallback", "reason": "LLM down"}
    assert classify(heuristic, PLAN) == "heuristic_fallback"
    assert classify(heuristic, V2) == "other"  # v2 has no such marker: its fallbacks are in the log
    assert request_key(V2_SELFPLAY[1]) == "soak_B_01_x.json" and request_key(plan_line) == "3"


def test_decision_counters_v2():
    c = DecisionCounters(profile=V2)
    autonomous = {"dispatch_type": "selfplay", "status": "COMPLETED", "details": {"source": "autonomous"}}
    unknown = {"dispatch_type": "ch13_request_frobnicate", "status": "UNKNOWN_TYPE",
               "details": {"request_path": "soak_B_11_x.json", "source": "soak_test_B"}}
    for entry in V2_SELFPLAY + V2_LEARN + [autonomous, unknown, V2_STEP, None]:
        c.update(Decision.parse(json.dumps(entry) if entry is not None else "{broken", V2))
    assert (c.lines, c.bad_lines, c.completed) == (8, 1, 5)
    assert (c.dispatch_selfplay, c.dispatch_learning, c.unknown_type) == (2, 1, 1)
    assert (c.steps, c.heuristic_steps, c.heuristic_fallback) == (1, 1, 0)
    assert c.entries == {"soak_B_01_x.json": 2, "soak_B_06_x.json": 2, "soak_B_11_x.json": 1}
    assert c.dispatch_types["soak_B_06_x.json"] == ["learning_loop", "ch13_request_learning_loop"]
    assert c.by_source["soak_test_B"] == 3 and c.by_source["autonomous"] == 1
    row = c.as_row()
    assert row["decision_lines"] == 8 and row["dispatch_selfplay"] == 2


def test_decision_counters_plan_duplicates_and_fallbacks():
    c = DecisionCounters(profile=PLAN)
    lines = [
        {"sequence_number": 1, "source": "soak_test_B", "request_type": "selfplay", "status": "COMPLETED", "dispatch_type": "selfplay"},
        {"sequence_number": 2, "source": "soak_test_B", "request_type": "learning_loop", "status": "completed", "dispatch_type": "learning_loop"},
        {"sequence_number": 2, "source": "soak_test_B", "request_type": "learning_loop", "status": "completed", "dispatch_type": "learning_loop"},
        {"event": "heuristic_fallback", "reason": "timeout"},
    ]
    lines.append({"sequence_number": 4, "source": "soak_test_B", "request_type": "frobnicate",
                  "status": "UNKNOWN_TYPE", "dispatch_type": None})
    for text in [json.dumps(x) for x in lines] + ["not json"]:
        c.update(Decision.parse(text, PLAN))
    assert (c.lines, c.bad_lines, c.completed, c.heuristic_fallback, c.unknown_type) == (6, 1, 3, 1, 1)
    assert (c.dispatch_selfplay, c.dispatch_learning) == (1, 2)
    assert c.entries == {"1": 1, "2": 2, "4": 1} and c.dispatch_types["4"] == ["frobnicate"]
    assert {k for k, n in c.entries.items() if n > PLAN.expected_entries("learning_loop")} == {"2"}


def test_plan_profile_also_reads_prefixed_archive_names():
    name = f"COMPLETED_{STAMP.strftime('%Y%m%d_%H%M%S')}_req.json"
    assert parse_archive_name(PLAN, name) == ("COMPLETED", "req.json")
    assert parse_archive_name(PLAN, "req.json") == (None, "req.json")

"""The protocol check against the reference daemon (real processes) and hand-made answers."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from soaklib.errors import ProtocolError
from soaklib.watcher.check import PROBE_SOURCE, ProtocolCheck, is_probe_entry, timeout_for
from soaklib.watcher.decisions import Decision
from soaklib.watcher.protocol import PROFILES, get_profile

DEAD_LLM = "http://127.0.0.1:9"


def daemon(procs: list, project: Path, *extra: str, profile: str = "watcher-v2") -> subprocess.Popen:
    err = open(project.parent / f"{project.name}.stderr", "wb")  # noqa: SIM115 (the daemon's stderr, closed with it)
    p = subprocess.Popen([sys.executable, "-m", "soaklib.sim.watcher", "--project-dir", str(project), "--daemon",
                          "--poll-s", "0.1", "--profile", profile, "--halt-file", str(project / "agent_halt"),
                          "--llm-url", DEAD_LLM, "--llm-timeout-s", "0.5", *extra],
                         stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    err.close()
    procs.append(p)
    return p


@pytest.fixture
def project(tmp_path: Path) -> Path:
    p = tmp_path / "project"
    p.mkdir()
    return p


def test_v2_profile_against_v2_daemon_passes(procs, project):
    daemon(procs, project)
    check = ProtocolCheck(project, PROFILES["watcher-v2"], timeout_s=20)
    result = check.run()
    assert result is not None and result.status == "COMPLETED"
    assert result.request_name.startswith("soak_check_00_") and result.request_type == "selfplay_retrain"
    assert result.decision_lines == 2 and result.handled_times == 1
    assert sorted(result.dispatch_types) == ["ch13_request_selfplay_retrain", "selfplay"]
    assert result.archive_names[0].startswith("COMPLETED_")
    body = json.loads((project / "watcher_requests" / "archive" / result.archive_names[0]).read_text())
    assert body["episodes"] == 1 and body["source"] == PROBE_SOURCE


def test_plan_profile_against_plan_daemon_passes(procs, project):
    daemon(procs, project, profile="plan")
    result = ProtocolCheck(project, PROFILES["plan"], timeout_s=20).run()
    assert result is not None and result.status == "COMPLETED" and result.decision_lines == 1
    assert result.archive_names == [result.request_name]


def test_plan_profile_against_v2_daemon_names_unknown_type_and_the_fix(procs, project):
    daemon(procs, project)
    t0 = time.monotonic()
    with pytest.raises(ProtocolError) as err:
        ProtocolCheck(project, PROFILES["plan"], timeout_s=20).run()
    msg = str(err.value)
    assert time.monotonic() - t0 < 10
    assert "archived soak_check_00_" in msg and "as UNKNOWN_TYPE" in msg
    assert "request_type 'selfplay'" in msg and "watcher-v2 daemon" in msg and "profile: watcher-v2" in msg
    assert "request_types.selfplay=selfplay_retrain" in msg
    assert err.value.exit_code == 1


def test_unknown_types_daemon_is_stopped_with_the_setting_to_change(procs, project):
    daemon(procs, project, "--unknown-types")
    with pytest.raises(ProtocolError, match=r"UNKNOWN_TYPE.*'selfplay_retrain'.*profile: plan.*request_types\.selfplay"):
        ProtocolCheck(project, PROFILES["watcher-v2"], timeout_s=20).run()


def test_duplicated_probe_is_noted_not_failed(procs, project):
    daemon(procs, project, "--duplicate-every", "1")
    result = ProtocolCheck(project, PROFILES["watcher-v2"], timeout_s=20).run()
    assert result is not None and result.handled_times == 2
    assert any("handled 2 times" in n for n in result.notes)


def test_batch_mode_kick_processes_the_probe(project):
    argv = [sys.executable, "-m", "soaklib.sim.watcher", "--project-dir", str(project), "--process-requests",
            "--llm-url", DEAD_LLM, "--llm-timeout-s", "0.5", "--halt-file", str(project / "agent_halt")]
    kicks = []

    def kick() -> None:
        if not kicks:
            kicks.append(subprocess.run(argv, capture_output=True, timeout=30).returncode)

    result = ProtocolCheck(project, PROFILES["watcher-v2"], timeout_s=20).run(kick=kick)
    assert kicks == [0] and result is not None and result.status == "COMPLETED"


def test_nobody_picks_up_the_probe(project):
    check = ProtocolCheck(project, PROFILES["watcher-v2"], timeout_s=0.3)
    with pytest.raises(ProtocolError, match=r"did not pick up soak_check_00_.*within 0.3 s.*still pending.*requests_dir"):
        check.run(poll_s=0.05)


def _answer(project: Path, check: ProtocolCheck, archive_name: str, lines: list[str]) -> None:
    src = project / "watcher_requests" / check.name
    (project / "watcher_requests" / "archive").mkdir(exist_ok=True)
    with (project / "watcher_decisions.jsonl").open("a") as fh:
        fh.writelines(line + "\n" for line in lines)
    src.rename(project / "watcher_requests" / "archive" / archive_name)


def test_unparseable_decision_log_stops_the_soak(project):
    (project / "watcher_decisions.jsonl").write_text('{"old": "history"}\n')
    check = ProtocolCheck(project, PROFILES["watcher-v2"], timeout_s=5, settle_s=0.1)
    check.start()
    _answer(project, check, f"COMPLETED_20260203_100000_{check.name}", ["dispatched selfplay OK", "done"])
    with pytest.raises(ProtocolError, match=r"does not parse as JSON lines \(2 bad line\(s\).*decision_log="):
        check.run(poll_s=0.02)


def test_archive_without_a_decision_line(project):
    check = ProtocolCheck(project, PROFILES["watcher-v2"], timeout_s=5, settle_s=0.1)
    check.start()
    _answer(project, check, f"COMPLETED_20260203_100000_{check.name}", ['{"step": 1, "action": "proceed"}'])
    with pytest.raises(ProtocolError, match=r"wrote no decision line naming it in watcher_decisions.jsonl"):
        check.run(poll_s=0.02)


def test_wrong_entry_count_names_entries_per_request(project):
    check = ProtocolCheck(project, PROFILES["watcher-v2"], timeout_s=5, settle_s=0.1)
    check.start()
    line = {"run_id": "r", "dispatch_type": "ch13_request_selfplay_retrain", "status": "COMPLETED",
            "details": {"request_path": f"watcher_requests/{check.name}", "source": PROBE_SOURCE}}
    _answer(project, check, f"COMPLETED_20260203_100000_{check.name}", [json.dumps(line)])
    with pytest.raises(ProtocolError, match=r"wrote 1 decision line.*expects 2.*entries_per_request\.selfplay_retrain=1"):
        check.run(poll_s=0.02)


def test_unrouted_dispatch_type_names_routing(project):
    check = ProtocolCheck(project, get_profile("watcher-v2"), timeout_s=5, settle_s=0.1)
    check.start()
    lines = [{"run_id": "r", "dispatch_type": t, "status": "COMPLETED",
              "details": {"request_path": check.name, "source": PROBE_SOURCE}} for t in ("sp_v3", "sp_v3_record")]
    _answer(project, check, f"COMPLETED_20260203_100000_{check.name}", [json.dumps(x) for x in lines])
    with pytest.raises(ProtocolError, match=r"does not route; set profile_overrides.routing\.selfplay_retrain="):
        check.run(poll_s=0.02)


def test_archive_under_an_unknown_status_prefix(project):
    check = ProtocolCheck(project, PROFILES["watcher-v2"], timeout_s=0.5, settle_s=0.1)
    check.start()
    _answer(project, check, f"DONE-{check.name}", [])
    with pytest.raises(ProtocolError, match=r"left DONE-soak_check_00_.*archive_prefixed / archive_statuses"):
        check.run(poll_s=0.05)


def test_probe_entries_and_bound():
    def d(entry: dict) -> Decision:
        return Decision.parse(json.dumps(entry), PROFILES["watcher-v2"])

    assert is_probe_entry(d({"details": {"source": PROBE_SOURCE}}))
    assert is_probe_entry(d({"source": PROBE_SOURCE, "sequence_number": 0}))
    assert is_probe_entry(d({"details": {"request_path": "/x/soak_check_00_1.json"}}), "soak_check_00_1.json")
    assert not is_probe_entry(d({"details": {"source": "soak_test_B", "request_path": "soak_B_01.json"}}))
    assert timeout_for(False, {}) == 45.0
    assert timeout_for(True, {}) == 10.0 and timeout_for(True, {"poll_s": 30}) == 90.0

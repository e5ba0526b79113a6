"""Soak B on the reference daemon (real processes): queue integrity, fault knobs, protocol check."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from soaklib.errors import ParameterError, ProtocolError
from soaklib.params import SoakParams, load_params
from soaklib.runs import load_run
from soaklib.soak.drivers.ledger import PLAN_MIX, QueueLedger, Staged, expand_mix
from soaklib.soak.drivers.queue import QueueSoak
from soaklib.soak.harness import run_soak
from soaklib.store import read_table
from soaklib.watcher.decisions import Decision
from soaklib.watcher.protocol import PROFILES, QueueState

V2 = PROFILES["watcher-v2"]


def params(tmp_path: Path, **over: Any) -> SoakParams:
    sim = {"poll_s": 0.1, **over.pop("sim", {})}
    base = {"soak": "b", "output_dir": str(tmp_path / "out"), "duration_s": 60, "drain_timeout_s": 30,
            "sampling": {"interval_s": 0.3, "flush_s": 2, "health_interval_s": 1}, "sim": sim}
    return load_params(SoakParams, overrides={**base, **over})


def signoff(run_dir: Path) -> dict[str, Any]:
    from soaklib.report.signoff import build_signoff

    return build_signoff(load_run(run_dir))


def rows(s: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["metric"]: r for r in s["criteria"]}


def observations(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "observations.json").read_text())


def test_plan_mix_on_the_reference_daemon_passes(tmp_path):
    result = run_soak(params(tmp_path, run_id="b-pass"))
    s = signoff(result.run_dir)
    r = rows(s)
    assert s["verdict"] == "PASS", s["criteria"]
    assert r["archived"]["observed"] == 10 and r["archived"]["pass_bound"] == 10
    assert r["pending"]["observed"] == 0 and r["duplicates"]["observed"] == 0
    assert r["misrouted"]["observed"] == 0 and r["decision_entries"]["observed"] == 10
    obs = observations(result.run_dir)["observations"]
    assert obs["fifo_ok"] and obs["statuses"] == {"COMPLETED": 10} and obs["probe_lines"] == 2
    assert obs["protocol_check"]["status"] == "COMPLETED"
    table = read_table(result.run_dir / "requests.parquet")
    assert list(table["seq"]) == list(range(1, 11)) and list(table["dispatch_rank"]) == list(range(1, 11))
    assert list(table["logical_type"]) == ["selfplay"] * 5 + ["learning_loop"] * 3 + ["selfplay"] * 2
    assert list(table["episodes"][:5]) == [2, 3, 2, 1, 2] and table["name"][0].startswith("soak_B_01_")
    archived = sorted((result.run_dir / "project" / "watcher_requests" / "archive").iterdir())
    body = json.loads(next(p for p in archived if "soak_B_06_" in p.name).read_text())
    assert body["request_type"] == "learning_loop" and body["scope"] == "steps_3_5_6"


def test_duplicates_fail_naming_the_requests(tmp_path):
    result = run_soak(params(tmp_path, sim={"duplicate_every": 3}))
    s = signoff(result.run_dir)
    assert s["verdict"] == "FAIL" and rows(s)["duplicates"]["status"] == "FAIL"
    assert rows(s)["archived"]["status"] == "PASS"
    details = observations(result.run_dir)["observations"]["details"]["duplicates"]
    # the probe is dispatch 1: requests 02, 05 and 08 are dispatches 3, 6 and 9
    assert [d.split("_")[2] for d in details] == ["02", "05", "08"]
    assert all("handled 2 times" in d for d in details)
    assert s["observed"]["details"]["duplicates"] == details


def test_misrouting_fails(tmp_path):
    result = run_soak(params(tmp_path, sim={"misroute": True}))
    s = signoff(result.run_dir)
    assert rows(s)["misrouted"]["status"] == "FAIL" and rows(s)["misrouted"]["observed"] == 3
    details = observations(result.run_dir)["observations"]["details"]["misrouted"]
    assert all("(learning_loop → selfplay)" in d for d in details)


def test_unknown_types_stop_the_soak_in_the_first_minute(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(ProtocolError) as err:
        run_soak(params(tmp_path, run_id="b-unknown", sim={"unknown_types": True}))
    assert time.monotonic() - t0 < 60
    msg = str(err.value)
    assert "UNKNOWN_TYPE" in msg and "profile: plan" in msg and "request_types.selfplay" in msg
    run_dir = tmp_path / "out" / "b-unknown"
    obs = observations(run_dir)
    assert obs["error"].startswith("ProtocolError") and not obs["reset"]["target_left_running"]
    assert not list((run_dir / "project" / "watcher_requests").glob("soak_B_*.json"))  # nothing staged


def test_plan_profile_against_a_watcher_v2_daemon(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    argv = [sys.executable, "-m", "soaklib.sim.watcher", "--project-dir", str(project), "--daemon",
            "--poll-s", "0.1", "--halt-file", str(project / "stop.flag"), "--llm-url", "http://127.0.0.1:9",
            "--llm-timeout-s", "0.3"]
    p = params(tmp_path, sim={}, profile="plan", project_dir=str(project),
               target={"command": argv, "halt": {"method": "signal"}}, run_id="b-plan-v2", force=True)
    p.sim = {}
    t0 = time.monotonic()
    with pytest.raises(ProtocolError, match=r"as UNKNOWN_TYPE.*watcher-v2 daemon.*profile: watcher-v2.*"
                                            r"request_types\.selfplay=selfplay_retrain"):
        run_soak(p)
    assert time.monotonic() - t0 < 60


def test_plan_profile_on_a_plan_daemon_matches_by_sequence_number(tmp_path):
    result = run_soak(params(tmp_path, profile="plan"))
    s = signoff(result.run_dir)
    assert s["verdict"] == "PASS", s["criteria"]
    obs = observations(result.run_dir)["observations"]
    assert obs["decision_entries"] == 10 and obs["fifo_ok"]


def test_corrupt_request_is_reported_not_fatal(tmp_path):
    project = tmp_path / "project"
    (project / "watcher_requests").mkdir(parents=True)
    (project / "watcher_requests" / "aaa_broken.json").write_text('{"request_type": "selfplay_retrain", ')
    result = run_soak(params(tmp_path, project_dir=str(project),
                             requests=[{"request_type": "selfplay", "count": 3, "episodes": 1}]))
    obs = observations(result.run_dir)["observations"]
    assert obs["corrupt_requests"] == ["aaa_broken.json"] and obs["staged"] == 3 and obs["archived"] == 3
    assert signoff(result.run_dir)["verdict"] == "PASS"


def test_batch_mode_runs_passes_until_the_queue_drains(tmp_path):
    # the daemon's own loop never handles requests (stalled from 0 s): only batch passes do
    p = params(tmp_path, sim={"stall_queue_after_s": 0}, requests=[{"request_type": "learning_loop", "count": 2}])
    driver = QueueSoak(batch_argv=["--process-requests"])
    result = run_soak(p, driver=driver)
    obs = observations(result.run_dir)["observations"]
    assert obs["archived"] == 2 and obs["batch"]["passes"] >= 2 and set(obs["batch"]["returncodes"]) == {0}
    assert signoff(result.run_dir)["verdict"] == "PASS"


def test_drain_timeout_ends_the_soak_with_pending_requests(tmp_path):
    p = params(tmp_path, sim={"stall_queue_after_s": 0}, drain_timeout_s=1.0,
               requests=[{"request_type": "selfplay", "count": 2, "episodes": 1}])
    result = run_soak(p, driver=QueueSoak(check_protocol=False))
    obs = observations(result.run_dir)["observations"]
    assert obs["drain_timeout"] and obs["pending"] == 2 and obs["archived"] == 0
    s = signoff(result.run_dir)
    assert rows(s)["pending"]["status"] == "FAIL" and rows(s)["archived"]["status"] == "FAIL"


def test_expand_mix_cycles_lists_and_refuses_bad_items():
    specs = expand_mix(PLAN_MIX, PROFILES["watcher-v2"])
    assert [s.episodes for s in specs] == [2, 3, 2, 1, 2, None, None, None, 2, 3]
    assert specs[0].extra == {"policy_conditioned": True} and specs[5].scope == "steps_3_5_6"
    two = expand_mix([{"request_type": "pipeline_rerun", "count": 2, "dry_run": True}], PROFILES["watcher-v2"])
    assert len(two) == 2 and two[1].extra == {"dry_run": True}
    with pytest.raises(ParameterError, match=r"request type 'retrain' is unknown.*allowed"):
        expand_mix([{"request_type": "retrain"}], PROFILES["watcher-v2"])
    with pytest.raises(ParameterError, match=r"requests\[0\]\.count = 0"):
        expand_mix([{"request_type": "selfplay", "count": 0}], PROFILES["watcher-v2"])
    with pytest.raises(ParameterError, match=r"requests\[0\]\.episodes"):
        expand_mix([{"request_type": "selfplay", "episodes": "two"}], PROFILES["watcher-v2"])


def _line(name: str, dtype: str, status: str = "COMPLETED") -> str:
    return json.dumps({"run_id": "r", "dispatch_type": dtype, "status": status,
                       "details": {"request_path": f"/p/watcher_requests/{name}", "source": "soak_test_B"}})


def test_ledger_fifo_duplicates_and_missing_lines():
    ledger = QueueLedger(PROFILES["watcher-v2"])
    names = [f"soak_B_0{i}_x.json" for i in (1, 2, 3)]
    for i, n in enumerate(names, start=1):
        ledger.add(Staged(i, n, "selfplay", "selfplay_retrain", 1, None, 0.0))
    for n in (names[1], names[0], names[0], names[2]):  # 02 first, 01 twice, 03 with one line only
        ledger.observe(Decision.parse(_line(n, "selfplay"), V2), 1.0)
        if n != names[2]:
            ledger.observe(Decision.parse(_line(n, "ch13_request_selfplay_retrain"), V2), 1.0)
    ledger.observe(Decision.parse("not json", V2), 1.0)
    ledger.observe_queue(QueueState(pending=[], archived={n: [("COMPLETED", f"COMPLETED_x_{n}")] for n in names}), 2.0)
    obs = ledger.observations()
    assert obs["archived"] == 3 and obs["duplicates"] == 1 and obs["decision_entries"] == 2
    assert not obs["fifo_ok"] and obs["details"]["fifo"] == [f"{names[0]} dispatched after {names[1]}"]
    assert obs["details"]["decision_entries"] == [f"{names[2]}: 1 of 2 line(s)"] and obs["decision_bad_lines"] == 1

"""Soak C on the real system's layout (csys): the reference orchestrator and WATCHER daemon as
two real processes — cycles from the history file, merged flags, per-process rows, restores."""
from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psutil
import pytest

from soaklib.errors import ParameterError, ProtocolError
from soaklib.params import SoakParams, load_params
from soaklib.prng import draw_values
from soaklib.runs import load_run
from soaklib.soak.harness import run_soak
from soaklib.watcher.orchestrator import Cycle, Injection, account_draws

SEED = 12345
ORCH = {"name": "orchestrator", "sim": {"poll_interval": 0.2}}
WATCHER = {"name": "watcher", "sim": {"poll_s": 0.2}}
V2_POLICIES = {"auto_approve_in_test_mode": True, "approval_route": "watcher"}
V1_POLICIES = {"auto_approve_in_test_mode": True, "approval_route": "orchestrator"}


def params(tmp_path: Path, **over: Any) -> SoakParams:
    base = {"soak": "csys", "output_dir": str(tmp_path / "out"), "duration_s": 7, "warmup_s": 1,
            "llm": {"health_url": None}, "sampling": {"interval_s": 0.25, "flush_s": 1},
            "injection": {"interval_s": 0.7, "bootstrap_draws": 200}, "policies": V2_POLICIES,
            "targets": [ORCH, WATCHER]}
    return load_params(SoakParams, overrides={**base, **over})


def signoff(run_dir: Path) -> tuple[dict[str, dict[str, Any]], str]:
    from soaklib.report.signoff import build_signoff

    s = build_signoff(load_run(run_dir))
    return {r["metric"]: r for r in s["criteria"]}, s["verdict"]


def observations(run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run_dir / "observations.json").read_text())["observations"]
    return data


def operator_project(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """An operator's project: history, policies (production values) and a shipped cycle history."""
    project = tmp_path / "operator"
    project.mkdir()
    draws = [{"date": "2024-01-01", "session": "midday", "draw": [0, 0, v % 10], "value": v,
              "draw_source": "synthetic_bootstrap", "true_seed": SEED} for v in draw_values(SEED, 200)]
    (project / "lottery_history.json").write_text(json.dumps({"draws": draws}, indent=2))
    (project / "watcher_policies.json").write_text(json.dumps(
        {"test_mode": False, "auto_approve_in_test_mode": False, "approval_route": "orchestrator",
         "synthetic_injection": {"enabled": False, "true_seed": SEED, "interval_seconds": 60}}, indent=4))
    old = [json.dumps({"cycle_id": f"cycle_20260101_0000{i:02d}", "outcome": "pending_approval"}) for i in range(7)]
    (project / "chapter13_cycle_history.jsonl").write_text("\n".join(old) + "\n")
    names = ("lottery_history.json", "watcher_policies.json")
    return project, {n: (project / n).read_bytes() for n in names}


def halted_pids(run_dir: Path) -> list[int]:
    return [h["pid"] for h in observations(run_dir)["halts"]]


def test_v2_layout_counts_cycles_from_the_history_and_judges_each_process(tmp_path: Path) -> None:
    project, before = operator_project(tmp_path)
    res = run_soak(params(tmp_path, run_id="v2", project_dir=str(project)))
    rows, _ = signoff(res.run_dir)
    o = observations(res.run_dir)
    appended = (project / "chapter13_cycle_history.jsonl").read_text().splitlines()[7:]
    assert o["cycles"] == len(appended) >= 5, "cycles are the lines the soak appended (7 old lines left out)"
    assert o["layout"] == "v2" and o["protocol_check"]["outcome"] == "pending_approval"
    assert o["draws_injected"] >= 8 and o["draws_lost"] == 0 and rows["draws_ingested_delta"]["status"] == "PASS"
    assert o["approvals_completed"] >= 3 and o["dispatches"] == o["approvals_completed"]
    assert rows["double_executions"]["observed"] == 0 and rows["escalations"]["status"] == "PASS"
    for name in ("orchestrator", "watcher"):
        for metric in ("memory_growth_mb", "fd_range", "threads_range", "errors", "halt_s"):
            assert rows[f"{name}_{metric}"]["observed"] is not None, f"{name}_{metric} not observed"
        assert rows[f"{name}_halt_s"]["status"] == "PASS"
    assert [h["name"] for h in o["halts"]] == ["watcher", "orchestrator"], "halted in reverse start order"
    samples = load_run(res.run_dir).samples
    assert samples["proc_orchestrator_tree_rss_bytes"].notna().sum() > 10
    assert samples["proc_watcher_tree_rss_bytes"].notna().sum() > 10
    assert (samples["tree_rss_bytes"] == samples["proc_orchestrator_tree_rss_bytes"]).mean() > 0.5
    for name, data in before.items():
        assert (project / name).read_bytes() == data, f"{name} not restored byte for byte"
    assert not (project / "new_draw.flag").exists() and not (project / "pending_approval.json").exists()
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                   for p in halted_pids(res.run_dir)), "a process was left behind"
    # seconds-long runs judge memory against bounds scaled from 2 h (a fraction of a MiB): left out here
    assert not {k: r["status"] for k, r in rows.items() if r["status"] != "PASS" and "memory" not in k}
    assert rows["pending"]["observed"] == 0


def test_v1_layout_reports_flags_merged_into_slow_cycles(tmp_path: Path) -> None:
    orch = {"name": "orchestrator", "sim": {"poll_interval": 0.2, "cycle_s": 1.0}}
    res = run_soak(params(tmp_path, run_id="v1", targets=[orch], policies=V1_POLICIES,
                          injection={"interval_s": 0.35, "bootstrap_draws": 200}))
    rows, _ = signoff(res.run_dir)
    o = observations(res.run_dir)
    assert o["layout"] == "v1" and "watcher_halt_s" not in rows
    assert o["draws_merged"] >= 3, "injections faster than a cycle merge into it"
    assert o["draws_lost"] == 0 and rows["draws_lost"]["status"] == "PASS"
    assert o["draws_ingested"] + o["draws_pending"] == o["draws_injected"]
    assert o["cycles"] < o["draws_injected"] and o["cycles_without_new_draws"] == 0
    assert o["auto_executed"] >= 1 and rows["dispatches"]["status"] == "PASS"
    assert rows["double_executions"]["status"] == "SKIP" and rows["approvals_stuck"]["status"] == "SKIP"
    assert rows["orchestrator_memory_growth_mb"]["observed"] is not None
    from soaklib.report.signoff import build_signoff

    assert build_signoff(load_run(res.run_dir))["provenance"]["description"] == \
        "processes orchestrator (the reference program)"


def test_planted_faults_fail_their_rows_with_triage(tmp_path: Path) -> None:
    orch = {"name": "orchestrator", "sim": {"poll_interval": 0.2, "keep_flag": True, "raise_every": 3,
                                            "escalate_every": 2, "llm_down": True}}
    res = run_soak(params(tmp_path, run_id="faults", duration_s=5, targets=[orch], policies=V1_POLICIES))
    rows, verdict = signoff(res.run_dir)
    assert verdict == "FAIL"
    for metric, word in (("cycles_without_new_draws", "new_draw.flag"), ("cycle_errors", "error"),
                         ("orchestrator_errors", "traceback"), ("escalations", "escalat"),
                         ("heuristic_fallbacks", "LLM")):
        assert rows[metric]["status"] == "FAIL", (metric, rows[metric])
        assert word in rows[metric]["triage"], (metric, rows[metric]["triage"])
    assert observations(res.run_dir)["cycle_error_texts"][0].startswith("simulated failure")


def test_protocol_check_names_a_paused_orchestrator(tmp_path: Path) -> None:
    project = tmp_path / "paused"
    project.mkdir()
    (project / ".chapter13_halt").write_text("paused by the operator\n")
    with pytest.raises(ProtocolError, match=r"chapter13_halt") as err:
        run_soak(params(tmp_path, run_id="paused", project_dir=str(project), targets=[ORCH], force=True,
                        policies=V1_POLICIES))
    assert err.value.what == "no_cycle"
    assert (project / ".chapter13_halt").exists(), "the operator's halt file is left as it was"


def test_protocol_check_names_a_daemon_that_never_reads_the_approval(tmp_path: Path) -> None:
    project = tmp_path / "deaf"
    project.mkdir()
    deaf = {"name": "watcher", "command": [sys.executable, "-m", "soaklib.sim.watcher", "--project-dir", str(project),
                                           "--daemon", "--no-draws", "--poll-s", "0.2", "--halt-file",
                                           str(project / "agent_halt")]}
    with pytest.raises(ProtocolError, match=r"auto_approve_in_test_mode") as err:
        run_soak(params(tmp_path, run_id="deaf", project_dir=str(project), targets=[ORCH, deaf]))
    assert err.value.what == "approval_unread"


def test_bad_targets_are_refused_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="no reference program"):
        run_soak(params(tmp_path, targets=[{"name": "scheduler"}]))
    with pytest.raises(ParameterError, match="unknown knob"):
        run_soak(params(tmp_path, targets=[{"name": "orchestrator", "sim": {"poll_s": 1}}]))
    with pytest.raises(ParameterError, match="twice"):
        params(tmp_path, targets=[ORCH, ORCH])


def _cycle(n: int, start: datetime, dur_s: float = 0.5) -> Cycle:
    return Cycle(f"cycle_{n}", "pending_approval", start, start + timedelta(seconds=dur_s), f"draw_{n}",
                 "hit_rate_collapse", False, None)


def test_draw_account_known_values() -> None:
    t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    at = [t + timedelta(seconds=s) for s in (0, 1.0, 1.2, 1.4, 3.0, 9.9, 20.0)]
    inj = [Injection(101 + k, a) for k, a in enumerate(at)]
    cycles = [_cycle(101, at[0] + timedelta(seconds=0.1), 1.5),  # reads 101; 102 and 103 come while it runs
              _cycle(104, at[3] + timedelta(seconds=0.1)),  # reads up to 104: 102, 103 merged, 104 ingested
              _cycle(105, at[4] + timedelta(seconds=0.1)),
              _cycle(105, at[4] + timedelta(seconds=1.0))]  # nothing new: an idle cycle (flag not deleted)
    acc = account_draws(inj, cycles, start_length=100, end=t + timedelta(seconds=21), grace_s=2.0)
    assert acc.status == ["ingested", "merged", "merged", "ingested", "ingested", "lost", "pending"]
    assert acc.cycles_without_new_draws == 1
    assert acc.to_dict() | {} == {"ingested": 3, "merged": 2, "pending": 1, "lost": 1, "cycles_without_new_draws": 1}


@pytest.mark.parametrize("name", ["soak_c_v1.yaml", "soak_c_v2.yaml", "soak_c_v1_demo.yaml", "soak_c_v2_demo.yaml"])
def test_parameter_files_plan(tmp_path: Path, name: str) -> None:
    from soaklib.soak.plan import plan_run

    p = load_params(SoakParams, Path(__file__).parent.parent / "parameters" / name,
                    overrides={"output_dir": str(tmp_path)})
    plan = plan_run(p)
    assert p.soak == "csys" and p.targets[0].name == "orchestrator"
    assert plan.reference == name.endswith("_demo.yaml")
    assert p.policies["test_mode"] is True and "auto_approve_in_test_mode" in p.policies


def test_an_attached_orchestrator_is_soaked_and_halted(tmp_path: Path) -> None:
    import subprocess

    from soaklib.watcher.draws import bootstrap_history

    project = tmp_path / "running"
    project.mkdir()
    bootstrap_history(project, 200, seed=SEED)
    proc = subprocess.Popen([sys.executable, "-m", "soaklib.sim.orchestrator", "--project-dir", str(project),
                             "--daemon", "--no-llm", "--poll-interval", "0.2", "--halt-file", str(project / "agent_halt")],
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        res = run_soak(params(tmp_path, run_id="attached", duration_s=4, project_dir=str(project),
                              targets=[{"name": "orchestrator", "pid": proc.pid, "halt": {"timeout_s": 5}}],
                              policies=V1_POLICIES))
        assert proc.wait(timeout=5) == 0, "the attached orchestrator was halted by SIGTERM"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    o = observations(res.run_dir)
    assert o["cycles"] >= 2 and o["outcomes"].get("pending_approval", 0) >= 1  # --no-llm: approval requested
    assert o["halts"][0]["name"] == "orchestrator" and o["halts"][0]["halt_s"] is not None
    rows, _ = signoff(res.run_dir)
    assert rows["orchestrator_memory_growth_mb"]["observed"] is not None


def test_a_group_that_fails_to_start_leaves_nothing_running(tmp_path: Path) -> None:
    from soaklib.errors import TargetError
    from soaklib.proc.targets import ProcessSpec, TargetGroup

    first = ProcessSpec("first", [sys.executable, "-c", "import time; time.sleep(30)"], tmp_path)
    with pytest.raises(TargetError, match="does-not-exist"):
        TargetGroup.start([first, ProcessSpec("second", ["does-not-exist"], tmp_path)])
    alive = [p for p in psutil.process_iter(["cmdline"]) if "time.sleep(30)" in " ".join(p.info["cmdline"] or [])
             and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, "the first process was left running"
    group = TargetGroup.start([first, ProcessSpec("second", [sys.executable, "-c", "import time; time.sleep(30)"],
                                                  tmp_path, halt_timeout_s=5)])
    with group:
        halts = group.halt_all(tmp_path)
    assert [h.name for h in halts] == ["second", "first"] and all(h.result.exited for h in halts)


SIGINT_SCRIPT = """
import json, sys
from soaklib.params import SoakParams, load_params
from soaklib.soak.harness import run_soak
r = run_soak(load_params(SoakParams, overrides=json.loads(sys.argv[1])))
print("interrupted" if r.interrupted else "finished", flush=True)
"""


def left_running(project: Path, harness: int | None = None) -> list[int]:
    """Processes still running whose command line names the project folder (the harness apart)."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if p.pid != harness and str(project) in " ".join(p.info["cmdline"] or []) and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except psutil.Error:
            continue
    return out


def test_ctrl_c_and_a_crash_stop_every_process_and_restore(tmp_path: Path) -> None:
    import signal
    import subprocess
    import time

    project, before = operator_project(tmp_path)
    over = {"soak": "csys", "run_id": "int", "output_dir": str(tmp_path / "out"), "duration_s": 60,
            "project_dir": str(project), "llm": {"health_url": None}, "policies": V2_POLICIES,
            "sampling": {"interval_s": 0.25, "flush_s": 0.5}, "injection": {"interval_s": 0.5},
            "targets": [ORCH, WATCHER]}
    proc = subprocess.Popen([sys.executable, "-c", SIGINT_SCRIPT, json.dumps(over)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent)
    try:
        history = project / "chapter13_cycle_history.jsonl"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(history.read_text().splitlines()) < 10:
            time.sleep(0.1)
        assert len(left_running(project, proc.pid)) == 2, "both processes run"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "interrupted" in out, err
    assert not left_running(project), "a process of the target was left behind after Ctrl-C"
    for name, data in before.items():
        assert (project / name).read_bytes() == data, f"{name} not restored after Ctrl-C"
    partial, _ = signoff(tmp_path / "out" / "int")  # judged from loop.parquet and the samples
    assert partial["cycles"]["observed"] >= 2 and partial["draws_ingested_delta"]["status"] == "FAIL"
    # the daemon crashes: the soak ends, the orchestrator is stopped, the files are restored
    crash = {"name": "watcher", "sim": {"poll_s": 0.2, "crash_after_s": 2.0}}
    res = run_soak(params(tmp_path, run_id="crash", duration_s=20, project_dir=str(project), targets=[ORCH, crash]))
    assert res.target_exit is not None and not left_running(project)
    for name, data in before.items():
        assert (project / name).read_bytes() == data, f"{name} not restored after the crash"
    assert signoff(res.run_dir)[0]["target_alive"]["status"] == "FAIL"

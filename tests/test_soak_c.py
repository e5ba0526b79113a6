"""Soak C on the reference daemon (real processes): cycles, draws, convergence, operator files."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from soaklib.errors import ParameterError, ProtocolError
from soaklib.params import SoakParams, load_params
from soaklib.prng import draw_values
from soaklib.runs import load_run
from soaklib.soak.drivers.loop import LoopCounters, convergence_points
from soaklib.soak.harness import run_soak
from soaklib.store import read_table
from soaklib.watcher.decisions import Decision
from soaklib.watcher.operator_files import AfterSoak, OperatorFiles, enable_test_mode
from soaklib.watcher.protocol import PROFILES
from tests.conftest import REPO

SEED = 12345


def params(tmp_path: Path, **over: Any) -> SoakParams:
    sim = {"poll_s": 0.1, **over.pop("sim", {})}
    base = {"soak": "c", "output_dir": str(tmp_path / "out"), "duration_s": 8,
            "sampling": {"interval_s": 0.25, "flush_s": 1, "health_interval_s": 0.5}, "sim": sim,
            "injection": {"interval_s": 1.1, "bootstrap_draws": 500}}
    return load_params(SoakParams, overrides={**base, **over})


def rows(run_dir: Path) -> dict[str, dict[str, Any]]:
    from soaklib.report.signoff import build_signoff

    s = build_signoff(load_run(run_dir))
    return {r["metric"]: r for r in s["criteria"]} | {"_verdict": {"status": s["verdict"]}}


def operator_project(tmp_path: Path, draws: int = 300) -> tuple[Path, dict[str, bytes]]:
    """A project with an operator's history (the plan's indented format) and policies."""
    project = tmp_path / "operator"
    project.mkdir()
    history = [{"date": f"2024-01-{1 + i // 2:02d}", "session": "midday" if i % 2 == 0 else "evening",
                "draw": [v // 100 % 10, v // 10 % 10, v % 10], "value": v, "draw_source": "synthetic_bootstrap",
                "true_seed": SEED} for i, v in enumerate(draw_values(SEED, draws))]
    (project / "lottery_history.json").write_text(json.dumps({"draws": history}, indent=2))
    (project / "watcher_policies.json").write_text(json.dumps(
        {"test_mode": False, "synthetic_injection": {"enabled": False, "true_seed": SEED, "interval_seconds": 600},
         "thresholds": {"retrain": 0.3}}, indent=4))
    return project, {n: (project / n).read_bytes() for n in ("lottery_history.json", "watcher_policies.json")}


def assert_restored(project: Path, before: dict[str, bytes]) -> None:
    for name, data in before.items():
        assert (project / name).read_bytes() == data, f"{name} not restored byte for byte"
    assert not (project / "new_draw.flag").exists()


def test_short_soak_counts_cycles_converges_and_restores(tmp_path):
    project, before = operator_project(tmp_path)
    p = params(tmp_path, run_id="c-ok", project_dir=str(project), duration_s=11,
               sim={"search_width_start": 8192})
    result = run_soak(p)
    r = rows(result.run_dir)
    obs = json.loads((result.run_dir / "observations.json").read_text())["observations"]
    assert r["cycles"]["observed"] >= 5 and r["cycles"]["status"] == "PASS"
    assert obs["draws_injected"] >= 8 and r["draws_ingested_delta"]["observed"] <= 2
    assert obs["draws_sequence_errors"] == 0 and obs["start"]["history_draws"] == 300
    assert r["selfplay_dispatches"]["status"] == "PASS" and r["policy_candidates"]["status"] == "PASS"
    assert r["telemetry_valid"]["observed"] is True and r["queue_stuck"]["observed"] == 0
    conv = obs["convergence"]
    assert conv["slope"] > 0 and conv["converged"] and conv["trend"] == "improving", conv
    assert r["convergence"]["observed"] == "converged" and r["convergence"]["status"] == "PASS"
    assert r["heuristic_fallbacks"]["observed"] == 0 and r["_verdict"]["status"] == "PASS", r
    # the operator's files are back, byte for byte; the soak's versions are kept in the run folder
    assert_restored(project, before)
    final = result.run_dir / "operator_backup" / "final"
    kept = json.loads((final / "lottery_history.json").read_text())["draws"]
    assert len(kept) == 300 + obs["draws_injected"] and kept[300]["value"] == draw_values(SEED, 1, start=300)[0]
    assert json.loads((final / "watcher_policies.json").read_text())["synthetic_injection"] == \
        {"enabled": True, "true_seed": SEED, "interval_seconds": 1.1}
    assert obs["operator_files"]["files"]["lottery_history.json"] == "restored byte for byte"
    loop = read_table(result.run_dir / "loop.parquet")
    assert loop["cycles"].is_monotonic_increasing and loop["probe_hit_rate"].max() == 1.0


SIGINT_SCRIPT = """
import json, sys
from soaklib.params import SoakParams, load_params
from soaklib.soak.harness import run_soak
r = run_soak(load_params(SoakParams, overrides=json.loads(sys.argv[1])))
print("interrupted" if r.interrupted else "finished", flush=True)
"""


def test_sigint_mid_run_restores_history_and_policies(tmp_path, procs):
    project, before = operator_project(tmp_path)
    over = {"soak": "c", "run_id": "c-int", "output_dir": str(tmp_path / "out"), "duration_s": 60,
            "project_dir": str(project), "sim": {"poll_s": 0.1}, "injection": {"interval_s": 0.5},
            "sampling": {"interval_s": 0.25, "flush_s": 0.5}}
    proc = subprocess.Popen([sys.executable, "-c", SIGINT_SCRIPT, json.dumps(over)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(proc)
    history = project / "lottery_history.json"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and history.read_bytes() == before["lottery_history.json"]:
        time.sleep(0.05)
    time.sleep(2.0)  # a few injections, cycles and flushes
    assert json.loads(history.read_text())["draws"][-1]["draw_source"] == "synthetic_injection"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert "interrupted" in out, err
    assert_restored(project, before)
    report = json.loads((tmp_path / "out" / "c-int" / "operator_backup" / "restore.json").read_text())
    assert report["ok"] and report["files"]["watcher_policies.json"] == "restored byte for byte"
    # the partial run is analysable: loop.parquet and the samples stand in for the driver's finish
    r = rows(tmp_path / "out" / "c-int")
    assert r["_verdict"]["status"] == "FAIL" and r["cycles"]["observed"] >= 1
    assert r["convergence"]["observed"] is not None and r["selfplay_dispatches"]["observed"] >= 1


def test_llm_outage_heuristic_fallbacks_are_counted_and_judged(tmp_path):
    result = run_soak(params(tmp_path, duration_s=5, llm={"outages": [[1, 600]]}))
    r = rows(result.run_dir)
    assert r["heuristic_fallbacks"]["observed"] > 2 and r["heuristic_fallbacks"]["status"] == "FAIL"
    assert "LLM connection drop" in r["heuristic_fallbacks"]["triage"]


def test_target_crash_still_restores(tmp_path):
    project, before = operator_project(tmp_path)
    result = run_soak(params(tmp_path, project_dir=str(project), duration_s=20, sim={"crash_after_s": 2.5}))
    assert result.target_exit is not None
    assert_restored(project, before)
    assert rows(result.run_dir)["target_alive"]["status"] == "FAIL"


def test_failed_protocol_check_leaves_operator_files_untouched(tmp_path):
    project, before = operator_project(tmp_path)
    with pytest.raises(ProtocolError, match="UNKNOWN_TYPE"):
        run_soak(params(tmp_path, project_dir=str(project), sim={"unknown_types": True}))
    assert_restored(project, before)


def test_operator_files_backup_restore_keep(tmp_path):
    project = tmp_path / "p"
    project.mkdir()
    (project / "a.json").write_bytes(b'{"a": 1}')
    (project / "same.json").write_bytes(b"same")
    files = OperatorFiles(project, tmp_path / "backup", ["a.json", "same.json", "new.flag"])
    manifest = files.backup()
    assert manifest["a.json"]["existed"] and not manifest["new.flag"]["existed"]
    (project / "a.json").write_bytes(b'{"a": 2}')
    (project / "new.flag").write_text("x")
    report = files.restore()
    assert (project / "a.json").read_bytes() == b'{"a": 1}' and not (project / "new.flag").exists()
    assert (tmp_path / "backup" / "final" / "a.json").read_bytes() == b'{"a": 2}'
    assert (tmp_path / "backup" / "final" / "new.flag").read_text() == "x"
    assert report["files"] == {"a.json": "restored byte for byte", "same.json": "unchanged",
                               "new.flag": f"created by the soak: moved to {tmp_path / 'backup' / 'final' / 'new.flag'}"}
    assert files.restore() is report  # idempotent
    keep = OperatorFiles(project, tmp_path / "backup2", ["a.json"], keep_changes=True)
    keep.backup()
    (project / "a.json").write_bytes(b"changed")
    assert keep.restore()["files"]["a.json"].startswith("kept") and (project / "a.json").read_bytes() == b"changed"


def test_enable_test_mode(tmp_path):
    path = tmp_path / "watcher_policies.json"
    path.write_text(json.dumps({"test_mode": False, "synthetic_injection": {"true_seed": 7}, "x": 1}))
    out = enable_test_mode(path, 120.0, 12345)
    data = json.loads(path.read_text())
    assert data == {"test_mode": True, "synthetic_injection": {"true_seed": 7, "enabled": True, "interval_seconds": 120},
                    "x": 1}
    assert out["before"] == {"test_mode": False, "enabled": None, "interval_seconds": None} and out["true_seed"] == 7
    path.write_text("{broken")
    with pytest.raises(ParameterError, match="is not valid JSON"):
        enable_test_mode(path, 120.0, 1)
    assert path.read_text() == "{broken"


def test_loop_counters_and_convergence_points():
    import pandas as pd

    c = LoopCounters(PROFILES["watcher-v2"])
    line = lambda run_id, dtype, status="COMPLETED", source="autonomous": json.dumps(  # noqa: E731
        {"run_id": run_id, "dispatch_type": dtype, "status": status, "details": {"source": source}})
    for text in (line("r1", "selfplay"), line("r1", "ch13_request_selfplay_retrain"), line("r1", "learning_loop"),
                 line("r2", "selfplay"), line("r3", "selfplay", source="soak_protocol_check"),
                 line("r4", "selfplay", status="REJECTED_BY_LLM"), "garbage",
                 json.dumps({"step": 13, "parse_method": "heuristic"})):
        c.update(Decision.parse(text, c.profile))
    assert c.cycles == 2 and c.selfplay == 3 and c.learning == 1 and c.bad_lines == 1 and c.heuristic_steps == 1
    plan = LoopCounters(PROFILES["plan"])
    plan.update(Decision.parse(json.dumps({"event": "heuristic_fallback", "source": "autonomous", "request_type": "selfplay"}), plan.profile))
    plan.update(Decision.parse(json.dumps({"sequence_number": None, "source": "autonomous", "request_type": "selfplay",
                            "status": "COMPLETED", "dispatch_type": "selfplay"}), plan.profile))
    assert plan.heuristic == 1 and plan.cycles == 1 and plan.selfplay == 1
    loop = pd.DataFrame({"cycles": [0, 1, 1, 2, 3], "probe_hit_rate": [None, 0.0, 0.2, 0.4, None]})
    assert convergence_points(loop, "probe_hit_rate") == ([1.0, 2.0], [0.2, 0.4])


def test_after_soak_runs_once_when_the_target_is_gone():
    class FakeTarget:
        started = True
        running = True

        def is_running(self) -> bool:
            return self.running

    target, calls = FakeTarget(), []
    guard = AfterSoak(target, poll_s=0.01)
    guard.add("one", lambda: calls.append(1))
    guard.add("broken", lambda: 1 / 0)
    time.sleep(0.05)
    assert calls == []
    target.running = False
    deadline = time.monotonic() + 2
    while not guard.ran and time.monotonic() < deadline:
        time.sleep(0.01)
    assert guard.ran and calls == [1] and guard.errors == ["broken: ZeroDivisionError: division by zero"]
    assert guard.run() == guard.errors and calls == [1]  # once only

    def interrupted() -> None:
        raise KeyboardInterrupt

    again = AfterSoak()
    again.add("ctrl-c", interrupted)
    with pytest.raises(KeyboardInterrupt):
        again.run()
    assert not again.ran  # a cleanup cut short by Ctrl-C runs again (at exit at the latest)
    again._fns.clear()
    again.run()

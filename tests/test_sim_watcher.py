"""The reference WATCHER daemon as a real process: protocol, halt, fault knobs, learning."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from soaklib.sim.llm_server import serve_in_thread
from soaklib.sim.watcher import main as watcher_main
from soaklib.watcher.draws import bootstrap_history, inject_draws

DEAD_LLM = "http://127.0.0.1:9"  # nothing listens on the discard port: connection refused


@pytest.fixture(scope="module")
def llm_url() -> Iterator[str]:
    url, stop = serve_in_thread()
    yield url
    stop()


def wait_for(pred: Callable[[], object], timeout_s: float = 5.0, step_s: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step_s)
    return bool(pred())


def watcher_argv(project: Path, *extra: str, llm: str = DEAD_LLM, mode: str | list[str] = "--daemon") -> list[str]:
    modes = [mode] if isinstance(mode, str) else mode
    return [sys.executable, "-m", "soaklib.sim.watcher", "--project-dir", str(project), *modes,
            "--poll-s", "0.1", "--halt-file", str(project / "agent_halt"), "--llm-url", llm,
            "--llm-timeout-s", "1", *extra]


class Watcher:
    """A started daemon with its stderr in a file (shown in assertion messages)."""

    def __init__(self, procs: list[subprocess.Popen], project: Path, *extra: str, llm: str = DEAD_LLM) -> None:
        self.project = project
        self.err_path = project.parent / f"{project.name}.stderr"
        self._err = self.err_path.open("wb")
        self.proc = subprocess.Popen(watcher_argv(project, *extra, llm=llm), stdout=subprocess.DEVNULL,
                                     stderr=self._err, start_new_session=True)
        procs.append(self.proc)
        assert wait_for(lambda: (project / "watcher.pid").exists() or self.proc.poll() is not None, 10), self.stderr
        assert self.proc.poll() is None, self.stderr

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def terminate(self, timeout_s: float = 3.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=timeout_s)
        self._err.close()
        return rc


def run_batch(project: Path, *extra: str, llm: str = DEAD_LLM) -> subprocess.CompletedProcess:
    return subprocess.run(watcher_argv(project, *extra, llm=llm, mode="--process-requests"),
                          capture_output=True, text=True, timeout=30)


def stage(project: Path, name: str, body: dict | str) -> Path:
    folder = project / "watcher_requests"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(body if isinstance(body, str) else json.dumps(body))
    return path


def decisions(project: Path) -> list[dict]:
    path = project / "watcher_decisions.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def dispatch_lines(project: Path) -> list[dict]:
    return [d for d in decisions(project) if "dispatch_type" in d]


def archived(project: Path) -> list[str]:
    folder = project / "watcher_requests" / "archive"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def pending(project: Path) -> list[str]:
    return sorted(p.name for p in (project / "watcher_requests").glob("*.json"))


def state(project: Path) -> dict:
    try:
        return json.loads((project / "daemon_state.json").read_text())
    except (OSError, ValueError):
        return {}


# ------------------------------------------------------------------ requests


def test_mixed_queue_fifo_archive_and_decision_lines(tmp_path: Path, procs: list, llm_url: str) -> None:
    stage(tmp_path, "r01.json", {"request_type": "selfplay_retrain", "episodes": 2, "source": "soak_test_B"})
    stage(tmp_path, "r02.json", {"request_type": "learning_loop", "scope": "steps_3_5_6", "source": "soak_test_B"})
    stage(tmp_path, "r03.json", {"request_type": "pipeline_rerun", "source": "soak_test_B"})
    stage(tmp_path, "r04.json", {"request_type": "selfplay", "parameters": {"episodes": 2}, "source": "probe"})
    stage(tmp_path, "r05.json", "{not json")
    stage(tmp_path, "r06.json", {"request_type": "selfplay_retrain", "episodes": 0, "source": "soak_test_B"})
    w = Watcher(procs, tmp_path, llm=llm_url)
    assert wait_for(lambda: len(archived(tmp_path)) == 6 and not pending(tmp_path), 10), w.stderr
    assert w.terminate() == 0, w.stderr

    names = archived(tmp_path)
    expected = {"r01": "COMPLETED", "r02": "COMPLETED", "r03": "COMPLETED", "r04": "UNKNOWN_TYPE",
                "r05": "INVALID", "r06": "REJECTED"}
    for stem, status in expected.items():
        assert any(re.fullmatch(rf"{status}_\d{{8}}_\d{{6}}_{stem}\.json", n) for n in names), (stem, names)

    lines = dispatch_lines(tmp_path)
    got = [(Path(d["details"]["request_path"]).stem, d["dispatch_type"], d["status"]) for d in lines]
    assert got == [
        ("r01", "selfplay", "COMPLETED"),
        ("r01", "ch13_request_selfplay_retrain", "COMPLETED"),
        ("r02", "learning_loop", "COMPLETED"),
        ("r02", "ch13_request_learning_loop", "COMPLETED"),
        ("r03", "ch13_request_pipeline_rerun", "COMPLETED"),
        ("r04", "ch13_request_selfplay", "UNKNOWN_TYPE"),
        ("r06", "ch13_request_selfplay_retrain", "REJECTED"),
    ]  # FIFO; the bad JSON (r05) is archived INVALID with no line
    assert all(d["details"]["source"] in ("soak_test_B", "probe") and d["run_id"] for d in lines)
    steps = [d for d in decisions(tmp_path) if "step" in d]
    assert len(steps) == 3 and {s["parse_method"] for s in steps} == {"llm"}
    assert all(s["action"] == "proceed" and s["success"] is True for s in steps)
    assert "HTTP LLM evaluation failed" not in w.stderr
    assert state(tmp_path)["requests_processed"] == 6


def test_llm_down_heuristic_warning_and_step_line(tmp_path: Path) -> None:
    stage(tmp_path, "a.json", {"request_type": "selfplay_retrain", "episodes": 1, "source": "t"})
    done = run_batch(tmp_path)
    assert done.returncode == 0, done.stderr
    assert re.search(r"\[WARNING\] HTTP LLM evaluation failed.*heuristic default", done.stderr), done.stderr
    steps = [d for d in decisions(tmp_path) if "step" in d]
    assert [s["parse_method"] for s in steps] == ["heuristic"]
    assert [d["status"] for d in dispatch_lines(tmp_path)] == ["COMPLETED", "COMPLETED"]
    assert not pending(tmp_path) and len(archived(tmp_path)) == 1


def test_duplicate_misroute_unknown_types_knobs(tmp_path: Path) -> None:
    dup, mis, unk = tmp_path / "dup", tmp_path / "mis", tmp_path / "unk"
    for i in range(4):
        stage(dup, f"s{i}.json", {"request_type": "selfplay_retrain", "episodes": 1, "source": "t"})
    stage(mis, "l.json", {"request_type": "learning_loop", "scope": "steps_3_5_6", "source": "t"})
    stage(unk, "s.json", {"request_type": "selfplay_retrain", "episodes": 1, "source": "t"})
    for project, knob in ((dup, ["--duplicate-every", "2"]), (mis, ["--misroute"]), (unk, ["--unknown-types"])):
        assert watcher_main(watcher_argv(project, *knob, mode="--process-requests")[3:]) == 0  # in-process

    per_request = {}
    for d in dispatch_lines(dup):
        if d["dispatch_type"] == "selfplay":
            per_request[Path(d["details"]["request_path"]).stem] = per_request.get(Path(d["details"]["request_path"]).stem, 0) + 1
    assert per_request == {"s0": 1, "s1": 2, "s2": 1, "s3": 2}  # every 2nd request dispatched twice
    assert len(archived(dup)) == 4

    assert [d["dispatch_type"] for d in dispatch_lines(mis)] == ["selfplay", "ch13_request_learning_loop"]

    assert [(d["dispatch_type"], d["status"]) for d in dispatch_lines(unk)] == [
        ("ch13_request_selfplay_retrain", "UNKNOWN_TYPE")]
    assert archived(unk)[0].startswith("UNKNOWN_TYPE_")


def test_stall_queue_after_s_keeps_running_with_requests_pending(tmp_path: Path, procs: list) -> None:
    stage(tmp_path, "early.json", {"request_type": "pipeline_rerun", "source": "t"})
    w = Watcher(procs, tmp_path, "--stall-queue-after-s", "0.6")
    assert wait_for(lambda: len(archived(tmp_path)) == 1, 5), w.stderr
    time.sleep(0.8)
    stage(tmp_path, "late.json", {"request_type": "pipeline_rerun", "source": "t"})
    time.sleep(0.6)
    assert pending(tmp_path) == ["late.json"] and w.proc.poll() is None, w.stderr
    assert w.terminate() == 0


# ------------------------------------------------------------------ lifecycle


def test_sigterm_exits_quickly_with_state_saved(tmp_path: Path, procs: list) -> None:
    w = Watcher(procs, tmp_path)
    second = subprocess.run(watcher_argv(tmp_path), capture_output=True, text=True, timeout=20)
    assert second.returncode == 1 and "another WATCHER daemon" in second.stderr, second.stderr
    time.sleep(0.2)
    t0 = time.monotonic()
    assert w.terminate(timeout_s=3) == 0, w.stderr
    assert time.monotonic() - t0 < 1.5
    saved = state(tmp_path)
    assert saved["state"] == "STOPPED" and saved["cycles_completed"] >= 2 and saved["errors"] == 0
    assert {"requests_processed", "updated_at"} <= saved.keys()
    assert not (tmp_path / "watcher.pid").exists()


def test_stop_command_and_halt_file_pauses(tmp_path: Path, procs: list, capsys: pytest.CaptureFixture) -> None:
    w = Watcher(procs, tmp_path)
    # the --halt and --stop commands run in-process (same code as the CLI, no interpreter start-up)
    assert watcher_main(watcher_argv(tmp_path, mode=["--halt", "soak A complete"])[3:]) == 0
    assert "soak A complete" in (tmp_path / "agent_halt").read_text()
    assert wait_for(lambda: state(tmp_path).get("state") == "HALTED", 5), w.stderr
    stage(tmp_path, "p.json", {"request_type": "pipeline_rerun", "source": "t"})
    time.sleep(0.5)
    assert pending(tmp_path) == ["p.json"], "a halted daemon must not process requests"
    (tmp_path / "agent_halt").unlink()
    assert wait_for(lambda: not pending(tmp_path), 5), w.stderr
    assert "halt requested (soak A complete)" in w.stderr
    assert watcher_main(watcher_argv(tmp_path, mode="--stop")[3:]) == 0, w.stderr
    assert w.proc.wait(timeout=3) == 0
    assert state(tmp_path)["state"] == "STOPPED"
    assert watcher_main(watcher_argv(tmp_path, mode="--stop")[3:]) == 1
    assert "no daemon to stop" in capsys.readouterr().err


def test_ignore_halt_survives_sigterm_and_halt_file(tmp_path: Path, procs: list) -> None:
    w = Watcher(procs, tmp_path, "--ignore-halt")
    (tmp_path / "agent_halt").write_text("stop please")
    w.proc.send_signal(signal.SIGTERM)
    w.proc.send_signal(signal.SIGINT)
    stage(tmp_path, "p.json", {"request_type": "pipeline_rerun", "source": "t"})
    assert wait_for(lambda: not pending(tmp_path), 5), w.stderr
    time.sleep(0.5)
    assert w.proc.poll() is None, w.stderr
    w.proc.kill()
    w.proc.wait(timeout=5)


def test_crash_after_s_exits_1_with_traceback(tmp_path: Path, procs: list) -> None:
    w = Watcher(procs, tmp_path, "--crash-after-s", "0.3")
    assert w.proc.wait(timeout=5) == 1
    assert "Traceback (most recent call last)" in w.stderr and "simulated crash" in w.stderr


def test_traceback_every_s_logs_errors_and_keeps_running(tmp_path: Path, procs: list) -> None:
    w = Watcher(procs, tmp_path, "--traceback-every-s", "0.3")
    assert wait_for(lambda: w.stderr.count("Traceback (most recent call last)") >= 2, 5), w.stderr
    assert "[ERROR] caught an exception in the cycle" in w.stderr
    assert w.proc.poll() is None
    assert w.terminate() == 0
    assert state(tmp_path)["errors"] >= 2


def test_leak_knob_grows_rss_and_fd_knob_grows_fds(tmp_path: Path, procs: list) -> None:
    (tmp_path / "leak").mkdir()
    (tmp_path / "calm").mkdir()
    leaky = Watcher(procs, tmp_path / "leak", "--leak-mb-per-h", "3600", "--fd-leak-per-cycle", "2")
    calm = Watcher(procs, tmp_path / "calm")
    time.sleep(0.5)
    p_leak, p_calm = psutil.Process(leaky.proc.pid), psutil.Process(calm.proc.pid)
    rss0 = (p_leak.memory_info().rss, p_calm.memory_info().rss)
    fds0 = (p_leak.num_fds(), p_calm.num_fds())
    time.sleep(3.0)
    grown_mib = [(p.memory_info().rss - r) / 2**20 for p, r in zip((p_leak, p_calm), rss0)]
    fds_grown = [p.num_fds() - f for p, f in zip((p_leak, p_calm), fds0)]
    assert 2.0 <= grown_mib[0] <= 8.0, grown_mib  # 3600 MiB/h for 3 s = 3 MiB
    assert grown_mib[1] < 1.0, grown_mib
    assert fds_grown[0] >= 30 and fds_grown[1] == 0, fds_grown  # ~30 cycles x 2
    assert leaky.terminate() == 0 and calm.terminate() == 0


# ------------------------------------------------------------------ autonomous loop


def test_injected_draws_drive_cycles_and_hit_rate_converges(tmp_path: Path, procs: list, llm_url: str) -> None:
    bootstrap_history(tmp_path, 5000, seed=12345)
    w = Watcher(procs, tmp_path, llm=llm_url)
    telemetry_path = tmp_path / "telemetry" / "learning_health_latest.json"
    curve = []
    for cycle in range(1, 10):
        inject_draws(tmp_path, seed=12345)
        assert wait_for(lambda c=cycle: telemetry_path.exists() and json.loads(telemetry_path.read_text())["cycles"] == c,
                        5), w.stderr
        curve.append(json.loads(telemetry_path.read_text()))
    assert w.terminate() == 0, w.stderr

    assert [t["draws_seen"] for t in curve] == list(range(5001, 5010))
    assert all(t["draws_ingested"] == 1 for t in curve)
    models = [t["total_models"] for t in curve]
    assert models == sorted(models) and len(set(models)) == len(models)  # strictly increasing
    hit_rates = [t["hit_rate"] for t in curve]
    assert hit_rates[0] == 0.0 and hit_rates[:3] == [0.0, 0.0, 0.0]  # seed not in the window yet
    assert max(i for i, h in enumerate(hit_rates) if h < 1.0) < 7, hit_rates  # 1.0 by cycle 8
    assert hit_rates[-1] == 1.0 and curve[-1]["best_seed"] == 12345

    assert len(list((tmp_path / "policy_history").glob("candidate_*.json"))) == 9
    auto = [d for d in dispatch_lines(tmp_path) if d["details"]["source"] == "autonomous"]
    assert sum(d["dispatch_type"] == "selfplay" for d in auto) == 9
    assert sum(d["dispatch_type"] == "learning_loop" for d in auto) == 3  # every 3rd cycle
    assert all(d["status"] == "COMPLETED" for d in auto)
    assert not (tmp_path / "new_draw.flag").exists()
    assert state(tmp_path)["learning"]["best_seed"] == 12345


# ------------------------------------------------------------------ profile plan


def test_plan_profile_requests_fallback_log_and_halt_flag(tmp_path: Path, procs: list) -> None:
    stage(tmp_path, "soak_B_01.json", {"request_type": "selfplay", "source": "soak_test_B", "sequence_number": 1,
                                       "parameters": {"episodes": 2, "policy_conditioned": True}})
    stage(tmp_path, "soak_B_02.json", {"request_type": "learning_loop", "source": "soak_test_B",
                                       "sequence_number": 2, "parameters": {"scope": "steps_3_5_6"}})
    argv = watcher_argv(tmp_path, "--profile", "plan")
    argv[argv.index("--halt-file"):argv.index("--halt-file") + 2] = []  # the plan's own flag
    err = (tmp_path.parent / f"{tmp_path.name}.plan.stderr").open("wb")
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    procs.append(proc)
    assert wait_for(lambda: archived(tmp_path) == ["soak_B_01.json", "soak_B_02.json"], 10)
    lines = decisions(tmp_path)
    fallbacks = [d for d in lines if d.get("event") == "heuristic_fallback"]
    plain = [d for d in lines if "event" not in d]
    assert len(fallbacks) == 2
    assert [(d["sequence_number"], d["request_type"], d["dispatch_type"], d["status"], d["source"]) for d in plain] == [
        (1, "selfplay", "selfplay", "COMPLETED", "soak_test_B"),
        (2, "learning_loop", "learning_loop", "COMPLETED", "soak_test_B")]
    (tmp_path / "watcher_halt.flag").write_text("done")
    assert proc.wait(timeout=3) == 0
    err.close()
    log_text = (tmp_path / "logs" / "watcher_agent.log").read_text()
    assert "HTTP LLM evaluation failed" in log_text and "halt flag" in log_text

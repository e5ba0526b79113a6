"""Faults around the harness: SIGINT, a daemon that halts itself, and the README's fault table."""
from __future__ import annotations

import ast
import json
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil

from soaklib.params import SoakParams, load_params
from soaklib.report.signoff import write_signoff
from soaklib.runs import load_run
from soaklib.soak.harness import run_soak
from tests.conftest import PYTHON, REPO


def test_sigint_of_the_harness_flushes_stops_the_target_and_exits_130(
        tmp_path: Path, procs: list[subprocess.Popen]) -> None:
    harness = subprocess.Popen(
        [PYTHON, "-m", "soaklib.cli", "watcher", "a", "--run-id", "int", "--output-dir", str(tmp_path),
         "--no-progress", "--set", "duration_s=60", "--set", "sampling.interval_s=0.2", "--set", "sampling.flush_s=0.5",
         "--set", "sim.poll_s=0.1"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    procs.append(harness)
    parts = tmp_path / "int" / "samples"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(list(parts.rglob("part-*.parquet"))) < 2:
        time.sleep(0.05)
    kids = psutil.Process(harness.pid).children(recursive=True)
    harness.send_signal(signal.SIGINT)
    stdout, stderr = harness.communicate(timeout=30)
    assert harness.returncode == 130, stderr
    assert "Verdict: FAIL (interrupted)" in stdout and "Traceback" not in stderr
    _, alive = psutil.wait_procs(kids, timeout=5)
    assert not alive, [p.pid for p in alive]
    signoff = json.loads((tmp_path / "int.json").read_text())
    assert signoff["interrupted"] is True and signoff["complete"] is False
    assert len(load_run(tmp_path / "int").samples) >= 3


def test_a_daemon_that_halts_itself_is_a_daemon_halted_fail_row(tmp_path: Path) -> None:
    """The reference daemon pauses (state HALTED) when its halt file appears, as the real one
    does on its KillSwitch; here the file is written by the test, not by the soak."""
    params = load_params(SoakParams, overrides={
        "run_id": "self", "output_dir": str(tmp_path), "duration_s": 3, "warmup_s": 0.5,
        "sampling": {"interval_s": 0.2, "flush_s": 0.5}, "sim": {"poll_s": 0.1}, "llm": {"health_url": None}})
    halt_file = tmp_path / "self" / "project" / "agent_halt"

    def halt_it() -> None:
        time.sleep(1.2)
        halt_file.write_text("KillSwitch: free space on / below 10 GB\n")

    writer = threading.Thread(target=halt_it)
    writer.start()
    try:
        result = run_soak(params)
    finally:
        writer.join()
    signoff = json.loads(write_signoff(result.run_dir)["json"].read_text())
    rows = {r["metric"]: r for r in signoff["criteria"]}
    row = rows["daemon_halted"]
    assert row["status"] == "FAIL" and "HALTED" in row["note"] and "KillSwitch" in row["triage"]
    assert signoff["verdict"] == "FAIL"
    s = load_run(result.run_dir).samples
    assert (s["daemon_state"] == "HALTED").any() and (s["daemon_state"] != "HALTED").any()
    assert not halt_file.exists()  # the reset removes the halt file the soak did not find


def test_the_readme_fault_table_names_tests_that_exist() -> None:
    text = (REPO / "README.md").read_text()
    start = text.index("| fault | what you see | exit | what is kept | test |")
    table = text[start:text.index("\n\n", start)]
    refs = re.findall(r"`(tests/test_\w+\.py)::(test_\w+)`", table)
    assert len(refs) >= 15 and len(table.splitlines()) - 2 == len(refs)  # one test per row
    for path, name in refs:
        tree = ast.parse((REPO / path).read_text())
        names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        assert name in names, f"{path}::{name} named in the README's fault table does not exist"
    for fault in ("disk full", "removed mid-run", "log flood", "50 MB line", "300 children", "exits at once",
                  "ignores SIGTERM", "kill -9", "SIGINT", "hung runner", "malformed runner JSON", "corrupted part"):
        assert fault in table, fault

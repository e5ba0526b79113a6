"""Faults of the target's own output: last words at exit, a log flood, a 50 MB line, 300 children.

Each test runs soak A in this process against a small Python script written into
``tmp_path`` (a real process, real pipes and files) and judges the signoff.
"""
from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil

from soaklib.params import SoakParams, load_params
from soaklib.report.signoff import write_signoff
from soaklib.runs import load_run
from soaklib.soak.harness import run_soak
from tests.conftest import PYTHON

FAST = {"interval_s": 0.2, "flush_s": 0.5}


def soak(tmp: Path, run_id: str, script: str, *args: str, **overrides: Any) -> tuple[Any, dict[str, Any]]:
    """Soak A of ``script`` (written to tmp/run_id.py) with no LLM; returns (result, signoff)."""
    project = tmp / f"{run_id}-project"
    project.mkdir()
    (tmp / f"{run_id}.py").write_text(textwrap.dedent(script))
    sampling = dict(FAST, **overrides.pop("sampling", {}))
    base: dict[str, Any] = {"run_id": run_id, "output_dir": str(tmp / "out"), "duration_s": 2, "warmup_s": 0.5,
                            "project_dir": str(project), "llm": {"health_url": None}, "sampling": sampling,
                            "target": {"command": [PYTHON, str(tmp / f"{run_id}.py"), *args],
                                       "halt": {"timeout_s": 5}}}
    base.update(overrides)
    result = run_soak(load_params(SoakParams, overrides=base))
    return result, json.loads(write_signoff(result.run_dir)["json"].read_text())


def rows(signoff: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["metric"]: r for r in signoff["criteria"]}


BOOM_ON_SHUTDOWN = """
    import signal, sys, time
    def on_term(signum, frame):
        print("shutting down", flush=True)
        raise RuntimeError("boom on shutdown")
    signal.signal(signal.SIGTERM, on_term)
    print("ready", flush=True)
    while True:
        time.sleep(0.05)
"""


def test_a_traceback_and_exit_1_on_sigterm_fail_tracebacks_and_the_halt_row(tmp_path: Path) -> None:
    result, signoff = soak(tmp_path, "boom", BOOM_ON_SHUTDOWN)
    r = rows(signoff)
    assert signoff["halt"]["returncode"] == 1
    assert r["tracebacks"]["status"] == "FAIL" and r["tracebacks"]["observed"] == 1
    assert r["tracebacks"]["triage"]
    halt = r["halt_s"]  # it stopped fast, but with exit code 1: the halt row records and judges the code
    assert halt["status"] == "FAIL" and halt["observed"] < 5 and "exit code 1 after the halt request" in halt["note"]
    assert "normal_exit_codes" in halt["triage"]
    assert signoff["verdict"] == "FAIL"
    log = (result.run_dir / "target.log").read_text()
    assert "RuntimeError: boom on shutdown" in log
    assert any("RuntimeError: boom on shutdown" in line for line in signoff["target_log_tail"])  # its last words


def test_an_exit_code_the_profile_calls_normal_passes_the_halt_row(tmp_path: Path) -> None:
    _, signoff = soak(tmp_path, "normal1", BOOM_ON_SHUTDOWN, target={
        "command": [PYTHON, str(tmp_path / "normal1.py")], "halt": {"timeout_s": 5, "normal_exit_codes": [0, 1]}},
        sampling={"traceback_regex": "^NEVER$"})
    halt = rows(signoff)["halt_s"]
    assert halt["status"] == "PASS" and "exit code 1 (normal stop)" in halt["note"]


FLOOD = """
    import signal, sys, time
    stop = False
    def on_term(signum, frame):
        global stop
        stop = True
    signal.signal(signal.SIGTERM, on_term)
    block = "".join("2026-01-01 00:00:00 [ERROR] flood line %d of a block\\n" % i for i in range({per_block}))
    written = 0
    while not stop:
        sys.stdout.write(block)
        written += {per_block}
        time.sleep({pause_s})
    sys.stdout.flush()
    open(sys.argv[1], "w").write(str(written))
"""


def test_a_20_s_flood_keeps_target_log_under_its_limit_and_counts_every_line(tmp_path: Path) -> None:
    count_file = tmp_path / "written.txt"
    t = time.monotonic()
    result, signoff = soak(tmp_path, "flood", FLOOD.format(per_block=500, pause_s=0.01), str(count_file),
                           duration_s=20, warmup_s=2, sampling={"interval_s": 1.0, "flush_s": 2,
                                                                  "target_log_max_mb": 1})
    assert time.monotonic() - t < 60
    written = int(count_file.read_text())
    assert written > 200_000  # a flood: ~50 MB of lines in 20 s
    log = result.run_dir / "target.log"
    assert log.stat().st_size <= 2**20
    text = log.read_text()
    assert text.startswith("2026-01-01 00:00:00 [ERROR] flood line 0 of a block")  # the head is kept
    assert "bytes of the target's output dropped here" in text
    assert text.endswith(" of a block\n")  # and the latest tail, cut at a line boundary
    s = load_run(result.run_dir).samples
    assert int(s["log_errors"].max()) == written == signoff["analysis"]["logs"]["errors"]  # to the line
    tl = signoff.get("observations_sampling_target_log") or json.loads(
        (result.run_dir / "observations.json").read_text())["sampling"]["target_log"]
    assert tl["bytes_total"] > 40 * 2**20 and tl["bytes_dropped"] > 0 and tl["rotations"] >= 10
    assert any("bounded copy" in n and "dropped" in n for n in signoff["notes"])
    assert any("watching cost more than usual" in n and "% of a core" in n for n in signoff["notes"])
    assert rows(signoff)["disk_growth_mb"]["status"] == "FAIL"  # the flood is growth, however little is kept


LONG_LINE = """
    import sys, time
    sys.stdout.write("x" * (50 * 2**20))  # 50 MB, no newline
    sys.stdout.write(" ERROR at the end of a long line")
    sys.stdout.flush()
    time.sleep(60)
"""


def test_a_50_mb_line_without_newline_is_read_bounded_and_judged(tmp_path: Path) -> None:
    result, signoff = soak(tmp_path, "longline", LONG_LINE, duration_s=6, sampling={"target_log_max_mb": 8})
    assert signoff["verdict"] in ("PASS", "FAIL") and signoff["complete"] is True
    assert (result.run_dir / "target.log").stat().st_size <= 8 * 2**20
    s = load_run(result.run_dir).samples
    assert int(s["log_errors"].max()) == 1  # the piece with the error, handed on at the target's exit
    assert int(s["bytes_read"].sum()) == 50 * 2**20 + len(" ERROR at the end of a long line")


CHILDREN = """
    import os, signal, sys, time
    kids = []
    for _ in range(300):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            time.sleep(600)
            os._exit(0)
        kids.append(pid)
    open(sys.argv[1], "w").write(" ".join(map(str, kids)))
    print("forked", len(kids), flush=True)
    time.sleep(600)
"""


def test_300_children_are_sampled_and_every_one_is_stopped(tmp_path: Path) -> None:
    pids_file = tmp_path / "kids.txt"
    result, signoff = soak(tmp_path, "kids", CHILDREN, str(pids_file), duration_s=3, sampling={"interval_s": 0.5})
    kids = [int(p) for p in pids_file.read_text().split()]
    assert len(kids) == 300
    s = load_run(result.run_dir).samples
    assert int(s["children"].max()) == 300
    alive = [p for p in kids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not alive
    assert signoff["complete"] is True


def test_a_target_that_exits_at_once_is_a_target_started_fail_with_its_last_words(tmp_path: Path) -> None:
    script = """
        import sys
        print("config file missing: /etc/daemon.yaml", flush=True)
        sys.exit(2)
    """
    _, signoff = soak(tmp_path, "atonce", script, duration_s=10)
    assert signoff["target_started"] is False and signoff["verdict"] == "FAIL"
    assert [r["metric"] for r in signoff["criteria"]] == ["target_started"]
    assert "code 2" in signoff["criteria"][0]["note"] and "daemon.yaml" in signoff["criteria"][0]["note"]
    assert signoff["target_exit"]["returncode"] == 2

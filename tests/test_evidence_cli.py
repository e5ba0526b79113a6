"""The verdict words, provenance and target-start row through the ``soak`` command: real
demo processes on the reference daemon, a target that cannot start, ``soak analyze`` on
fabricated run folders, and the combined verdict of full-length and seconds-long runs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from soaklib.report.combined import READY, combine, to_markdown
from tests.conftest import REPO
from tests.test_evidence_signoff import B_CLEAN, C_CLEAN, fabricate


def soak_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "soaklib.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    print(proc.stdout, proc.stderr, sep="\n")  # shown when a test fails
    return proc


def test_the_soak_b_demo_passes_as_a_short_run_on_the_reference_daemon(tmp_path: Path) -> None:
    out = soak_cli("watcher", "b", "--params", "parameters/soak_b_demo.yaml", "--output-dir", str(tmp_path),
                   "--run-id", "demo-b", "--no-progress")
    assert out.returncode == 0
    signoff = json.loads((tmp_path / "demo-b.json").read_text())
    assert signoff["verdict"] == "PASS" and signoff["verdict_label"].startswith("PASS (short run")
    assert signoff["production_ready"] is False and signoff["plan_length_s"] == 1800.0
    p = signoff["provenance"]
    assert p["reference_daemon"] is True and p["target"] == "reference_daemon" and p["full_length"] is False
    assert p["length"].endswith("of the plan's 30–60 min") and p["argv"][1:3] == ["-m", "soaklib.sim.watcher"]
    md = (tmp_path / "demo-b.md").read_text()
    assert f"**Verdict: {signoff['verdict_label']}** · target: the built-in reference daemon" in md
    assert "Not production-ready: short run" in md and "production-ready)" not in md
    assert "| archived | 10 | requests | = 10 | ≠ 10 | **PASS** |" in md
    assert "![queue](demo-b/figures/queue.png)" in md


def test_a_target_that_cannot_start_is_one_fail_row_and_exit_1(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    crash = ("import sys; print('loading config'); "
             "print('ERROR: no watcher_policies.json; token=abcdef123456', file=sys.stderr); sys.exit(4)")
    out = soak_cli("watcher", "a", "--output-dir", str(tmp_path), "--run-id", "nostart", "--no-progress",
                   "--set", f"project_dir={project}", "--set", f"target.command=[{sys.executable}, -c, \"{crash}\"]",
                   "--set", "llm.health_url=null", "--set", "duration_s=10", "--set", "sampling.interval_s=0.5",
                   "--set", "sampling.flush_s=1", "--set", "target.halt.timeout_s=5")
    assert out.returncode == 1
    signoff = json.loads((tmp_path / "nostart.json").read_text())
    assert [(r["metric"], r["status"]) for r in signoff["criteria"]] == [("target_started", "FAIL")]
    assert "with code 4" in signoff["criteria"][0]["note"]
    assert signoff["verdict_label"] == "FAIL (target did not start)" and signoff["target_started"] is False
    assert signoff["provenance"]["target"] == "command" and signoff["provenance"]["command"][0] == sys.executable
    assert signoff["target_log_tail"] == ["loading config", "ERROR: no watcher_policies.json; token=[REDACTED]"]
    md = (tmp_path / "nostart.md").read_text()
    assert "## The target did not start" in md and "token=[REDACTED]" in md and "abcdef123456" not in md
    assert "required observation missing" not in md and "tracemalloc" not in md
    again = soak_cli("analyze", str(tmp_path / "nostart"))
    assert again.returncode == 1 and json.loads((tmp_path / "nostart.json").read_text())["criteria"] == signoff["criteria"]


def test_soak_analyze_of_a_full_length_clean_run_is_production_ready_and_exits_0(tmp_path: Path) -> None:
    run_dir = fabricate(tmp_path, "full-a", seconds=7200.0)
    out = soak_cli("analyze", str(run_dir))
    assert out.returncode == 0
    signoff = json.loads((run_dir.parent / "full-a.json").read_text())
    assert signoff["verdict_label"] == "PASS (production-ready)" and signoff["production_ready"] is True
    md = (run_dir.parent / "full-a.md").read_text()
    assert md.splitlines()[2] == ("**Verdict: PASS (production-ready)** · target: `python3 agents/watcher_agent.py "
                                  "--daemon` · 2.0 h of the plan's 2–4 h")


def test_the_combined_verdict_is_production_ready_only_for_three_full_length_clean_passes(tmp_path: Path) -> None:
    full = {"a": fabricate(tmp_path, "full-a", seconds=7200.0),
            "b": fabricate(tmp_path, "full-b", soak="b", seconds=1800.0, driver=B_CLEAN),
            "c": fabricate(tmp_path, "full-c", soak="c", seconds=7200.0, driver=C_CLEAN)}
    combined = combine(full)
    assert (combined["verdict"], combined["production_ready"], combined["verdict_reasons"]) == (READY, True, [])
    assert combined["changelog"].splitlines()[-1] == "Verdict: Autonomous loop PRODUCTION-READY"
    assert "Soak Test A: PASS (production-ready) — 2.0 h of the plan's 2–4 h on `python3 agents/watcher_agent.py " \
           "--daemon`" in combined["changelog"]
    demo = {"a": fabricate(tmp_path, "demo-a", seconds=60.0, step_s=1.0, reference=True, warmup_s=15),
            "b": fabricate(tmp_path, "demo-b", soak="b", seconds=1.8, step_s=0.3, driver=B_CLEAN, reference=True,
                           warmup_s=0),
            "c": fabricate(tmp_path, "demo-c", soak="c", seconds=60.0, step_s=0.5, driver=C_CLEAN, reference=True,
                           warmup_s=15)}
    short = combine(demo)
    assert short["verdict"].startswith("NOT SIGNED OFF: short runs") and short["production_ready"] is False
    assert "PRODUCTION-READY" not in short["changelog"] and "PRODUCTION-READY" not in to_markdown(short)
    assert "Target: the built-in reference daemon (soak A, B, C), not the WATCHER daemon" in short["changelog"]
    mixed = combine({**full, "b": demo["b"]})  # one short soak is enough to withhold the signoff
    assert mixed["verdict"].startswith("NOT SIGNED OFF: short runs") and mixed["verdict_reasons"][0] == "short runs: B"

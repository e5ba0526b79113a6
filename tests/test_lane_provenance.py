"""Every artifact says what answered the calls: the simulator and its scenario, or a real
runner's path and version."""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from tests.test_multi_provider import soak


def test_simulator_run_says_so_everywhere(tmp_path: Path) -> None:
    code, out, e = soak(tmp_path, "--dry-run", "--scenario", "clean", "--providers", "gemini", "--rounds", "1",
                        "--jobs-per-provider", "1", "--run-id", "prov")  # fmt: skip
    assert code == 0, out
    assert e is not None
    prov = e["provenance"]
    assert prov["simulator"] is True and prov["kind"] == "simulator" and prov["scenario"] == "clean"
    assert prov["runner_version"] == "2.0.0" and prov["description"].startswith("dx-runner simulator, scenario clean")
    assert e["environment"]["simulator"] is True  # the established key stays
    # one description of the machine for both lanes: the soaks' Environment, then the lane's keys
    from soaklib.observe.environment import Environment, git_commit

    shared = set(Environment.__dataclass_fields__)
    assert shared <= set(e["environment"]) and e["environment"]["commit"] == git_commit()
    assert e["environment"]["packages"]["pandas"] and e["environment"]["cpu_count"]
    md = (tmp_path / "out" / "prov.md").read_text()
    assert "**Runner:** dx-runner simulator, scenario clean" in md
    assert "Runner: dx-runner simulator, scenario clean" in out


def test_real_runner_path_and_version(tmp_path: Path) -> None:
    runner = tmp_path / "dx-runner"
    runner.write_text(f'#!/bin/sh\nexec {sys.executable} -m soaklib.sim.dx_runner "$@"\n')
    runner.chmod(0o755)
    env = {"DX_SIM_STATE_DIR": str(tmp_path / "state")}
    code, out, e = soak(tmp_path, "--dx-runner", str(runner), "--outcome-dir", str(tmp_path / "state"), "--providers", "gemini",
                        "--rounds", "1", "--jobs-per-provider", "1", "--run-id", "live", env=env)  # fmt: skip
    assert code == 0, out
    assert e is not None
    prov = e["provenance"]
    assert prov["simulator"] is False and prov["runner_path"] == str(runner.resolve()) and prov["runner_version"] == "2.0.0"
    assert prov["runner_sha256"] == hashlib.sha256(runner.read_bytes()).hexdigest()
    md = (tmp_path / "out" / "live.md").read_text()
    assert f"**Runner:** dx-runner {runner.resolve()}, version 2.0.0" in md and "simulator" not in md.split("## Summary")[0]
    assert f"Runner: dx-runner {runner.resolve()}, version 2.0.0" in out

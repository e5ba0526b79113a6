"""The simulator's scenarios come from one place; an unknown one is a usage error (exit 2)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from soaklib.dispatch import SCENARIOS
from soaklib.dispatch.rounds import run_lane
from soaklib.errors import ParameterError
from soaklib.params import MultiProviderParams
from soaklib.sim.dx_runner import scenarios as dx_scenarios
from tests.test_multi_provider import soak


def test_one_list_of_nine_scenarios() -> None:
    assert SCENARIOS is dx_scenarios.SCENARIOS and len(SCENARIOS) == 9
    assert {"clean", "signoff-2026-02-20", "model-drift", "stall", "hang", "flaky", "cap", "no-op", "blocked"} == set(SCENARIOS)


def test_unknown_scenario_is_exit_2_naming_the_scenarios(tmp_path: Path) -> None:
    code, out, e = soak(tmp_path, "--dry-run", "--scenario", "nope", "--run-id", "nope")
    assert code == 2, out
    assert "unknown scenario 'nope'" in out and all(s in out for s in SCENARIOS)
    assert e is None and not (tmp_path / "out" / "nope.md").exists()  # refused before anything ran
    with pytest.raises(ParameterError) as err:
        run_lane(MultiProviderParams(dry_run=True, scenario="nope", output_dir=str(tmp_path / "lib")))
    assert err.value.exit_code == 2 and err.value.key == "scenario"


def test_help_lists_every_scenario() -> None:
    p = subprocess.run([sys.executable, "-m", "soaklib.cli", "multi-provider", "--help"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0
    text = " ".join(p.stdout.split())
    assert all(s in text for s in SCENARIOS), text

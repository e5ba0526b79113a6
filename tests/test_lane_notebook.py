"""The multi-provider notebook: papermill's string booleans, load mode that leaves a run's
evidence as it is unless asked, and the scenario list from its one place."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import nbformat
import papermill as pm
import pytest

from soaklib.dispatch import SCENARIOS
from soaklib.dispatch.rounds import run_lane
from soaklib.params import MultiProviderParams
from soaklib.report.multi_provider import write_evidence
from tests.conftest import REPO
from tests.test_multi_provider import FAST_SIM

NOTEBOOK = REPO / "notebooks" / "multi_provider.ipynb"


@pytest.fixture
def fast_sim(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in FAST_SIM.items():
        monkeypatch.setenv(k, v)


def _run(out: Path, **parameters: Any) -> None:
    pm.execute_notebook(str(NOTEBOOK), str(out), parameters=parameters, cwd=str(REPO), kernel_name="python3", progress_bar=False)


def _parameters() -> dict[str, str]:
    cell = next(c for c in nbformat.read(NOTEBOOK, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    return {m.group(1): ln for ln in cell.source.splitlines() if (m := re.match(r"(\w+)\s*:", ln))}


def test_parameters_name_every_scenario_and_write_evidence() -> None:
    params = _parameters()
    assert params["scenario"].split("#", 1)[1].split(":", 1)[1].strip() == ", ".join(SCENARIOS)
    assert params["write_evidence"].startswith("write_evidence: bool = False  # bool: True rewrites")


def test_fail_on_gate_false_from_papermill_is_false(tmp_path: Path, fast_sim: None) -> None:
    out_dir = tmp_path / "out"
    _run(tmp_path / "nb.ipynb", run_id="nbdrift", rounds=1, providers="opencode", jobs_per_provider=1, scenario="model-drift",
         output_dir=str(out_dir), fail_on_gate="false")  # fmt: skip  # papermill -p hands over the string
    e = json.loads((out_dir / "nbdrift.json").read_text())
    assert e["passed"] is False and e["exit_code"] == 1 and (out_dir / "nbdrift.md").exists()


def test_load_mode_leaves_the_evidence_unless_asked(tmp_path: Path, fast_sim: None) -> None:
    out_dir = tmp_path / "out"
    params = MultiProviderParams(dry_run=True, run_id="nbload", rounds=1, providers=["gemini"], jobs_per_provider=1,
                                 output_dir=str(out_dir))  # fmt: skip
    paths = write_evidence(run_lane(params).evidence, out_dir)
    paths["md"].write_text("operator's copy\n")
    before = {k: (p.read_bytes(), p.stat().st_mtime_ns) for k, p in paths.items()}
    _run(tmp_path / "load.ipynb", runs_json=str(paths["json"]))
    assert {k: (p.read_bytes(), p.stat().st_mtime_ns) for k, p in paths.items()} == before
    assert "left as it is" in (tmp_path / "load.ipynb").read_text()
    _run(tmp_path / "rewrite.ipynb", runs_json=str(paths["json"]), write_evidence="true")
    md = paths["md"].read_text()
    assert md.startswith("# Multi-provider soak validation: nbload") and "**Runner:** dx-runner simulator, scenario clean" in md

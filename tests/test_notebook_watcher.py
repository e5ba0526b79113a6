"""The watcher_soak notebook is committed clean and runs the demo soak under papermill."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import papermill as pm
import pytest
import yaml

from soaklib.params import SoakParams
from tests.conftest import REPO
from tests.test_notebooks import executed_text

NOTEBOOK = REPO / "notebooks" / "watcher_soak.ipynb"


def _parameter_names() -> list[str]:
    import ast

    nb = nbformat.read(NOTEBOOK, as_version=4)
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    return [n.target.id for n in ast.parse(cell.source).body]  # type: ignore[attr-defined]


def test_parameters_are_every_soak_key_plus_notebook_keys() -> None:
    import dataclasses

    names = _parameter_names()
    assert {f.name for f in dataclasses.fields(SoakParams)} | {"run_dir", "fail_on_gate", "write_signoff"} == set(names)
    cell = next(c for c in nbformat.read(NOTEBOOK, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    assert "write_signoff: bool = False  # bool: load mode" in cell.source
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert all(c.outputs == [] for c in nb.cells if c.cell_type == "code")


def test_notebook_runs_the_demo_soak_and_writes_the_signoff(tmp_path: Path) -> None:
    demo = yaml.safe_load((REPO / "parameters" / "soak_a_demo.yaml").read_text())
    demo.update(run_id="nbA", output_dir=str(tmp_path / "out"), duration_s=6, warmup_s=1, probes_at_s=[0.5],
                llm={"outages": [[2, 3.5]]},
                sampling={"interval_s": 0.25, "flush_s": 1, "health_interval_s": 0.25, "health_timeout_s": 0.5},
                sim={"poll_s": 0.2})
    out_nb = tmp_path / "watcher.ipynb"
    pm.execute_notebook(str(NOTEBOOK), str(out_nb), parameters=demo, cwd=str(REPO), kernel_name="python3",
                        progress_bar=False)
    signoff = json.loads((tmp_path / "out" / "nbA.json").read_text())
    assert signoff["soak"] == "a" and signoff["complete"] is True
    assert signoff["verdict"] == "PASS", [r for r in signoff["criteria"] if r["status"] != "PASS"]
    assert signoff["verdict_label"].startswith("PASS (short run") and signoff["production_ready"] is False
    assert signoff["provenance"]["reference_daemon"] is True
    assert "PASS (short run" in out_nb.read_text() and "production-ready)" not in out_nb.read_text()
    assert (tmp_path / "out" / "nbA.md").exists() and (tmp_path / "out" / "nbA" / "figures" / "leak.png").exists()
    rows = {r["metric"]: r for r in signoff["criteria"]}
    assert rows["llm_reconnect"]["observed"] == "recovered"
    # analysing the run again from its folder, without running a soak: nothing is rewritten
    artifacts = [tmp_path / "out" / "nbA.json", tmp_path / "out" / "nbA.md",
                 *sorted((tmp_path / "out" / "nbA" / "figures").iterdir())]
    before = [p.stat().st_mtime_ns for p in artifacts]
    out2 = tmp_path / "again.ipynb"
    pm.execute_notebook(str(NOTEBOOK), str(out2), parameters={"run_dir": str(tmp_path / "out" / "nbA")},
                        cwd=str(REPO), kernel_name="python3", progress_bar=False)
    shown = executed_text(out2)
    assert "run nbA (soak A)" in shown and "left unchanged" in shown
    assert [p.stat().st_mtime_ns for p in artifacts] == before
    pm.execute_notebook(str(NOTEBOOK), str(tmp_path / "rewrite.ipynb"), cwd=str(REPO), kernel_name="python3",
                        parameters={"run_dir": str(tmp_path / "out" / "nbA"), "write_signoff": "true"},
                        progress_bar=False)
    assert (tmp_path / "out" / "nbA.json").stat().st_mtime_ns > before[0]


def test_notebook_fails_papermill_on_a_fail_verdict(tmp_path: Path) -> None:
    params = {"run_id": "nbF", "output_dir": str(tmp_path / "out"), "duration_s": 3, "sim": {"crash_after_s": 1, "poll_s": 0.2},
              "sampling": {"interval_s": 0.25, "flush_s": 1, "health_interval_s": 0.25}}
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(str(NOTEBOOK), str(tmp_path / "fail.ipynb"), parameters=params, cwd=str(REPO),
                            kernel_name="python3", progress_bar=False)
    assert "GateFailed" in str(err.value) and "target_alive" in str(err.value)
    assert "FAIL (needs fixes)" in str(err.value)
    assert json.loads((tmp_path / "out" / "nbF.json").read_text())["verdict"] == "FAIL"
    # papermill -p fail_on_gate false injects the string "false": the gate stays off
    pm.execute_notebook(str(NOTEBOOK), str(tmp_path / "nogate.ipynb"), cwd=str(REPO), kernel_name="python3",
                        parameters={"run_dir": str(tmp_path / "out" / "nbF"), "fail_on_gate": "false"},
                        progress_bar=False)
    nb = nbformat.read(tmp_path / "nogate.ipynb", as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert "The target exited on its own" in json.dumps([o.get("data", {}) for o in outputs])
    with pytest.raises(pm.PapermillExecutionError, match="fail_on_gate = 'nope' is invalid"):
        pm.execute_notebook(str(NOTEBOOK), str(tmp_path / "bad.ipynb"), cwd=str(REPO), kernel_name="python3",
                            parameters={"run_dir": str(tmp_path / "out" / "nbF"), "fail_on_gate": "nope"},
                            progress_bar=False)

"""Notebooks are clean in git and execute under papermill, exporting the signoff."""
from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import nbformat
import papermill as pm
import pytest

from tests.conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
FAST_SIM = {"DX_SIM_TICK_S": "0.2", "DX_SIM_LATENCY_SCALE": "0.3", "DX_SIM_PREFLIGHT_S": "0.01"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_clean(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has outputs"
    # the parameters cell: literal assignments only, each with a comment (unit, meaning)
    source = tagged[0].source
    for node in ast.parse(source).body:
        assert isinstance(node, (ast.Assign, ast.AnnAssign)), ast.dump(node)
        assert node.value is not None
        ast.literal_eval(node.value)
    for line in source.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert "#" in line, f"parameter line without a comment: {line!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_cell_is_the_dataclasses_help(path: Path) -> None:
    """One source of parameter help: the cell is what soaklib.nbparams writes from params.py."""
    from soaklib.nbparams import NOTEBOOKS as CLASSES
    from soaklib.nbparams import parameters_cell

    nb = nbformat.read(path, as_version=4)
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert cell.source == parameters_cell(*CLASSES[path.name]), (
        f"{path.name}: the parameters cell and soaklib/params.py disagree; write the cell from "
        "soaklib.nbparams.parameters_cell")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_import_only_from_soaklib(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith("%"))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("soaklib"):
                assert node.module == "soaklib", f"{path.name}: from {node.module} import ... (use from soaklib import)"
            if isinstance(node, ast.Import):
                assert not [a.name for a in node.names if a.name.startswith("soaklib")], path.name


def executed_text(path: Path) -> str:
    """What the executed notebook printed and displayed, without papermill's injected parameters cell
    (which holds the parameters we passed, so a run id found there proves nothing)."""
    nb = nbformat.read(path, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected, "papermill injected no parameters cell"
    return json.dumps([c.outputs for c in nb.cells if c.cell_type == "code" and c not in injected])


@pytest.fixture
def fast_sim_env():
    old = {k: os.environ.get(k) for k in FAST_SIM}
    os.environ.update(FAST_SIM)
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def test_multi_provider_notebook_runs_and_exports(tmp_path: Path, fast_sim_env: None) -> None:
    out_nb = tmp_path / "mp.ipynb"
    pm.execute_notebook(
        str(REPO / "notebooks" / "multi_provider.ipynb"),
        str(out_nb),
        parameters={"run_id": "nb1", "rounds": 1, "output_dir": str(tmp_path / "out")},
        cwd=str(REPO),
        kernel_name="python3",
        progress_bar=False,
    )
    evidence = json.loads((tmp_path / "out" / "nb1.json").read_text())
    assert evidence["passed"] and evidence["total_jobs"] == 6
    assert (tmp_path / "out" / "nb1.md").exists()
    # analysing an existing run instead of executing one
    out2 = tmp_path / "mp2.ipynb"
    pm.execute_notebook(
        str(REPO / "notebooks" / "multi_provider.ipynb"),
        str(out2),
        parameters={"runs_json": str(tmp_path / "out" / "nb1.json")},
        cwd=str(REPO),
        kernel_name="python3",
        progress_bar=False,
    )
    assert "run nb1: PASSED, 6/6 jobs passed" in executed_text(out2)


def test_multi_provider_notebook_fails_papermill_on_gate(tmp_path: Path, fast_sim_env: None) -> None:
    out_nb = tmp_path / "mp-fail.ipynb"
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(
            str(REPO / "notebooks" / "multi_provider.ipynb"),
            str(out_nb),
            parameters={"run_id": "nbfail", "rounds": 1, "scenario": "model-drift", "output_dir": str(tmp_path / "out")},
            cwd=str(REPO),
            kernel_name="python3",
            progress_bar=False,
        )
    assert "GateFailed" in str(err.value) and "model_policy_violations" in str(err.value)
    assert out_nb.exists()
    assert json.loads((tmp_path / "out" / "nbfail.json").read_text())["passed"] is False


def test_watcher_notebook_parameters_are_the_soak_parameter_keys() -> None:
    import dataclasses

    from soaklib.params import SoakParams

    nb = nbformat.read(REPO / "notebooks" / "watcher_soak.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    names = {n.target.id if isinstance(n, ast.AnnAssign) else n.targets[0].id for n in ast.parse(cell.source).body}
    assert {f.name for f in dataclasses.fields(SoakParams)} <= names
    assert {"run_dir", "fail_on_gate", "soak"} <= names

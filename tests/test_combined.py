"""The combined A + B + C signoff and signoff.ipynb, on real short soaks of the reference daemon."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import papermill as pm
import pytest

from soaklib.errors import ParameterError
from soaklib.params import SoakParams, load_params
from soaklib.report.combined import (
    NOT_READY,
    NOT_SIGNED_OFF,
    combine,
    find_runs,
    pass_tables,
    side_by_side_html,
    to_markdown,
    write_combined,
)
from soaklib.soak.harness import run_soak
from tests.conftest import REPO

FAST = {"sampling": {"interval_s": 0.25, "flush_s": 1, "health_interval_s": 0.5}}


def soak(out: Path, soak: str, run_id: str, **over: Any) -> Path:
    sim = {"poll_s": 0.1, **over.pop("sim", {})}
    params = load_params(SoakParams, overrides={"soak": soak, "run_id": run_id, "output_dir": str(out), **FAST,
                                                "sim": sim, **over})
    return run_soak(params).run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three passing demo soaks, and a soak B that fails (a daemon that runs requests twice)."""
    out = tmp_path_factory.mktemp("combined") / "out"
    return {
        "a": soak(out, "a", "demo-a", duration_s=4, target={"halt": {"timeout_s": 5}}),
        "b": soak(out, "b", "demo-b", requests=[{"request_type": "selfplay", "count": 3, "episodes": 1},
                                                {"request_type": "learning_loop", "count": 2}]),
        "c": soak(out, "c", "demo-c", duration_s=9, sim={"search_width_start": 8192},
                  injection={"interval_s": 1.0, "bootstrap_draws": 300}),
        "b_fail": soak(out, "b", "demo-b-dup", sim={"duplicate_every": 2},
                       requests=[{"request_type": "selfplay", "count": 4, "episodes": 1}]),
    }


def test_three_passing_demo_soaks_are_not_signed_off_as_short_runs(runs, tmp_path):
    """Seconds-long demos on the reference daemon pass, and the combined verdict says they are short runs."""
    combined = combine({k: runs[k] for k in "abc"})
    assert combined["verdict"].startswith(f"{NOT_SIGNED_OFF}: short runs") and not combined["production_ready"]
    assert combined["failing"] == [] and combined["verdict_label"] == combined["verdict"]
    assert combined["verdict_reasons"][0] == "short runs: A, B, C"
    lines = combined["changelog"].splitlines()
    assert lines[0].startswith("SESSION_CHANGELOG_") and lines[0].endswith("_SOAK.md")
    assert lines[2].startswith("Soak Test A: PASS (short run") and "memory" in lines[2] and "halt" in lines[2]
    assert "of the plan's 2–4 h on the built-in reference daemon" in lines[2]
    assert lines[3].startswith("Soak Test B: PASS (short run") and "5/5 requests processed" in lines[3]
    assert "of the plan's 30–60 min on the built-in reference daemon" in lines[3]
    assert lines[4].startswith("Soak Test C: PASS (short run") and "cycles" in lines[4] and "convergence converged" in lines[4]
    assert "Target: the built-in reference daemon (soak A, B, C), not the WATCHER daemon" in lines
    assert lines[-1].startswith("Verdict: Autonomous loop NOT SIGNED OFF: short runs")
    assert "PRODUCTION-READY" not in combined["changelog"]
    for k in "abc":
        soak_entry = combined["soaks"][k]
        assert soak_entry["verdict"] == "PASS" and soak_entry["production_ready"] is False
        assert soak_entry["provenance"]["reference_daemon"] is True and soak_entry["plan_length_s"] >= 1800
    tables = pass_tables(combined)
    assert list(tables["b"]["metric"][:6]) == ["archived", "pending", "duplicates", "misrouted", "decision_entries",
                                               "errors"]
    assert "convergence" in set(tables["c"]["metric"]) and "halt_s" in set(tables["a"]["metric"])
    assert side_by_side_html(combined).count("<table>") == 3
    paths = write_combined({k: runs[k] for k in "abc"}, tmp_path)
    assert paths["json"].name.startswith("soak-signoff-") and paths["json"].suffix == ".json"
    assert json.loads(paths["json"].read_text())["verdict"] == combined["verdict"]
    md = paths["md"].read_text()
    assert "Verdict: Autonomous loop NOT SIGNED OFF: short runs" in md and md.count("| metric | observed |") == 3
    assert "PRODUCTION-READY" not in md and "- target: the built-in reference daemon" in md
    assert "| cycles |" in md and "| ≥ 1 | < 1 |" in md  # bounds with their direction, whole cycles


def test_one_failing_soak_needs_fixes_with_the_failing_rows(runs):
    combined = combine([runs["a"], runs["b_fail"], runs["c"]])  # soak read from each manifest
    assert combined["verdict"] == NOT_READY and not combined["production_ready"]
    failing = combined["failing"]
    assert [(r["soak"], r["metric"]) for r in failing] == [("b", "duplicates")]
    assert failing[0]["observed"] == 2 and failing[0]["triage"]
    assert [d.split("_")[2] for d in failing[0]["details"]] == ["01", "03"]  # the probe is dispatch 1
    assert "Soak Test B: FAIL (needs fixes) — 4/4 requests processed" in combined["changelog"]
    assert combined["verdict_reasons"] == ["soak B: FAIL duplicates"]
    assert "[FAIL: duplicates" in combined["changelog"]  # WARN rows (short-run slopes) may follow
    md = to_markdown(combined)
    assert "## Failing rows" in md and "Soak B · duplicates" in md and "handled 2 times" in md


def test_missing_soak_and_bad_runs(runs, tmp_path):
    combined = combine({"a": runs["a"], "c": runs["c"]})
    assert combined["verdict"] == NOT_READY and combined["soaks"]["b"]["verdict"] == "MISSING"
    assert [(r["soak"], r["status"]) for r in combined["failing"]] == [("b", "MISSING")]
    assert "Soak Test B: MISSING" in combined["changelog"]
    with pytest.raises(ParameterError, match=r"runs\[a\] = .* is a soak 'b' run, not soak 'a'"):
        combine({"a": runs["b"]})
    with pytest.raises(ParameterError, match="not a soak run folder"):
        combine({"a": tmp_path})
    with pytest.raises(ParameterError, match="two runs of soak b"):
        combine([runs["b"], runs["b_fail"]])
    latest = find_runs(runs["a"].parent)
    assert set(latest) == {"a", "b", "c"} and latest["b"] == runs["b_fail"]  # started last


def _execute(tmp_path: Path, name: str, **parameters: Any) -> Path:
    out_nb = tmp_path / name
    pm.execute_notebook(str(REPO / "notebooks" / "signoff.ipynb"), str(out_nb), parameters=parameters,
                        cwd=str(REPO), kernel_name="python3", progress_bar=False)
    return out_nb


def test_signoff_notebook_writes_the_combined_verdict_only_when_asked(runs, tmp_path):
    out = tmp_path / "signoff"
    given = {k: str(runs[k]) for k in "abc"}
    before = {p: p.stat().st_mtime_ns for k in "abc" for p in runs[k].rglob("*") if p.is_file()}
    _execute(tmp_path, "read.ipynb", runs=given, output_dir=str(out), fail_on_gate="false")  # papermill -p: a string
    assert not out.exists() or not list(out.glob("soak-signoff-*"))
    _execute(tmp_path, "ok.ipynb", runs=given, output_dir=str(out), write_signoff="true", fail_on_gate=False)
    (written,) = out.glob("soak-signoff-*.json")
    assert json.loads(written.read_text())["verdict"].startswith("NOT SIGNED OFF: short runs")
    assert (written.with_suffix(".md")).exists()
    after = {p: p.stat().st_mtime_ns for p in before}
    assert after == before  # the runs' own artifacts are never rewritten
    with pytest.raises(pm.PapermillExecutionError) as err:  # the gate: short runs are not signed off
        _execute(tmp_path, "gate.ipynb", runs=given, output_dir=str(out), fail_on_gate=True)
    assert "GateFailed" in str(err.value) and "NOT SIGNED OFF: short runs" in str(err.value)


def test_signoff_notebook_fails_the_gate_on_needs_fixes(runs, tmp_path):
    out = tmp_path / "signoff"
    with pytest.raises(pm.PapermillExecutionError) as err:
        _execute(tmp_path, "fail.ipynb", runs={"a": str(runs["a"]), "b": str(runs["b_fail"]), "c": str(runs["c"])},
                 output_dir=str(out), fail_on_gate=True, write_signoff=True)
    assert "GateFailed" in str(err.value) and "B:duplicates" in str(err.value)
    (written,) = out.glob("soak-signoff-*.json")
    combined = json.loads(written.read_text())
    assert combined["verdict"] == NOT_READY and combined["failing"][0]["metric"] == "duplicates"


@pytest.mark.parametrize("which", ["b", "c"])
def test_watcher_soak_notebook_shows_soak_b_and_c_without_rewriting_the_run(runs, tmp_path, which):
    out_nb = tmp_path / f"watcher-{which}.ipynb"
    signoff_json = runs[which].parent / f"{runs[which].name}.json"
    pm.execute_notebook(str(REPO / "notebooks" / "watcher_soak.ipynb"), str(out_nb),
                        parameters={"run_dir": str(runs[which]), "fail_on_gate": True},
                        cwd=str(REPO), kernel_name="python3", progress_bar=False)
    text = out_nb.read_text()
    assert "image/png" in text  # the queue timeline / the convergence plot
    assert ("soak_B_01_" in text) if which == "b" else ("'converged': True" in text)
    assert "PASS (short run" in text and "production-ready)" not in text
    assert not signoff_json.exists() and not (runs[which] / "figures").exists()  # load mode writes nothing

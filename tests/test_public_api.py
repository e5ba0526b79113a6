"""What a user of the library sees: the public names, the Run view, modes, booleans, errors."""
from __future__ import annotations

import os
import pickle
import pydoc
import stat
import subprocess
from pathlib import Path

import pandas as pd
import pytest

import soaklib
from soaklib.errors import ParameterError, ProtocolError, TargetError
from soaklib.params import as_bool
from soaklib.parts import PartWriter
from soaklib.runs import load_run
from soaklib.store import atomic_write_json, run_dir_for, start_manifest, write_table

PUBLIC = {"run_lane", "run_soak", "record", "load_run", "build_signoff", "write_signoff", "combine",
          "SoakError", "ParameterError", "TargetError", "ProtocolError", "GateFailed", "Run"}


def test_dir_and_help_show_the_public_names() -> None:
    assert set(dir(soaklib)) >= PUBLIC
    assert "Any" not in dir(soaklib) and "annotations" not in dir(soaklib)
    text = pydoc.render_doc(soaklib, renderer=pydoc.plaintext)
    for name in ("run_soak", "load_run", "build_signoff", "SoakError"):
        assert name in text
    assert callable(soaklib.run_soak) and callable(soaklib.load_run)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        soaklib.nope  # noqa: B018


@pytest.mark.parametrize("value,expected", [(True, True), (False, False), ("false", False), ("False", False),
                                            ("true", True), ("yes", True), ("off", False), ("0", False), (1, True)])
def test_papermill_booleans_mean_what_they_say(value: object, expected: bool) -> None:
    assert as_bool(value, "fail_on_gate") is expected


@pytest.mark.parametrize("value", ["maybe", 2, None, 0.5])
def test_a_non_boolean_is_refused_by_name(value: object) -> None:
    with pytest.raises(ParameterError, match="fail_on_gate"):
        as_bool(value, "fail_on_gate")


def test_errors_render_their_fields_and_pickle() -> None:
    e = TargetError("cannot start the target: not executable", pid=41, executable="/opt/daemon")
    assert "pid=41" in str(e) and "/opt/daemon" in str(e)
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is TargetError and back.pid == 41 and back.executable == "/opt/daemon" and str(back) == str(e)
    assert back.exit_code == 3
    p = ProtocolError("protocol check: UNKNOWN_TYPE", what="UNKNOWN_TYPE", profile="plan", details={"stray": ["x"]})
    back_p = pickle.loads(pickle.dumps(p))
    assert back_p.what == "UNKNOWN_TYPE" and back_p.details == {"stray": ["x"]} and back_p.exit_code == 1
    key = ParameterError("run_id = 'a b' is invalid", key="run_id", value="a b")
    assert str(key) == "run_id = 'a b' is invalid"  # fields the message already quotes are not repeated
    assert ParameterError.exit_code == 2


def test_artifacts_are_readable_as_the_umask_says(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "signoff.json", {"verdict": "PASS"})
        write_table(tmp_path / "t.parquet", pd.DataFrame({"a": [1]}))
        w = PartWriter(tmp_path / "samples")
        w.append({"a": 1})
        part = w.flush()
    finally:
        os.umask(old)
    for p in (tmp_path / "signoff.json", tmp_path / "t.parquet", part):
        assert p is not None and stat.S_IMODE(p.stat().st_mode) == 0o644, p


def test_run_dirs_are_absolute_against_the_working_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert run_dir_for("outputs/watcher-soak", "r1") == tmp_path / "outputs" / "watcher-soak" / "r1"


def test_a_soak_with_a_relative_output_dir_exits_0(tmp_path: Path) -> None:
    """The README's demo form: relative output_dir, run from the project folder."""
    soak = Path(os.environ.get("VIRTUAL_ENV", "")) / "bin" / "soak"
    exe = str(soak) if soak.exists() else str(Path(__import__("sys").executable).parent / "soak")
    proc = subprocess.run([exe, "watcher", "a", "--output-dir", "outputs/watcher-soak", "--run-id", "rel",
                           "--set", "duration_s=3", "--set", "warmup_s=0", "--set", "sampling.interval_s=0.5",
                           "--set", "sampling.flush_s=1", "--set", "target.halt.timeout_s=5", "--no-progress"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    assert (tmp_path / "outputs" / "watcher-soak" / "rel.json").is_file()
    assert (tmp_path / "outputs" / "watcher-soak" / "rel" / "llm.port").is_file()
    assert not (tmp_path / "outputs" / "watcher-soak" / "rel" / "outputs").exists()


def _lane_run(tmp_path: Path) -> Path:
    rd = tmp_path / "lane-1"
    rd.mkdir()
    rows = []
    for job_index, provider, attempts in ((0, "gemini", 2), (1, "gemini", 1), (0, "opencode", 1)):
        for attempt in range(1, attempts + 1):
            rows.append({"run_id": "lane-1", "round_num": 1, "job_index": job_index, "attempt": attempt,
                         "provider": provider, "success": attempt == attempts, "latency_ms": 100.0 * attempt,
                         "started_at": pd.Timestamp("2026-12-01T10:00:00Z") + pd.Timedelta(seconds=attempt)})
    write_table(rd / "jobs.parquet", pd.DataFrame(rows))
    atomic_write_json(tmp_path / "lane-1.json", {"run_id": "lane-1", "provider_summary": {}, "passed": True})
    return rd


def test_run_jobs_counts_jobs_and_attempts_apart(tmp_path: Path) -> None:
    run = load_run(_lane_run(tmp_path))
    assert run.kind == "multi-provider"
    assert len(run.attempts) == 4 and len(run.jobs) == 3
    retried = run.jobs[(run.jobs.provider == "gemini") & (run.jobs.job_index == 0)].iloc[0]
    assert retried["attempts"] == 2 and bool(retried["success"]) and retried["attempt"] == 2
    assert retried["first_started_at"] == pd.Timestamp("2026-12-01T10:00:01Z")
    assert run.jobs["success"].all()  # as the signoff counts them: every job passed in the end
    assert (~run.attempts["success"]).sum() == 1


def test_run_kind_is_set_for_every_run(tmp_path: Path) -> None:
    start_manifest(tmp_path / "s", "s", "watcher-a", soak="a")
    assert load_run(tmp_path / "s").kind == "watcher-a"
    (tmp_path / "empty").mkdir()
    assert load_run(tmp_path / "empty").kind == "unknown"

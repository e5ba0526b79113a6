"""The ``soak watcher | monitor | analyze | sim inject`` commands: parsing, exit codes, artifacts."""
from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from soaklib.cli import main
from soaklib.params import SoakParams, load_params
from soaklib.watcher.draws import read_history
from tests.conftest import PYTHON, REPO

FAST_SIM = {"DX_SIM_TICK_S": "0.2", "DX_SIM_LATENCY_SCALE": "0.3", "DX_SIM_PREFLIGHT_S": "0.01"}


def soak_cli(*args: str, timeout_s: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "soaklib.cli", *args], capture_output=True, text=True, timeout=timeout_s,
                          cwd=REPO, env={**os.environ, **(env or {})})


@pytest.fixture
def invoke() -> Iterator[Callable[..., Result]]:
    """The CLI in this process (fast, for errors raised before any work); SIGTERM handling restored."""
    saved = signal.getsignal(signal.SIGTERM)
    yield lambda *args: CliRunner().invoke(main, list(args))
    signal.signal(signal.SIGTERM, saved)


@pytest.mark.parametrize("path", ["parameters/soak_a.yaml", "parameters/soak_a_demo.yaml"])
def test_parameter_files_load(path: str) -> None:
    params = load_params(SoakParams, REPO / path)
    assert params.soak == "a"
    if path.endswith("soak_a.yaml"):
        assert params.duration_s == 14400 and params.probes_at_s == [3600, 7200]
        assert 30 <= params.sampling.interval_s <= 60 and params.target.command
        assert set(params.criteria) >= {"memory_growth_mb", "memory_slope_mb_per_h", "fd_range", "fd_trend",
                                        "tracebacks", "halt_s", "disk_growth_mb", "llm_reconnect"}
        from soaklib.analysis.criteria import apply_overrides
        from soaklib.report.signoff import soak_criteria

        applied = {c.metric: c for c in apply_overrides(soak_criteria("a"), params.criteria)}
        assert applied["memory_growth_mb"].pass_bound == 50 and applied["halt_s"].fail_bound == 30
    else:
        assert params.duration_s == 60 and params.target.command is None


@pytest.mark.parametrize("args, expected", [
    (["--set", "bogus=1"], "unknown parameter 'bogus'"),
    (["--set", "duration_s=abc"], "duration_s = 'abc' is invalid"),
    (["--set", "sampling.intervl_s=1"], "unknown parameter 'sampling.intervl_s'"),
    (["--set", "warmup_s=-1"], "warmup_s = -1"),
    (["--run-id", "../etc"], "is not a plain name"),
    (["--set", "sim.no_such_knob=1"], "unknown reference-daemon knob"),
    (["--set", "criteria.no_metric.pass_bound=1"], "criteria.no_metric: unknown metric id"),
    (["--set", "target.halt.method=flag_file"], "target.halt.method"),
    (["--set", "duration_s"], "is not KEY=VALUE"),
])
def test_bad_parameters_exit_2_with_a_clear_error(tmp_path: Path, invoke: Callable[..., Result], args: list[str],
                                                  expected: str) -> None:
    out = invoke("watcher", "a", "--output-dir", str(tmp_path), *args)
    assert out.exit_code == 2, out.output
    assert expected in out.output
    assert out.exception is None or isinstance(out.exception, SystemExit)
    assert not any(tmp_path.iterdir())  # nothing started, nothing written


def test_a_parameter_file_with_an_unknown_nested_key_exits_2(tmp_path: Path, invoke: Callable[..., Result]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"duration_s": 5, "target": {"halt": {"timeout": 3}}}))
    out = invoke("watcher", "a", "--params", str(bad), "--output-dir", str(tmp_path / "out"))
    assert out.exit_code == 2 and "'target.halt.timeout'" in out.output
    missing = invoke("watcher", "a", "--params", str(tmp_path / "nope.yaml"))
    assert missing.exit_code == 2 and "does not exist" in missing.output
    subprocess_run = soak_cli("watcher", "a", "--set", "bogus=1")  # the installed command, end to end
    assert subprocess_run.returncode == 2 and "unknown parameter 'bogus'" in subprocess_run.stderr


def test_a_target_that_cannot_start_exits_3(tmp_path: Path, invoke: Callable[..., Result]) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    out = invoke("watcher", "a", "--output-dir", str(tmp_path / "out"), "--force", "--set", f"project_dir={project}",
                 "--set", "target.command=[no-such-daemon-xyz, --daemon]", "--set", "duration_s=2")
    assert out.exit_code == 3, out.output
    assert "no-such-daemon-xyz" in out.output and "PATH" in out.output
    attach = invoke("watcher", "a", "--output-dir", str(tmp_path / "out2"), "--force",
                    "--set", "target.match=no-such-process-pattern-xyz", "--set", f"project_dir={project}")
    assert attach.exit_code == 3 and "no process matches" in attach.output


def test_a_passing_soak_exits_0_and_prints_the_signoff(tmp_path: Path, invoke: Callable[..., Result]) -> None:
    out = soak_cli("watcher", "a", "--output-dir", str(tmp_path), "--run-id", "ok", "--no-progress",
                   "--set", "duration_s=2", "--set", "warmup_s=0.5", "--set", "sampling.interval_s=0.2",
                   "--set", "sim.poll_s=0.1")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Verdict: PASS" in out.stdout and str(tmp_path / "ok.json") in out.stdout
    signoff = json.loads((tmp_path / "ok.json").read_text())
    assert signoff["verdict"] == "PASS" and signoff["parameters"]["duration_s"] == 2
    # analyze recomputes the same verdict from the folder alone
    again = invoke("analyze", str(tmp_path / "ok"))
    assert again.exit_code == 0 and "complete run, verdict PASS" in again.output


def test_analyze_rerenders_a_multi_provider_run(tmp_path: Path, invoke: Callable[..., Result]) -> None:
    run = soak_cli("multi-provider", "--dry-run", "--rounds", "1", "--providers", "gemini", "--jobs-per-provider", "1",
                   "--output-dir", str(tmp_path), "--run-id", "mp1", "--no-progress", env=FAST_SIM)
    assert run.returncode == 0, run.stderr
    before = json.loads((tmp_path / "mp1.json").read_text())
    (tmp_path / "mp1.md").unlink()
    out = invoke("analyze", str(tmp_path / "mp1"))
    assert out.exit_code == 0, out.output
    assert json.loads((tmp_path / "mp1.json").read_text()) == before
    assert "Multi-provider" in (tmp_path / "mp1.md").read_text()


def test_analyze_refuses_what_is_not_a_run(tmp_path: Path, invoke: Callable[..., Result]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert invoke("analyze", str(empty)).exit_code == 2
    assert invoke("analyze", str(tmp_path / "missing")).exit_code == 2


def test_monitor_records_a_command_and_draws_the_png(tmp_path: Path, invoke: Callable[..., Result]) -> None:
    out = soak_cli("monitor", "--interval-s", "0.1", "--samples", "5", "--out", str(tmp_path / "mon"),
                   "--", PYTHON, "-c", "import time; time.sleep(30)")
    assert out.returncode == 0, out.stderr
    assert "Samples: 5" in out.stdout
    assert (tmp_path / "mon" / "monitor.png").stat().st_size > 1000
    assert list((tmp_path / "mon" / "samples").glob("part-*.parquet"))
    none = invoke("monitor", "--samples", "2")
    assert none.exit_code == 2 and "exactly one of --pid, --match" in none.output
    both = invoke("monitor", "--pid", str(os.getpid()), "--samples", "2", "--duration-s", "1")
    assert both.exit_code == 2


def test_sim_inject_bootstraps_then_continues_the_sequence(tmp_path: Path, invoke: Callable[..., Result]) -> None:
    out = soak_cli("sim", "inject", "--project-dir", str(tmp_path), "--bootstrap", "5", "--count", "3")
    assert out.returncode == 0, out.stderr
    values = [d["value"] for d in read_history(tmp_path)]
    assert values == [875, 331, 694, 737, 468, 925, 202, 265]
    assert json.loads((tmp_path / "new_draw.flag").read_text())["first_index"] == 5
    again = soak_cli("sim", "inject", "--project-dir", str(tmp_path), "--bootstrap", "5")
    assert again.returncode == 0 and len(read_history(tmp_path)) == 9  # bootstrap only when there is no history
    bad = invoke("sim", "inject", "--project-dir", str(tmp_path), "--prng", "nope")
    assert bad.exit_code == 2 and "injection.prng" in bad.output

"""Each CLI flag reaches the library's argument: a flag that parses but changes nothing fails here.

The library call is replaced at its module boundary by a recorder that keeps the arguments
and stops the command (what runs behind it is tested end to end elsewhere). Every option of
each command must appear in the tables below, so a new flag comes with its check.
"""
from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from soaklib.cli import main


class Captured(Exception):
    """Raised by the stand-in library call, carrying what the CLI passed."""

    def __init__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        super().__init__("captured")
        self.args_, self.kwargs = args, kwargs


def capture(*args: Any, **kwargs: Any) -> Any:
    raise Captured(args, kwargs)


@pytest.fixture(autouse=True)
def _restore_sigterm() -> Iterator[None]:
    saved = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, saved)


def options(command: str) -> set[str]:
    cmd = main.commands[command]
    return {o for p in cmd.params if isinstance(p, click.Option) for o in p.opts} - {"--help"}


def invoke(*args: str) -> Captured:
    result = CliRunner().invoke(main, list(args))
    assert isinstance(result.exception, Captured), result.output
    return result.exception


def lane_table(tmp: Path) -> dict[str, tuple[list[str], str, Any]]:
    return {
        "--dry-run": ([], "dry_run", True),
        "--scenario": (["flaky"], "scenario", "flaky"),
        "--rounds": (["3"], "rounds", 3),
        "--parallel": (["4"], "parallel", 4),
        "--timeout-sec": (["12.5"], "timeout_sec", 12.5),
        "--worktree": ([str(tmp / "wt")], "worktree", str(tmp / "wt")),
        "--run-id": (["flagrun"], "run_id", "flagrun"),
        "--output-dir": ([str(tmp / "out")], "output_dir", str(tmp / "out")),
        "--providers": (["gemini,opencode"], "providers", ["gemini", "opencode"]),
        "--jobs-per-provider": (["3"], "jobs_per_provider", 3),
        "--max-retries": (["2"], "max_retries", 2),
        "--dx-runner": ([str(tmp / "dx-runner")], "dx_runner", str(tmp / "dx-runner")),
        "--outcome-dir": ([str(tmp / "oc")], "outcome_dir", str(tmp / "oc")),
    }


def test_every_lane_flag_reaches_run_lane(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import soaklib.fleet.lanes as lanes

    monkeypatch.setattr(lanes, "run_lane_on", capture)
    table = lane_table(tmp_path)
    assert options("multi-provider") - {"--params", "--no-progress", "--executor"} == set(table)
    for flag, (values, field, expected) in table.items():
        executor, params = invoke("multi-provider", flag, *values).args_
        assert getattr(params, field) == expected, flag
        assert executor == "local"
    params_file = tmp_path / "lane.yaml"
    params_file.write_text("rounds: 5\nparallel: 2\n")
    params = invoke("multi-provider", "--params", str(params_file), "--parallel", "3").args_[1]
    assert (params.rounds, params.parallel) == (5, 3)  # the file, then the flags over it
    captured = invoke("multi-provider", "--no-progress", "--executor", "dask://127.0.0.1:8786")
    assert captured.kwargs["progress"] is False and captured.args_[0] == "dask://127.0.0.1:8786"


def test_every_soak_flag_reaches_run_soak(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import soaklib.soak.harness as harness

    monkeypatch.setattr(harness, "run_soak", capture)
    table: dict[str, tuple[list[str], str, Any]] = {
        "--run-id": (["flagsoak"], "run_id", "flagsoak"),
        "--output-dir": ([str(tmp_path / "out")], "output_dir", str(tmp_path / "out")),
        "--force": ([], "force", True),
        "--keep-changes": ([], "keep_changes", True),
        "--host": (["rig-7"], "host", "rig-7"),
        "--set": (["sampling.interval_s=7"], "sampling", None),
    }
    assert options("watcher") - {"--params", "--no-progress"} == set(table)
    for flag, (values, field, expected) in table.items():
        params = invoke("watcher", "b", flag, *values).args_[0]
        assert params.soak == "b"
        if flag == "--set":
            assert params.sampling.interval_s == 7.0
        else:
            assert getattr(params, field) == expected, flag
    params_file = tmp_path / "soak.yaml"
    params_file.write_text("duration_s: 90\nrun_id: fromfile\n")
    params = invoke("watcher", "c", "--params", str(params_file), "--run-id", "fromflag").args_[0]
    assert (params.soak, params.duration_s, params.run_id) == ("c", 90.0, "fromflag")
    assert invoke("watcher", "a", "--no-progress").kwargs["progress"] is False


def test_every_monitor_flag_reaches_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import soaklib.observe.monitor as monitor

    monkeypatch.setattr(monitor, "record", capture)
    assert options("monitor") == {"--pid", "--match", "--interval-s", "--duration-s", "--samples", "--out"}
    kw = invoke("monitor", "--pid", "4242", "--interval-s", "0.5", "--duration-s", "9", "--out", str(tmp_path / "m")).kwargs
    assert (kw["pid"], kw["interval_s"], kw["duration_s"], kw["samples"]) == (4242, 0.5, 9.0, None)
    assert str(kw["out_dir"]) == str(tmp_path / "m")
    assert invoke("monitor", "--pid", "4242", "--samples", "3").kwargs["samples"] == 3
    kw = invoke("monitor", "--match", "watcher_agent", "--duration-s", "1").kwargs
    assert kw["match"] == "watcher_agent" and kw["pid"] is None
    kw = invoke("monitor", "--duration-s", "1", "--", "sleep", "5").kwargs
    assert kw["command"] == ["sleep", "5"]

"""A new soak type from this file alone: a driver, its criteria, an observer and a registry entry.

Soak "d" (a request burst) stages three requests at once, waits until the daemon has
archived them all, then halts it. Nothing under ``soaklib/`` knows of it: the harness, the
CLI's choices, the signoff, the combined signoff's wording and the verdict's plan length all
ask the registry. An unknown soak is an error that names the known ones.
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from soaklib import ParameterError, load_run, run_soak, write_signoff
from soaklib.analysis import Criterion
from soaklib.cli import main as soak_cli
from soaklib.params import SoakParams, load_params
from soaklib.report.combined import combined_soaks, summary_line
from soaklib.runs import Run
from soaklib.soak import registry
from soaklib.soak.context import SoakContext
from soaklib.soak.drivers.endurance import halt_target
from soaklib.soak.observers import TARGET_ALIVE, read_observations, soak_of
from soaklib.store import MANIFEST
from soaklib.watcher.protocol import build_request, write_request
from tests.test_soak_a import FAST

BURST = 3


class BurstSoak:
    """Stage ``BURST`` requests at once; done when all are archived (or at ``duration_s``)."""

    soak = "d"

    def __init__(self) -> None:
        self.staged: list[str] = []

    def setup(self, ctx: SoakContext) -> None:
        for seq in range(1, BURST + 1):
            name, body = build_request(ctx.profile, "selfplay", seq, source="soak_test_D", episodes=1,
                                       prefix="soak_D_burst", reason="soak D: a burst of requests")
            self.staged.append(write_request(ctx.project_dir, ctx.profile, name, body).name)
        ctx.event("burst_staged", count=len(self.staged), message=f"{len(self.staged)} requests staged")

    def _archived(self, ctx: SoakContext) -> int:
        archive = ctx.profile.path(ctx.project_dir, "archive_dir")
        names = [p.name for p in archive.iterdir()] if archive and archive.is_dir() else []
        return sum(any(n.endswith(s) for n in names) for s in self.staged)

    def tick(self, ctx: SoakContext, row: dict[str, Any]) -> bool:
        return self._archived(ctx) == len(self.staged) or ctx.elapsed_s() >= ctx.params.duration_s

    def finish(self, ctx: SoakContext) -> dict[str, Any]:
        out: dict[str, Any] = {"staged": len(self.staged), "archived": self._archived(ctx),
                               "drained_at_s": round(ctx.elapsed_s(), 3)}
        if ctx.target.is_running():
            ctx.record_halt(halt_target(ctx))
        return out


DRAINED = Criterion("burst_archived", "Every request of the burst archived", "requests", BURST, BURST, "min",
                    count=True, triage="The daemon did not archive the burst: read target.log.")


def criteria_d() -> list[Criterion]:
    return [DRAINED, TARGET_ALIVE]


def observe_d(run: Run, analysis: Mapping[str, Any]) -> dict[str, Any]:
    driver = read_observations(run).get("observations") or {}
    alive = None if not run.complete else read_observations(run).get("target_exit") is None
    return {"burst_archived": driver.get("archived"), "staged": driver.get("staged"), "target_alive": alive}


def summary_d(observed: Mapping[str, Any], made_on: str) -> list[str]:
    return [f"{observed.get('burst_archived')}/{observed.get('staged')} of the burst archived", made_on]


@pytest.fixture
def soak_d() -> Iterator[registry.SoakType]:
    registry.register_builtin_first()
    entry = registry.register(registry.SoakType("d", "Request burst", BurstSoak, criteria_d, observe_d,
                                                (60.0, 120.0), "1–2 min", summary=summary_d, in_combined=False))
    yield entry
    registry.unregister("d")


def test_a_soak_registered_from_a_test_file_runs_end_to_end(tmp_path: Path, soak_d: registry.SoakType) -> None:
    assert registry.letters() == ("a", "b", "c", "csys", "d") and combined_soaks() == ("a", "b", "c")
    params = load_params(SoakParams, overrides={
        "soak": "d", "run_id": "burst", "output_dir": str(tmp_path), "duration_s": 20, "warmup_s": 0,
        "sampling": dict(FAST), "sim": {"poll_s": 0.1}, "llm": {"health_url": None}})
    result = run_soak(params)
    run = load_run(result.run_dir)
    assert soak_of(run) == "d" and run.manifest["kind"] == "watcher-d"
    paths = write_signoff(run)
    signoff = json.loads(paths["json"].read_text())
    rows = {r["metric"]: r for r in signoff["criteria"]}
    assert list(rows) == ["burst_archived", "target_alive"]
    assert rows["burst_archived"]["observed"] == BURST and rows["burst_archived"]["status"] == "PASS"
    assert signoff["verdict"] == "PASS" and signoff["soak"] == "d"
    assert read_observations(run)["observations"]["drained_at_s"] < 20  # stopped when drained, not at the end
    assert signoff["provenance"]["plan_length"] == "1–2 min" and signoff["plan_length_s"] == 60.0
    line = summary_line("d", signoff)
    assert line.startswith("Soak Test D: PASS") and f"{BURST}/{BURST} of the burst archived" in line
    assert "burst_archived" in paths["md"].read_text()


def test_the_cli_asks_the_registry(tmp_path: Path, soak_d: registry.SoakType) -> None:
    runner = CliRunner()
    listed = runner.invoke(soak_cli, ["watcher", "--help"])
    assert "[a|b|c|csys|d]" in listed.output
    unknown = runner.invoke(soak_cli, ["watcher", "z", "--output-dir", str(tmp_path)])
    assert unknown.exit_code == 2 and "known soaks are a, b, c, csys, d" in unknown.output


def test_an_unknown_soak_is_an_error_never_a_fallback(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="soak 'z' is unknown: known soaks are a, b, c"):
        run_soak(load_params(SoakParams, overrides={"soak": "z", "output_dir": str(tmp_path)}))
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / MANIFEST).write_text(json.dumps({"kind": "watcher-z", "run_id": "old", "complete": True}))
    with pytest.raises(ParameterError, match="soak 'z' is unknown"):
        soak_of(load_run(folder))

"""The signoff from a run folder alone: known-value runs written with the store, no processes."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from soaklib.params import SoakParams, to_dict
from soaklib.parts import PartWriter
from soaklib.report.signoff import (
    build_signoff,
    growth_table,
    llm_reconnect,
    observe_a,
    soak_criteria,
    to_markdown,
    write_signoff,
)
from soaklib.runs import load_run
from soaklib.soak.context import EVENT_SCHEMA
from soaklib.soak.sampling import sample_schema
from soaklib.store import atomic_write_json, finish_manifest, start_manifest, write_table

MIB = 2**20


def make_run(tmp: Path, run_id: str = "r1", *, soak: str = "a", seconds: float = 3600.0, step_s: float = 10.0,
             rss_mb_per_h: float = 0.0, fds: Any = 10, llm: Any = 200, tracebacks: int = 0,
             observations: dict[str, Any] | None = None, complete: bool = True, criteria: dict | None = None,
             gpu: bool = False, warmup_s: float | None = 0.0) -> Path:
    """A run folder as the harness writes it, with planted values."""
    run_dir = tmp / run_id
    params = to_dict(SoakParams(soak=soak, run_id=run_id, duration_s=seconds, criteria=criteria or {},  # type: ignore[arg-type]
                                warmup_s=warmup_s))
    start_manifest(run_dir, run_id, f"watcher-{soak}", soak=soak, parameters=params,
                   environment={"gpu": {"available": False, "reason": "NVML unavailable: test"}})
    t = np.arange(0.0, seconds + step_s / 2, step_s)
    n = len(t)
    fd_values = fds(t) if callable(fds) else np.full(n, fds)
    llm_values = llm(t) if callable(llm) else np.full(n, llm)
    writer = PartWriter(run_dir / "samples", schema=sample_schema())
    for i, ts in enumerate(t):
        rss = int(100 * MIB + rss_mb_per_h * MIB * ts / 3600.0)
        writer.append({
            "run_id": run_id, "t_s": float(ts), "alive": True, "rss_bytes": rss, "tree_rss_bytes": rss,
            "num_fds": int(fd_values[i]), "tree_num_fds": int(fd_values[i]), "threads": 4,
            "gpu_available": gpu, "gpu_target_bytes": 2 * 1024 * MIB if gpu else None,
            "watched_bytes": int(MIB * ts / 360.0), "llm_status": int(llm_values[i]),
            "llm_latency_ms": 3.0 if llm_values[i] else None, "log_errors": 0, "log_tracebacks": tracebacks,
            "sample_cost_ms": 1.5, "bytes_read": 0, "harness_rss_bytes": 60 * MIB,
        })
        if i % 50 == 49:
            writer.flush()
    writer.flush()
    write_table(run_dir / "events.parquet", pa.Table.from_pylist(
        [{"run_id": run_id, "t_s": 0.0, "kind": "target_started", "message": "started", "data": "{}"}],
        schema=EVENT_SCHEMA))
    if observations is not None:
        atomic_write_json(run_dir / "observations.json", observations)
    if complete:
        finish_manifest(run_dir)
    return run_dir


HALTED = {"soak": "a", "observations": {}, "halt": {"halt_s": 1.25, "forced": False, "exited": True},
          "target_exit": None, "interrupted": False, "error": None, "gpu_notes": ["NVML unavailable: no driver"]}


def by_metric(signoff: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["metric"]: r for r in signoff["criteria"]}


def test_a_planted_slope_is_measured_and_judged_as_a_rate(tmp_path: Path) -> None:
    run = load_run(make_run(tmp_path, rss_mb_per_h=40.0, observations=HALTED))
    s = build_signoff(run)
    r = by_metric(s)
    assert r["memory_slope_mb_per_h"]["observed"] == pytest.approx(40.0, rel=1e-3)
    assert r["memory_growth_mb"]["observed"] == pytest.approx(40.0, rel=1e-3)  # one hour at 40 MB/h
    # the plan's 50 / 200 MB over 4 h, judged on a 1 h run: 12.5 / 50 MB
    assert r["memory_growth_mb"]["pass_bound"] == pytest.approx(12.5) and r["memory_growth_mb"]["fail_bound"] == pytest.approx(50)
    assert r["memory_growth_mb"]["status"] == "WARN" and r["memory_slope_mb_per_h"]["status"] == "WARN"
    assert r["halt_s"]["observed"] == 1.25 and r["halt_s"]["status"] == "PASS"
    assert s["verdict"] == "PASS" and s["complete"] is True  # WARN does not fail
    assert s["schema_version"] == 1 and s["soak"] == "a" and s["parameters"]["run_id"] == "r1"
    assert set(s) >= {"schema_version", "run_id", "soak", "verdict", "complete", "criteria", "parameters",
                      "environment", "analysis", "events", "notes", "figures"}
    table = growth_table(s)
    assert list(table["series"]) == ["tree RSS", "RSS"]
    assert table["slope_mb_per_h"].iloc[0] == pytest.approx(40.0, rel=1e-3)


def test_a_flat_run_passes_and_a_steep_one_fails_with_the_plans_triage(tmp_path: Path) -> None:
    flat = build_signoff(load_run(make_run(tmp_path, "flat", observations=HALTED)))
    assert flat["verdict"] == "PASS", [r for r in flat["criteria"] if r["status"] != "PASS"]
    assert all(r["triage"] == "" for r in flat["criteria"])
    steep = build_signoff(load_run(make_run(tmp_path, "steep", rss_mb_per_h=300.0, tracebacks=2, observations=HALTED)))
    r = by_metric(steep)
    assert r["memory_growth_mb"]["status"] == "FAIL" and "tracemalloc" in r["memory_growth_mb"]["triage"]
    assert r["tracebacks"]["observed"] == 2 and r["tracebacks"]["status"] == "FAIL"
    md = to_markdown(steep)
    assert "**Verdict: FAIL (needs fixes)**" in md and "## Triage" in md and "tracemalloc" in md
    assert "| memory_growth_mb |" in md


def test_fd_trend_range_and_threads(tmp_path: Path) -> None:
    leak = build_signoff(load_run(make_run(tmp_path, "fd", fds=lambda t: 10 + t // 60, observations=HALTED)))
    r = by_metric(leak)
    assert r["fd_trend"]["observed"] == 1 and r["fd_trend"]["status"] == "FAIL"
    assert r["fd_range"]["observed"] == 60 and r["fd_range"]["status"] == "FAIL"
    noisy = build_signoff(load_run(make_run(tmp_path, "fdn", fds=lambda t: 10 + (t // 10) % 3, observations=HALTED)))
    assert by_metric(noisy)["fd_trend"]["status"] == "PASS" and by_metric(noisy)["fd_range"]["observed"] == 2
    assert noisy["analysis"]["threads"]["fd_range"] == 0


@pytest.mark.parametrize("statuses, state", [
    ([200] * 10, "never_down"),
    ([200, 200, 0, 0, 0, 200, 200], "recovered"),
    ([200, 200, 0, 0], "lost"),
    ([0, 0, 200], "recovered"),
])
def test_llm_reconnect_states(statuses: list[int], state: str) -> None:
    import pandas as pd

    s = pd.DataFrame({"t_s": np.arange(len(statuses), dtype=float), "llm_status": statuses,
                      "llm_latency_ms": [3.0 if x else None for x in statuses]})
    got = llm_reconnect(s)
    assert got["state"] == state and got["down_samples"] == statuses.count(0)
    assert llm_reconnect(pd.DataFrame())["state"] is None


def test_a_lost_llm_fails_with_the_llm_triage(tmp_path: Path) -> None:
    s = build_signoff(load_run(make_run(tmp_path, "lost", llm=lambda t: np.where(t > 3000, 0, 200), observations=HALTED)))
    r = by_metric(s)["llm_reconnect"]
    assert r["observed"] == "lost" and r["status"] == "FAIL" and "8080" in r["triage"]


def test_a_partial_run_is_incomplete_and_unobserved_metrics_fail_with_a_note(tmp_path: Path) -> None:
    run = load_run(make_run(tmp_path, "part", seconds=600, observations=None, complete=False))
    s = build_signoff(run)
    assert s["complete"] is False and s["verdict"] == "FAIL"
    r = by_metric(s)
    assert r["halt_s"]["status"] == "FAIL" and "partial run" in r["halt_s"]["note"]
    assert r["memory_slope_mb_per_h"]["status"] == "PASS"  # what the samples show is still judged
    assert r["target_alive"]["observed"] is True
    assert any("incomplete run" in n for n in s["notes"])


def test_forced_halt_and_target_death_explain_their_rows(tmp_path: Path) -> None:
    forced = dict(HALTED, halt={"halt_s": None, "forced": True, "error": "did not exit within 30 s; process tree terminated"})
    r = by_metric(build_signoff(load_run(make_run(tmp_path, "forced", observations=forced))))
    assert r["halt_s"]["status"] == "FAIL" and "process tree terminated" in r["halt_s"]["note"]
    died = dict(HALTED, halt=None, target_exit={"returncode": -9, "signal": 9, "exited_at_s": 1800.0})
    r = by_metric(build_signoff(load_run(make_run(tmp_path, "died", observations=died))))
    assert r["target_alive"]["status"] == "FAIL" and "signal 9" in r["target_alive"]["note"]
    assert "exited on its own" in r["halt_s"]["note"]


def test_criteria_overrides_from_the_parameters_apply(tmp_path: Path) -> None:
    run = load_run(make_run(tmp_path, "ovr", observations=HALTED,
                            criteria={"halt_s": {"pass_bound": 0.5, "fail_bound": 1.0}}))
    r = by_metric(build_signoff(run))["halt_s"]
    assert (r["pass_bound"], r["fail_bound"], r["status"]) == (0.5, 1.0, "FAIL")
    assert [c.metric for c in soak_criteria("a")][-1] == "target_alive"


def test_gpu_notes_and_vram_analysis(tmp_path: Path) -> None:
    without = build_signoff(load_run(make_run(tmp_path, "nogpu", observations=HALTED)))
    assert "GPU metrics unavailable: NVML unavailable: no driver" in without["notes"]
    assert without["analysis"]["vram"] is None
    with_gpu = build_signoff(load_run(make_run(tmp_path, "gpu", gpu=True, observations=dict(HALTED, gpu_notes=[]))))
    assert not any("GPU metrics unavailable" in n for n in with_gpu["notes"])
    assert with_gpu["analysis"]["vram"]["slope_mb_per_h"] == pytest.approx(0.0, abs=1e-9)


def test_write_signoff_writes_json_md_and_linked_figures(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, "w1", rss_mb_per_h=100.0, observations=HALTED)
    paths = write_signoff(run_dir)
    signoff = json.loads(paths["json"].read_text())
    assert paths["json"] == tmp_path / "w1.json" and paths["md"] == tmp_path / "w1.md"
    assert set(signoff["figures"]) >= {"leak", "fds", "threads", "disk", "llm"}
    md = paths["md"].read_text()
    for rel in signoff["figures"].values():
        assert (tmp_path / rel).is_file() and f"]({rel})" in md
    assert load_run(run_dir).signoff["verdict"] == signoff["verdict"] == "FAIL"
    assert not list(tmp_path.glob(".*.tmp"))


def test_soak_b_and_c_take_the_drivers_observations(tmp_path: Path) -> None:
    obs = {"soak": "b", "observations": {"archived": 10, "staged": 10, "pending": 0, "duplicates": 0, "misrouted": 0,
                                         "decision_entries": 10, "fifo_ok": True}, "halt": None, "target_exit": None,
           "interrupted": False, "error": None}
    s = build_signoff(load_run(make_run(tmp_path, "b1", soak="b", seconds=300, observations=obs)))
    r = by_metric(s)
    assert s["soak"] == "b" and r["archived"]["status"] == "PASS" and r["errors"]["observed"] == 0
    assert s["verdict"] == "PASS", [x for x in s["criteria"] if x["status"] != "PASS"]
    assert observe_a(load_run(make_run(tmp_path, "a1", observations=HALTED)))["halt_s"] == 1.25


def test_figures_draw_a_bounded_number_of_points_and_keep_every_outage() -> None:
    import numpy as np
    import pandas as pd

    from soaklib.report.plots import MAX_PLOT_POINTS, thin

    n = 1_000_000
    frame = pd.DataFrame({"t_s": np.arange(n, dtype=float), "llm_status": np.full(n, 200.0)})
    frame.loc[[17, 500_001], "llm_status"] = 0.0
    drawn = thin(frame, keep=frame["llm_status"] == 0)
    assert len(drawn) <= MAX_PLOT_POINTS + 3 and {17, 500_001, n - 1} <= set(drawn.index)
    assert thin(frame.head(10)) is not None and len(thin(frame.head(10))) == 10


def test_soak_b_out_of_order_dispatch_fails_the_fifo_row(tmp_path: Path) -> None:
    obs = {"soak": "b", "observations": {"archived": 3, "staged": 3, "pending": 0, "duplicates": 0, "misrouted": 0,
                                         "decision_entries": 3, "fifo_ok": False,
                                         "details": {"fifo": ["soak_B_02 dispatched after soak_B_03"]}},
           "halt": None, "target_exit": None, "interrupted": False, "error": None}
    s = build_signoff(load_run(make_run(tmp_path, "bf", soak="b", seconds=300, observations=obs)))
    fifo = next(r for r in s["criteria"] if r["metric"] == "fifo")
    assert fifo["status"] == "FAIL" and "filename order" in fifo["triage"] and s["verdict"] == "FAIL"

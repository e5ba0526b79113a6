"""``soaklib.explore``: panels, events, overlays, zoom redraws and the warm-up / window callbacks."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

import soaklib
from soaklib.errors import ParameterError
from soaklib.params import SoakParams, to_dict
from soaklib.parts import PartWriter
from soaklib.report.explore import explore
from soaklib.report.explore_series import downsample
from soaklib.report.signoff import build_signoff
from soaklib.runs import load_run
from soaklib.soak.context import EVENT_SCHEMA
from soaklib.soak.sampling import sample_schema
from soaklib.store import finish_manifest, start_manifest, write_table

MIB = 2**20


def write_run(root: Path, run_id: str, rss_mb: Any, *, seconds: float = 7200.0, step_s: float = 10.0,
              warmup_s: float | None = 0.0, events: list[tuple[float, str, str]] = ()) -> Path:
    """A soak A folder as the harness writes it; ``rss_mb(t)`` plants the memory curve (MiB)."""
    run_dir = root / run_id
    params = to_dict(SoakParams(soak="a", run_id=run_id, duration_s=seconds, warmup_s=warmup_s))  # type: ignore[arg-type]
    start_manifest(run_dir, run_id, "watcher-a", soak="a", parameters=params, environment={})
    writer = PartWriter(run_dir / "samples", schema=sample_schema())
    rng = np.random.default_rng(7)
    t = np.arange(0.0, seconds + step_s / 2, step_s)
    rss = (rss_mb(t) + rng.normal(0, 0.05, t.size)) * MIB
    for i, ts in enumerate(t):
        writer.append({"run_id": run_id, "t_s": float(ts), "alive": True, "rss_bytes": int(rss[i]),
                       "tree_rss_bytes": int(rss[i]), "num_fds": 12, "tree_num_fds": 12, "threads": 4,
                       "watched_bytes": int(ts) * 1000, "llm_status": 200, "llm_latency_ms": 3.0 + (i % 5),
                       "log_errors": 0, "log_tracebacks": 0, "requests_pending": i % 3})
        if i % 500 == 499:
            writer.flush()
    writer.flush()
    rows = [{"run_id": run_id, "t_s": 0.0, "kind": "target_started", "message": "started pid 1", "data": "{}"}]
    rows += [{"run_id": run_id, "t_s": t_, "kind": k, "message": m, "data": "{}"} for t_, k, m in events]
    write_table(run_dir / "events.parquet", pa.Table.from_pylist(rows, schema=EVENT_SCHEMA))
    finish_manifest(run_dir)
    return run_dir


def late_leak(t: np.ndarray) -> np.ndarray:
    """Flat at 100 MiB for 1.5 h, then 400 MiB/h."""
    return 100.0 + 400.0 * np.clip(t - 5400.0, 0, None) / 3600.0


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("explore")
    return {
        "late": write_run(root, "late-leak", late_leak, events=[(600.0, "probe_injected", "probe p1"),
                                                                (5400.0, "llm_down", "LLM health: no answer")]),
        "flat": write_run(root, "flat", lambda t: np.full(t.size, 100.0), seconds=3600.0),
    }


def rows(view: Any) -> dict[str, dict[str, Any]]:
    return {r["metric"]: r for r in view.rows}


def test_the_default_view_matches_the_signoff(runs: dict[str, Path]) -> None:
    run = load_run(runs["late"])
    signoff = build_signoff(run)
    method = (signoff["analysis"]["tree_rss"] or {}).get("verdict") or "theil-sen"  # what the signoff used
    e = soaklib.explore(run, method=method)
    by_metric = {r["metric"]: r for r in signoff["criteria"]}
    view = rows(e.views[0])
    for metric in ("memory_slope_mb_per_h", "memory_growth_mb"):
        assert view[metric]["observed"] == pytest.approx(by_metric[metric]["observed"], rel=1e-9)
        assert view[metric]["status"] == by_metric[metric]["status"]


def test_the_default_warmup_is_the_signoffs_for_either_method(tmp_path: Path) -> None:
    run = load_run(write_run(tmp_path, "no-warmup", late_leak, warmup_s=None))
    signoff = build_signoff(run)
    by_metric = {r["metric"]: r for r in signoff["criteria"]}
    for method in ("theil-sen", "segmented"):
        e = explore(run, method=method, widget=False)
        expected = signoff["analysis"].get("memory_warmup_s", 0.0) if method == "segmented" else 360.0  # 5% of 2 h
        assert e.warmup_s == expected
    method = signoff["analysis"]["tree_rss"].get("verdict") or "theil-sen"
    view = rows(explore(run, method=method, widget=False).views[0])
    assert view["memory_slope_mb_per_h"]["observed"] == pytest.approx(by_metric["memory_slope_mb_per_h"]["observed"])


def test_without_a_written_signoff_the_slider_moves_a_theil_sen_fit(runs: dict[str, Path]) -> None:
    e = explore(runs["late"])
    assert e.methods == ["theil-sen"] and e.views[0].method == "theil-sen"
    assert e.views[0].status() != "FAIL"  # over the whole run the late leak does not dominate the median slope


def test_the_segmented_fit_finds_the_late_leak_in_the_whole_run(runs: dict[str, Path]) -> None:
    v = explore(runs["late"], method="segmented", widget=False).views[0]
    assert v.method == "segmented" and v.status() == "FAIL"
    assert v.slope_mb_per_h == pytest.approx(400.0, rel=0.02)
    with pytest.raises(ParameterError, match="method"):
        explore(runs["late"], method="ols")


def test_selecting_the_late_window_flips_the_row_to_fail(runs: dict[str, Path]) -> None:
    e = explore(runs["late"])
    before = e.views[0]
    e.window_slider.value = [5400.0, 7200.0]  # the widget's callback, as a user drags the range
    after = e.views[0]
    assert after.status() == "FAIL" and after.verdict == "FAIL"
    assert after.slope_mb_per_h == pytest.approx(400.0, rel=0.02)
    assert after.low_mb_per_h is not None and after.low_mb_per_h > 50.0
    assert after.slope_mb_per_h > 10 * (before.slope_mb_per_h or 0.0)
    assert "FAIL" in e._row_html.value and "window 90–120 min" in e._row_html.value
    fit_x = e.figure.data[-1].x
    assert fit_x[0] * e.unit_s >= 5400.0 - 1e-6  # the fit line is drawn over the window


def test_moving_the_warmup_changes_the_slope_and_the_row(runs: dict[str, Path]) -> None:
    e = explore(runs["late"])
    s0, status0 = e.views[0].slope_mb_per_h, e.views[0].status()
    e.warmup_slider.value = 5400.0
    v = e.views[0]
    assert v.warmup_s == 5400.0 and v.slope_mb_per_h != s0 and v.status() == "FAIL" != status0
    assert v.n_samples == pytest.approx(1800 / 10 + 1, abs=1)
    e.set_warmup(0.0)  # from Python: the slider follows, without a second recomputation
    assert e.warmup_slider.value == 0.0 and e.views[0].slope_mb_per_h == pytest.approx(
        explore(runs["late"]).set_warmup(0.0)[0].slope_mb_per_h)
    with pytest.raises(ParameterError, match="start < end"):
        e.set_window(10.0, 5.0)


def test_panels_events_and_crosshair(runs: dict[str, Path]) -> None:
    e = explore(runs["late"], widget=False)
    titles = [a.text for a in e.figure.layout.annotations]
    for title in ("Memory (MiB)", "Open FDs (FDs)", "Threads (threads)", "Disk (MiB)", "Queue depth (requests)",
                  "LLM health latency (ms)", "Errors in the target's log (lines)"):
        assert title in titles
    assert not any(t.startswith("VRAM") for t in titles)  # no GPU series in this run: no empty panel
    events = next(t for t in e.figure.data if t.name == "events")
    assert any("probe p1" in h for h in events.hovertext) and any("llm_down" in h for h in events.hovertext)
    assert e.figure.layout.hovermode == "x unified" and e.figure.layout.xaxis.spikemode == "across"
    assert e.unit == "min"  # a 2-hour run


def test_zoom_redraws_the_visible_range_at_full_density(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, "long", late_leak, seconds=6 * 3600.0, step_s=1.0)
    e = explore(run_dir, max_points=500)
    memory = e.figure.data[0]
    assert len(memory.x) <= 500
    e.zoom(5400.0, 5700.0)
    x = np.asarray(e.figure.data[0].x) * e.unit_s
    assert len(x) == 301 + 2 and x.min() == 5399.0 and x.max() == 5701.0  # every sample of 5 minutes, one either side
    assert list(e.figure.layout.xaxis.range) == pytest.approx([5400 / 3600, 5700 / 3600])
    e.figure.layout.xaxis.range = [1.0, 1.5]  # a zoom in the browser arrives as a relayout of the range
    x = np.asarray(e.figure.data[0].x) * e.unit_s
    assert x.min() <= 3601 and x.max() >= 5399 and len(x) <= 500
    e.zoom(None, None)
    assert len(e.figure.data[0].x) <= 500


def test_downsampling_keeps_a_one_sample_spike() -> None:
    t = np.arange(1_000_000, dtype=float)
    v = np.sin(t / 5e4)
    v[123_457] = 50.0
    x, y = downsample(t, v, 1000)
    assert len(x) == 1000 and y.max() == 50.0 and x[y.argmax()] == 123_457
    assert np.all(np.diff(x) > 0)
    x, y = downsample(t[:10], np.where(np.arange(10) == 3, np.nan, 1.0), 1000)
    assert len(x) == 9  # NaN dropped, short series kept whole


def test_runs_overlaid_from_time_zero(runs: dict[str, Path]) -> None:
    e = explore([runs["late"], runs["flat"]])
    names = {t.name for t in e.figure.data}
    assert "tree RSS · late-leak" in names and "tree RSS · flat" in names
    assert [v.run for v in e.views] == ["late-leak", "flat"]
    assert e.views[1].status() == "PASS"
    flat = next(t for t in e.figure.data if t.name == "tree RSS · flat")
    assert flat.x[0] == 0.0
    e.zoom(5700.0, 6000.0)  # each trace is redrawn from its own run's column (the events traces sit between)
    by_name = {t.name: t for t in e.figure.data}
    assert np.allclose(by_name["tree RSS · flat"].y, 100.0, atol=1.0)
    assert np.all(np.asarray(by_name["tree RSS · late-leak"].y) > 120.0)
    assert set(np.round(by_name["threads · flat"].y)) == {4.0} and set(by_name["FDs (tree) · flat"].y) == {12.0}
    bundle = e._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    spec = bundle["application/vnd.plotly.v1+json"]
    assert len(spec["data"]) == len(e.figure.data) and json.dumps(spec)


def test_a_run_without_samples_is_refused(tmp_path: Path) -> None:
    start_manifest(tmp_path / "empty", "empty", "watcher-a", soak="a", parameters={}, environment={})
    with pytest.raises(ParameterError, match="no samples"):
        explore(tmp_path / "empty")


def test_a_lane_shows_job_latency_per_provider_and_failed_jobs_as_events(tmp_path: Path) -> None:
    import pandas as pd

    n = 12
    start = pd.Timestamp("2026-12-01T10:00:00Z") + pd.to_timedelta(np.arange(n) * 2.0, unit="s")
    jobs = pd.DataFrame({"run_id": "lane", "round_num": 1 + np.arange(n) // 6, "job_index": np.arange(n) % 6,
                         "attempt": 1, "provider": np.where(np.arange(n) % 2, "gemini", "opencode"),
                         "success": np.arange(n) != 5, "reason_code": np.where(np.arange(n) == 5, "auth_error", None),
                         "beads_id": [f"lane-{i}" for i in range(n)], "latency_ms": 1000.0 + 10 * np.arange(n),
                         "started_at": start})
    write_table(tmp_path / "lane" / "jobs.parquet", jobs)
    e = explore(tmp_path / "lane")
    assert [a.text for a in e.figure.layout.annotations] == ["Job latency, successful jobs (s)"]
    gemini = next(t for t in e.figure.data if t.name == "gemini")
    assert len(gemini.x) == 5 and gemini.y[0] == pytest.approx(1.01)  # job 5 (gemini) failed: not a latency
    events = next(t for t in e.figure.data if t.name == "events")
    assert list(events.hovertext) == ["auth_error — lane-5"] and events.x[0] == 10.0
    assert e.views == [] and e.set_window(0.0, 10.0) == []  # no memory to judge in a lane

"""What a signoff calls its verdict and what it says it was measured on, on run folders
fabricated through the store API (no processes): full-length and short runs, the reference
daemon and a real target's command, WARN rows, a target that never started or died."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from soaklib.params import SoakParams, to_dict
from soaklib.parts import PartWriter
from soaklib.report.signoff import build_signoff, criteria_frame, growth_table, to_markdown, write_signoff
from soaklib.runs import load_run
from soaklib.store import atomic_write_json, atomic_write_text, finish_manifest, start_manifest, write_table

MIB = 2**20
DAEMON = ["python3", "agents/watcher_agent.py", "--daemon"]
HALTED = {"halt": {"halt_s": 1.25, "forced": False, "exited": True}, "target_exit": None, "interrupted": False,
          "error": None, "gpu_notes": ["NVML unavailable: test"]}
B_CLEAN = {"staged": 10, "archived": 10, "pending": 0, "duplicates": 0, "misrouted": 0, "decision_entries": 10,
           "failed_requests": 0, "fifo_ok": True}
C_CLEAN = {"cycles": 60, "draws_ingested_delta": 0, "selfplay_dispatches": 30, "heuristic_fallbacks": 0,
           "policy_candidates": 12, "telemetry_valid": True, "queue_stuck": 0, "draws_injected": 60,
           "draws_ingested": 60,
           "convergence": {"trend": "improving", "converged": True, "n": 24, "first": 0.0, "last": 1.0, "slope": 0.0,
                           "kendall_tau": 0.7, "p_value": 1e-5, "target": 1.0, "x_to_target": 8.0,
                           "metric": "hit_rate", "x": "cycle",
                           "points": [[float(i), 1.0 if i >= 8 else 0.0] for i in range(1, 25)]}}


def fabricate(tmp: Path, run_id: str, *, soak: str = "a", seconds: float = 7200.0, step_s: float = 30.0,
              reference: bool = False, rss_mb_per_h: float = 0.0, rss_jitter_mb: float = 0.0,
              driver: dict[str, Any] | None = None, obs: dict[str, Any] | None = None, alive_until_s: float | None = None,
              log: str = "daemon up\n", warmup_s: float = 600.0) -> Path:
    """A run folder as the harness writes it: manifest, samples, events, observations, target.log."""
    run_dir = tmp / "out" / run_id
    target = {"command": None if reference else DAEMON}
    params = to_dict(SoakParams(soak=soak, run_id=run_id, duration_s=seconds, warmup_s=warmup_s,  # type: ignore[arg-type]
                                project_dir=None if reference else "/srv/watcher",
                                target=target))  # type: ignore[arg-type]
    start_manifest(run_dir, run_id, f"watcher-{soak}", soak=soak, parameters=params, reference_daemon=reference,
                   project_dir=str(run_dir / "project") if reference else "/srv/watcher", profile="watcher-v2",
                   environment={"host": "soakhost", "commit": "0123456789abcdef", "gpu": {"available": False}})
    t = np.arange(0.0, seconds + step_s / 2, step_s)
    rng = np.random.default_rng(7)
    writer = PartWriter(run_dir / "samples")
    for i, ts in enumerate(t):
        alive = alive_until_s is None or ts <= alive_until_s
        rss = 100 * MIB + rss_mb_per_h * MIB * ts / 3600.0 + rss_jitter_mb * MIB * rng.standard_normal()
        writer.append({"run_id": run_id, "t_s": float(ts), "alive": bool(alive),
                       "rss_bytes": float(rss) if alive else float("nan"),
                       "tree_rss_bytes": float(rss) if alive else float("nan"),
                       "num_fds": 12.0 if alive else float("nan"), "tree_num_fds": 12.0 if alive else float("nan"),
                       "threads": 4.0 if alive else float("nan"), "gpu_available": False,
                       "watched_bytes": float(MIB + 1000 * i), "llm_status": 200.0, "llm_latency_ms": 3.0,
                       "log_errors": 0.0, "log_tracebacks": 0.0, "requests_pending": 0.0, "requests_archived": 10.0,
                       "sample_cost_ms": 0.4, "bytes_read": 100.0})
        if i % 100 == 99:
            writer.flush()
    writer.flush()
    argv = [f"{'/usr/bin/python3 -m soaklib.sim.watcher --daemon' if reference else ' '.join(DAEMON)}"]
    events = pd.DataFrame([{"run_id": run_id, "t_s": 0.0, "kind": "target_started", "message": "started pid 42",
                            "data": json.dumps({"pid": 42, "argv": argv[0].split()})}])
    write_table(run_dir / "events.parquet", events)
    atomic_write_text(run_dir / "target.log", log)
    observations = {"soak": soak, **HALTED, **(obs or {}), "observations": driver or {}}
    if soak != "a":
        observations["halt"] = None
    atomic_write_json(run_dir / "observations.json", observations)
    finish_manifest(run_dir)
    return run_dir


def rows(signoff: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["metric"]: r for r in signoff["criteria"]}


# --------------------------------------------------------------------------- full length vs short


@pytest.mark.parametrize("soak, seconds, driver", [("a", 7200.0, None), ("b", 1800.0, B_CLEAN), ("c", 7200.0, C_CLEAN)])
def test_a_full_length_clean_pass_on_the_real_target_reads_production_ready(tmp_path, soak, seconds, driver):
    s = build_signoff(load_run(fabricate(tmp_path, f"full-{soak}", soak=soak, seconds=seconds, driver=driver)))
    assert [r for r in s["criteria"] if r["status"] != "PASS"] == []
    assert (s["verdict"], s["verdict_label"], s["production_ready"], s["verdict_reasons"]) == \
        ("PASS", "PASS (production-ready)", True, [])
    p = s["provenance"]
    assert p["target"] == "command" and p["reference_daemon"] is False and p["command"] == DAEMON
    assert p["full_length"] is True and s["run_length_s"] == pytest.approx(seconds)
    assert s["plan_length_s"] == {"a": 7200.0, "b": 1800.0, "c": 7200.0}[soak]
    assert s["plan_length_max_s"] == {"a": 14400.0, "b": 3600.0, "c": None}[soak]
    md = to_markdown(s)
    assert "**Verdict: PASS (production-ready)** · target: `python3 agents/watcher_agent.py --daemon`" in md
    assert "Not production-ready" not in md and "reference daemon" not in md


def test_a_short_demo_on_the_reference_daemon_is_a_short_run_and_says_where_it_ran(tmp_path):
    s = build_signoff(load_run(fabricate(tmp_path, "demo-a", seconds=60.0, step_s=1.0, reference=True, warmup_s=15)))
    assert s["verdict"] == "PASS" and s["verdict_label"] == "PASS (short run)" and s["production_ready"] is False
    assert s["verdict_reasons"] == ["short run: 60 s of the plan's 2–4 h"]
    p = s["provenance"]
    assert (p["target"], p["reference_daemon"], p["length"], p["full_length"]) == \
        ("reference_daemon", True, "60 s of the plan's 2–4 h", False)
    assert p["description"] == "the built-in reference daemon (python -m soaklib.sim.watcher)"
    md = to_markdown(s)
    assert ("**Verdict: PASS (short run)** · target: the built-in reference daemon (python -m soaklib.sim.watcher) "
            "· 60 s of the plan's 2–4 h") in md
    assert "Not production-ready: short run: 60 s of the plan's 2–4 h." in md
    assert "production-ready)" not in md and "not the WATCHER daemon the plan validates" in md
    assert "growth fits leave out the first 15 s (warm-up)" in s["notes"]


def test_a_warn_row_reads_pass_with_warnings_and_never_production_ready(tmp_path):
    # a full-length soak B whose memory slope interval straddles the bounds (inconclusive)
    s = build_signoff(load_run(fabricate(tmp_path, "warn-b", soak="b", seconds=1800.0, driver=B_CLEAN,
                                         rss_mb_per_h=30.0, rss_jitter_mb=6.0, warmup_s=0)))
    r = rows(s)["memory_slope_mb_per_h"]
    assert r["status"] == "WARN", r
    assert (s["verdict"], s["verdict_label"], s["production_ready"]) == ("PASS", "PASS with warnings", False)
    assert "WARN: memory_slope_mb_per_h" in s["verdict_reasons"]
    md = to_markdown(s)
    assert "**Verdict: PASS with warnings**" in md and "Not production-ready: WARN: memory_slope_mb_per_h." in md
    short = build_signoff(load_run(fabricate(tmp_path, "warn-b-short", soak="b", seconds=2.0, step_s=0.5,
                                             driver=B_CLEAN, rss_jitter_mb=0.01, reference=True, warmup_s=0)))
    assert [(m, r["status"]) for m, r in rows(short).items() if r["status"] != "PASS"] == \
        [("memory_slope_mb_per_h", "WARN")]
    assert short["verdict_label"] == "PASS (short run, with warnings)"


def test_bounds_in_the_markdown_carry_their_direction_and_counts_stay_whole(tmp_path):
    s = build_signoff(load_run(fabricate(tmp_path, "demo-c", soak="c", seconds=60.0, step_s=0.5, reference=True,
                                         driver={**C_CLEAN, "cycles": 24}, warmup_s=15)))
    cyc = rows(s)["cycles"]
    assert (cyc["observed"], cyc["pass_bound"], cyc["fail_bound"], cyc["direction"]) == (24, 1, 1, "min")
    md = to_markdown(s)
    assert "| cycles | 24 | cycles | ≥ 1 | < 1 | **PASS** |" in md
    assert "| heuristic_fallbacks | 0 | count | ≤ 0 | > 2 | **PASS** |" in md
    assert "| errors | 0 | count | = 0 | ≠ 0 | **PASS** |" in md
    assert "0.00 h" not in md and "scaled to this 60 s run" in md
    frame = criteria_frame(s)
    assert frame.set_index("metric").loc["cycles", "pass"] == "≥ 1"


def test_fitted_and_raw_memory_growth_are_labelled_in_the_row_and_the_analysis(tmp_path):
    s = build_signoff(load_run(fabricate(tmp_path, "leak", seconds=7200.0, rss_mb_per_h=20.0, warmup_s=1800)))
    r = rows(s)["memory_growth_mb"]
    raw = s["observed"]["memory_growth_raw_mb"]
    assert r["observed"] == pytest.approx(40.0, rel=1e-3)  # fitted: 20 MiB/h × the 2 h run
    assert raw == pytest.approx(30.0, rel=1e-2)  # raw: last − first bin median after the 30 min warm-up
    assert "fitted growth: slope 20 MiB/h × 2.0 h run (segmented verdict: GLS slope under AR(1) noise" in r["note"]
    assert "raw growth +30 MiB (110.0 → 140.0 MiB, last − first bin median after the warm-up)" in r["note"]
    assert r["status"] == "WARN" and "inconclusive" not in r["note"]  # 40 lies between ≤ 25 and > 100: not a CI issue
    md = to_markdown(s)
    assert "raw growth +30 MB (110.0 → 140.0 MB" in md and "fitted growth +40 MB over the 2.0 h run" in md
    table = growth_table(s).set_index("series")
    assert table.loc["tree RSS", "fitted_growth_mb"] == pytest.approx(40.0, rel=1e-3)
    assert table.loc["tree RSS", "raw_growth_mb"] == pytest.approx(30.0, rel=1e-2)


# --------------------------------------------------------------------------- a target that never ran, or died


SECRET_LOG = ("loading config from /srv/watcher\n"
              "ERROR: cannot open watcher_policies.json (OPENAI_API_KEY=sk-abcdefabcdefabcdefabcdef)\n")


def test_a_target_that_did_not_start_gets_one_clear_row_and_no_leak_triage(tmp_path):
    died = {"target_exit": {"returncode": 4, "signal": None, "exited_at_s": 0.5}, "halt": None}
    s = build_signoff(load_run(fabricate(tmp_path, "nostart", seconds=1.0, step_s=0.5, obs=died, alive_until_s=0.0,
                                         log=SECRET_LOG, warmup_s=0)))
    assert [r["metric"] for r in s["criteria"]] == ["target_started"]
    (row,) = s["criteria"]
    assert (row["status"], row["observed"]) == ("FAIL", False)
    assert "exited on its own after 0.5 s with code 4" in row["note"] and "watcher_policies.json" in row["note"]
    assert "tracemalloc" not in json.dumps(s["criteria"]) and "sk-abcdef" not in json.dumps(s.to_json())
    assert s["target_started"] is False and s["verdict"] == "FAIL" and s["verdict_label"] == "FAIL (target did not start)"
    assert "memory_growth_mb" in s["not_judged"] and "halt_s" in s["not_judged"]
    assert s["target_log_tail"][-1] == "ERROR: cannot open watcher_policies.json (OPENAI_API_KEY=[REDACTED]"
    md = to_markdown(s)
    assert "## The target did not start" in md and "OPENAI_API_KEY=[REDACTED]" in md and "sk-abcdef" not in md
    assert "required observation missing" not in md and "## Triage" not in md and "tracemalloc" not in md
    assert md.count("| target_started |") == 0 and "Not judged" in md


def test_a_target_the_harness_could_not_start_reads_the_same(tmp_path):
    run_dir = fabricate(tmp_path, "noexec", seconds=1.0, step_s=0.5, log="")
    for part in (run_dir / "samples").iterdir():
        part.unlink()
    obs = json.loads((run_dir / "observations.json").read_text())
    obs.update(error="TargetError: cannot start the target: executable '/opt/watcher' does not exist; "
                     "fix target.command", halt=None)
    atomic_write_json(run_dir / "observations.json", obs)
    s = build_signoff(load_run(run_dir))
    assert [r["metric"] for r in s["criteria"]] == ["target_started"] and s["verdict"] == "FAIL"
    assert "executable '/opt/watcher' does not exist" in s["criteria"][0]["note"]
    assert "target.log is empty" in s["criteria"][0]["note"]


def test_a_target_that_died_mid_run_shows_its_exit_code_and_the_log_tail(tmp_path):
    died = {"target_exit": {"returncode": -9, "signal": 9, "exited_at_s": 1800.0}, "halt": None}
    log = "".join(f"cycle {i} ok\n" for i in range(40)) + "Killed: Bearer abcdefghijklmnop\n"
    s = build_signoff(load_run(fabricate(tmp_path, "died", seconds=3600.0, obs=died, alive_until_s=1800.0, log=log)))
    r = rows(s)
    assert s["target_started"] is True and r["target_alive"]["status"] == "FAIL"
    assert r["halt_s"]["triage"] == "" and "exited on its own" in r["halt_s"]["note"]
    assert len(s["target_log_tail"]) == 20 and s["target_log_tail"][-1] == "Killed: Bearer [REDACTED]"
    md = to_markdown(s)
    assert "## Why the target stopped" in md and "exit code -9, signal 9" in md and "OOM killer" in md
    assert "cycle 39 ok" in md and "cycle 19 ok" not in md and "abcdefghijklmnop" not in md


# --------------------------------------------------------------------------- what the JSON knows, in the Markdown


def test_the_markdown_names_the_duplicated_requests_and_links_the_queue_and_convergence_figures(tmp_path):
    dup = {**B_CLEAN, "duplicates": 2, "details": {"duplicates": ["soak_B_02_20260203_100100.json handled 2 times",
                                                                  "soak_B_05_20260203_100400.json handled 2 times"]}}
    b_dir = fabricate(tmp_path, "dup", soak="b", seconds=120.0, step_s=1.0, driver=dup, reference=True, warmup_s=0)
    write_table(b_dir / "requests.parquet", pd.DataFrame([
        {"seq": i, "name": f"soak_B_{i:02d}.json", "logical_type": "selfplay", "staged_t_s": 1.0,
         "first_dispatch_t_s": 2.0 + i, "archived_t_s": 3.0 + i, "handled_times": 2 if i in (2, 5) else 1,
         "misrouted": False} for i in range(1, 11)]))
    paths = write_signoff(b_dir)
    signoff = json.loads(paths["json"].read_text())
    md = paths["md"].read_text()
    assert signoff["verdict_label"] == "FAIL (needs fixes)" and "queue" in signoff["figures"]
    assert ("- **duplicates** (FAIL): soak_B_02_20260203_100100.json handled 2 times; "
            "soak_B_05_20260203_100400.json handled 2 times") in md
    assert "![queue](dup/figures/queue.png)" in md and (tmp_path / "out" / "dup" / "figures" / "queue.png").is_file()
    c_dir = fabricate(tmp_path, "conv", soak="c", seconds=60.0, step_s=0.5, driver=C_CLEAN, reference=True, warmup_s=15)
    write_table(c_dir / "loop.parquet", pd.DataFrame({"t_s": np.arange(24) * 2.5, "cycles": np.arange(1, 25),
                                                      "draws_injected": np.arange(1, 25),
                                                      "probe_hit_rate": [p[1] for p in C_CLEAN["convergence"]["points"]]}))
    md = write_signoff(c_dir)["md"].read_text()
    assert "![convergence](conv/figures/convergence.png)" in md and "![loop](conv/figures/loop.png)" in md
    assert ("- convergence: hit_rate 0 → 1 over 24 cycles, converged, target 1 reached at cycle 8; Theil–Sen slope "
            "0/cycle") in md and "isotonic" in md

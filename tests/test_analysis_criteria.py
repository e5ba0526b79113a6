"""Pass criteria: boundaries per direction, per-hours scaling, overrides, missing values."""
from __future__ import annotations

import math

import numpy as np
import pytest

from soaklib.analysis.criteria import DEFAULT_CRITERIA, ROW_KEYS, Criterion, criteria_table, evaluate, verdict
from soaklib.errors import ParameterError

MAX = Criterion("m", "label m", "MiB", 50.0, 200.0, "max", triage="look here")
MIN = Criterion("c", "label c", "cycles", 5, 1, "min")
EQ = Criterion("e", "label e", "count", 0, 0, "eq")
IN = Criterion("s", "label s", "state", ("ok", "recovered"), ("lost",), "in")


def status(c: Criterion, value, **kw) -> str:
    return evaluate([c], {c.metric: value}, **kw)[0]["status"]


@pytest.mark.parametrize("value, expected", [(0, "PASS"), (50.0, "PASS"), (50.01, "WARN"), (200.0, "WARN"),
                                             (200.01, "FAIL"), (True, "PASS")])
def test_max_boundaries(value, expected):
    assert status(MAX, value) == expected


@pytest.mark.parametrize("value, expected", [(9, "PASS"), (5, "PASS"), (4, "WARN"), (1, "WARN"), (0, "FAIL")])
def test_min_boundaries(value, expected):
    assert status(MIN, value) == expected


@pytest.mark.parametrize("value, expected", [(0, "PASS"), (0.0, "PASS"), (False, "PASS"), (1, "FAIL"),
                                             (True, "FAIL"), (np.int64(3), "FAIL")])
def test_eq(value, expected):
    assert status(EQ, value) == expected


@pytest.mark.parametrize("value, expected", [("ok", "PASS"), ("recovered", "PASS"), ("lost", "FAIL"),
                                             ("flapping", "WARN"), (True, "PASS"), (False, "FAIL")])
def test_in(value, expected):
    assert status(IN, value) == expected


def test_row_shape_and_triage_only_when_not_passing():
    ok, bad = evaluate([MAX], {"m": 10}), evaluate([MAX], {"m": 500})
    assert tuple(ok[0]) == ROW_KEYS
    assert ok[0]["triage"] == "" and bad[0]["triage"] == "look here"
    assert bad[0]["label"] == "label m" and bad[0]["unit"] == "MiB"


def test_missing_required_is_fail_optional_is_skip():
    row = evaluate([MAX], {})[0]
    assert row["status"] == "FAIL" and "missing" in row["note"] and row["observed"] is None
    assert evaluate([MAX], {"m": float("nan")})[0]["status"] == "FAIL"  # NaN slope = not measured
    vram = Criterion("vram_growth_mb", "VRAM", "MiB", 10, 100, "max", optional=True)
    row = evaluate([vram], {"vram_growth_mb": None})[0]
    assert row["status"] == "SKIP" and verdict([row]) == "PASS"


def test_per_hours_scaling_one_hour_run():
    """50 MiB over 4 h, fail 200: a 1 h run is judged at 12.5 / 50 MiB, the same rate.

    20 MiB in 1 h is 80 MiB per 4 h at that rate: above the pass rate, below the fail rate
    → WARN (it would have passed the unscaled 50 MiB bound only because the run was short).
    """
    c = DEFAULT_CRITERIA["a"][0]
    assert (c.metric, c.per_hours) == ("memory_growth_mb", 4.0)
    row = evaluate([c], {"memory_growth_mb": 20.0}, duration_h=1.0)[0]
    assert row["status"] == "WARN"
    assert row["pass_bound"] == pytest.approx(12.5) and row["fail_bound"] == pytest.approx(50.0)
    assert "scaled" in row["note"] and "4 h" in row["note"]
    assert evaluate([c], {"memory_growth_mb": 60.0}, duration_h=1.0)[0]["status"] == "FAIL"
    assert evaluate([c], {"memory_growth_mb": 10.0}, duration_h=1.0)[0]["status"] == "PASS"
    assert evaluate([c], {"memory_growth_mb": 90.0}, duration_h=8.0)[0]["status"] == "PASS"  # 45 per 4 h
    unscaled = evaluate([c], {"memory_growth_mb": 20.0})[0]
    assert unscaled["status"] == "PASS" and "unknown" in unscaled["note"]


def test_per_hours_scaling_for_a_minimum():
    cycles = next(c for c in DEFAULT_CRITERIA["c"] if c.metric == "cycles")  # >= 5 per 2 h, fail < 1
    assert status(cycles, 3, duration_h=1.0) == "PASS"  # 2.5 needed in 1 h
    assert status(cycles, 2, duration_h=1.0) == "WARN"
    assert status(cycles, 0, duration_h=1.0) == "FAIL"
    assert status(cycles, 0, duration_h=0.1) == "FAIL"  # a short run is not waved through


def test_bound_naming_another_observation():
    archived = DEFAULT_CRITERIA["b"][0]
    assert status(archived, 10, duration_h=None) == "FAIL"  # staged not observed
    rows = evaluate([archived], {"archived": 10, "staged": 10})
    assert rows[0]["status"] == "PASS" and rows[0]["pass_bound"] == 10
    assert evaluate([archived], {"archived": 9, "staged": 10})[0]["status"] == "FAIL"
    row = evaluate([archived], {"archived": 10})[0]
    assert row["status"] == "FAIL" and "staged" in row["note"]


def test_overrides_change_bounds_and_unknown_ids_are_named():
    crit = DEFAULT_CRITERIA["a"]
    rows = evaluate(crit, {"halt_s": 12.0}, overrides={"halt_s": {"pass_bound": 10, "fail_bound": 20}})
    halt = next(r for r in rows if r["metric"] == "halt_s")
    assert (halt["status"], halt["pass_bound"], halt["fail_bound"]) == ("WARN", 10, 20)
    with pytest.raises(ParameterError, match="memory_growth_mb") as e:
        evaluate(crit, {}, overrides={"vram_mb": {"pass_bound": 1}})
    assert "vram_mb" in str(e.value)
    with pytest.raises(ParameterError, match="allowed are"):
        evaluate(crit, {}, overrides={"halt_s": {"limit": 3}})
    with pytest.raises(ParameterError, match="mapping"):
        evaluate(crit, {}, overrides={"halt_s": 3})
    with pytest.raises(ParameterError, match="fail_bound"):
        evaluate(crit, {}, overrides={"halt_s": {"pass_bound": 60}})  # pass above fail for a max
    rows = evaluate(DEFAULT_CRITERIA["c"], {"convergence": "flat"},
                    overrides={"convergence": {"pass_bound": ["improving", "converged", "flat"]}})
    assert next(r for r in rows if r["metric"] == "convergence")["status"] == "PASS"


def test_default_tables_cover_the_design_metric_ids():
    ids = {k: [c.metric for c in v] for k, v in DEFAULT_CRITERIA.items()}
    assert ids["a"] == ["memory_growth_mb", "memory_slope_mb_per_h", "fd_range", "fd_trend", "tracebacks",
                        "halt_s", "disk_growth_mb", "llm_reconnect"]
    assert ids["b"] == ["archived", "pending", "duplicates", "misrouted", "decision_entries", "errors"]
    assert ids["c"] == ["cycles", "draws_ingested_delta", "selfplay_dispatches", "heuristic_fallbacks",
                        "memory_growth_mb", "errors", "policy_candidates", "telemetry_valid", "queue_stuck",
                        "convergence"]
    for table in DEFAULT_CRITERIA.values():
        for c in table:
            assert c.label and c.triage and c.check() is c


def test_a_clean_soak_a_passes_and_a_hung_halt_fails():
    observed = {"memory_growth_mb": 3.2, "memory_slope_mb_per_h": np.float64(0.8), "fd_range": 2,
                "fd_trend": False, "tracebacks": 0, "halt_s": 2.1, "disk_growth_mb": 0.4,
                "llm_reconnect": "recovered"}
    rows = evaluate(DEFAULT_CRITERIA["a"], observed, duration_h=4.0)
    assert [r["status"] for r in rows] == ["PASS"] * 8 and verdict(rows) == "PASS"
    rows = evaluate(DEFAULT_CRITERIA["a"], {**observed, "halt_s": None}, duration_h=4.0)
    assert verdict(rows) == "FAIL"
    rows = evaluate(DEFAULT_CRITERIA["a"], {**observed, "halt_s": 30.5}, duration_h=4.0)
    assert next(r for r in rows if r["metric"] == "halt_s")["status"] == "FAIL"


def test_convergence_accepts_the_trend_dict():
    conv = DEFAULT_CRITERIA["c"][-1]
    assert status(conv, {"trend": "flat", "converged": True}) == "PASS"
    assert status(conv, {"trend": "improving", "converged": False}) == "PASS"
    assert status(conv, {"trend": "flat", "converged": False}) == "WARN"
    assert status(conv, {"trend": "worsening", "converged": False}) == "FAIL"


def test_verdict_and_table():
    assert verdict([{"status": "PASS"}, {"status": "WARN"}, {"status": "SKIP"}]) == "PASS"
    assert verdict([{"status": "PASS"}, {"status": "FAIL"}]) == "FAIL"
    assert verdict([]) == "FAIL"  # nothing judged is no signoff
    rows = evaluate([MAX, MIN], {"m": 1.0, "c": 9})
    df = criteria_table(rows)
    assert list(df.columns) == list(ROW_KEYS) and list(df.status) == ["PASS", "PASS"]
    assert criteria_table([]).empty


def test_non_numeric_observation_for_a_bound_fails_with_a_note():
    row = evaluate([MAX], {"m": "lots"})[0]
    assert row["status"] == "FAIL" and "not a number" in row["note"]
    assert not math.isnan(MAX.pass_bound)


def test_numeric_string_overrides_from_flags_are_numbers():
    overrides = {"halt_s": {"pass_bound": "10", "fail_bound": "20"}}
    rows = evaluate(DEFAULT_CRITERIA["a"], {"halt_s": 12.0}, overrides=overrides)
    halt = next(r for r in rows if r["metric"] == "halt_s")
    assert (halt["status"], halt["pass_bound"]) == ("WARN", 10.0)


def test_interval_is_judged_at_both_ends() -> None:
    from soaklib.analysis.criteria import DEFAULT_CRITERIA, evaluate

    slope = [c for c in DEFAULT_CRITERIA["a"] if c.metric == "memory_slope_mb_per_h"]
    judge = lambda v, ci: evaluate(slope, {"memory_slope_mb_per_h": v}, intervals={"memory_slope_mb_per_h": ci})[0]  # noqa: E731
    assert judge(65.6, (0.0, 169.0))["status"] == "WARN"  # a few noisy samples: inconclusive
    assert "inconclusive" in judge(65.6, (0.0, 169.0))["note"]
    assert judge(300.0, (280.0, 320.0))["status"] == "FAIL"  # a clear leak
    assert judge(1.0, (0.0, 2.0))["status"] == "PASS"  # clearly flat
    assert judge(65.6, (float("nan"), 1.0))["status"] == "FAIL"  # no usable interval: the point estimate


# --------------------------------------------------------------------------- count bounds and notes


def test_a_count_bound_is_never_scaled_below_one_count():
    """Soak C's 24 cycles in 60 s: the plan's ≥ 5 per 2 h is 0.0416 cycles for 60 s; a count
    is judged in whole cycles, at least 1 (the note keeps the rate)."""
    from soaklib.analysis.criteria import scaled_count

    cycles = next(c for c in DEFAULT_CRITERIA["c"] if c.metric == "cycles")
    assert cycles.count is True
    row = evaluate([cycles], {"cycles": 24}, duration_h=60 / 3600)[0]
    assert (row["pass_bound"], row["fail_bound"], row["status"], row["direction"]) == (1, 1, "PASS", "min")
    assert "60 s run" in row["note"] and "0.0417" in row["note"] and "≥ 2.5 / < 0.5 cycles/h" in row["note"]
    assert "whole cycles: ≥ 1 / < 1" in row["note"] and "0.00 h" not in row["note"]
    assert evaluate([cycles], {"cycles": 0}, duration_h=60 / 3600)[0]["status"] == "FAIL"
    hour = evaluate([cycles], {"cycles": 2}, duration_h=1.0)[0]  # 2.5 needed → 3 whole cycles
    assert (hour["pass_bound"], hour["fail_bound"], hour["status"]) == (3, 1, "WARN")
    assert (scaled_count(2.5, "min", 5), scaled_count(0.04, "min", 5), scaled_count(0.3, "max", 2),
            scaled_count(2.7, "max", 2), scaled_count(4.0, "min", 5), scaled_count(0.3, "max", 0)) == (3, 1, 1, 2, 4, 0)


def test_scaled_notes_read_the_runs_length_and_the_directions():
    mem = DEFAULT_CRITERIA["a"][0]
    row = evaluate([mem], {"memory_growth_mb": 0.01}, duration_h=1.8 / 3600)[0]
    assert "scaled to this 1.8 s run" in row["note"] and "bounds ≤ 50 / > 200 MiB stated for 4 h" in row["note"]
    assert "rates ≤ 12.5 / > 50 MiB/h" in row["note"]
    assert evaluate([mem], {"memory_growth_mb": 1.0}, duration_h=2.0)[0]["note"].count("2.0 h run") == 1


def test_a_missing_observation_carries_no_triage():
    row = evaluate([MAX], {})[0]
    assert row["status"] == "FAIL" and row["triage"] == ""  # nothing measured for the leak triage to explain
    assert evaluate([MAX], {"m": 500})[0]["triage"] == "look here"


def test_observed_bounds_are_judged_at_both_ends():
    from soaklib.analysis.criteria import observed_bounds

    observed = {"m": 40.0, "m_bounds": [30.0, 60.0], "n_bounds": [1.0, float("nan")], "x_bounds": "no"}
    assert observed_bounds(observed) == {"m": (30.0, 60.0)}  # non-finite or malformed bounds are ignored
    c = Criterion("m", "m", "MiB", 50.0, 100.0, "max")
    (row,) = evaluate([c], observed, intervals=observed_bounds(observed))
    assert row["status"] == "WARN" and "inconclusive" in row["note"]  # 40 passes, its upper bound 60 does not
    (row,) = evaluate([c], observed)
    assert row["status"] == "PASS"

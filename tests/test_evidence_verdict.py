"""The verdict words (``soaklib.report.verdict``): every case of one soak and of A + B + C."""
from __future__ import annotations

import pytest

from soaklib.report.verdict import (
    NOT_READY,
    PRODUCTION_READY,
    READY,
    combined_verdict,
    is_full_length,
    length_text,
    signoff_verdict,
    verdict_label,
    verdict_line,
)


@pytest.mark.parametrize("kw, label, ready", [
    ({}, PRODUCTION_READY, True),
    ({"full_length": False}, "PASS (short run)", False),
    ({"warnings": ["memory_slope_mb_per_h"]}, "PASS with warnings", False),
    ({"full_length": False, "warnings": ["fd_range"]}, "PASS (short run, with warnings)", False),
    ({"complete": False}, "FAIL (incomplete run)", False),
    ({"target_started": False}, "FAIL (target did not start)", False),
])
def test_verdict_label_of_one_soak(kw, label, ready):
    verdict = "FAIL" if kw.get("complete") is False or kw.get("target_started") is False else "PASS"
    words = verdict_label(verdict, **kw)
    assert (words.label, words.production_ready) == (label, ready)
    assert (words.reasons == []) == ready


def test_a_fail_needs_fixes_and_names_its_reasons():
    words = verdict_label("FAIL", failing=["duplicates"], full_length=False, warnings=["fd_range"],
                          length="1.8 s of the plan's 30–60 min")
    assert words.label == "FAIL (needs fixes)" and not words.production_ready
    assert words.reasons == ["FAIL: duplicates", "short run: 1.8 s of the plan's 30–60 min", "WARN: fd_range"]


def test_plan_lengths_and_the_sampling_tolerance():
    assert length_text(60.0, "a") == "60 s of the plan's 2–4 h"
    assert length_text(1.8, "b") == "1.8 s of the plan's 30–60 min"
    assert length_text(7200.0, "c") == "2.0 h of the plan's 2+ h"
    assert is_full_length(7199.9, "a", 30.0) and is_full_length(1800.0, "b") and not is_full_length(7000.0, "c", 30.0)
    assert not is_full_length(60.0, "a") and not is_full_length(None, "a")


def _summary(label: str, verdict: str = "PASS", **kw):
    return {"present": True, "verdict": verdict, "complete": True, "verdict_label": label,
            "production_ready": label == PRODUCTION_READY, "criteria": [], **kw}


def test_combined_verdict_words():
    ready = {k: _summary(PRODUCTION_READY) for k in "abc"}
    assert combined_verdict(ready) == (READY, True, [])
    short = {**ready, "a": _summary("PASS (short run)"), "b": _summary("PASS (short run, with warnings)")}
    words = combined_verdict(short)
    assert words.label == "NOT SIGNED OFF: short runs, warnings" and not words.production_ready
    assert words.reasons == ["short runs: A, B", "warnings: B"]
    warned = {**ready, "c": _summary("PASS with warnings")}
    assert combined_verdict(warned).label == "NOT SIGNED OFF: warnings"
    failing = {**short, "b": _summary("FAIL (needs fixes)", "FAIL",
                                      criteria=[{"metric": "duplicates", "status": "FAIL"}])}
    assert combined_verdict(failing) == (NOT_READY, False, ["soak B: FAIL duplicates"])
    missing = {**ready, "c": {"present": False, "verdict": "MISSING"}}
    assert combined_verdict(missing) == (NOT_READY, False, ["soak C: no run"])
    nostart = {**ready, "a": _summary("FAIL (target did not start)", "FAIL", target_started=False)}
    assert combined_verdict(nostart).reasons == ["soak A: the target did not start"]


def test_signoff_verdict_and_the_markdown_line_read_the_signoff():
    signoff = {"verdict": "PASS", "complete": True, "criteria": [{"metric": "fd_range", "status": "WARN"}],
               "provenance": {"full_length": False, "length": "60 s of the plan's 2–4 h",
                              "description": "the built-in reference daemon (python -m soaklib.sim.watcher)"}}
    assert signoff_verdict(signoff).label == "PASS (short run, with warnings)"
    assert verdict_line(signoff) == (
        "**Verdict: PASS (short run, with warnings)** · target: the built-in reference daemon (python -m "
        "soaklib.sim.watcher) · 60 s of the plan's 2–4 h\n\nNot production-ready: short run: 60 s of the plan's "
        "2–4 h; WARN: fd_range.")

"""A daemon without an LLM server (``llm.health_url: null``) can pass soak A: nothing is probed,
the preflight does not ask for a server, and ``llm_reconnect`` is SKIP, not FAIL."""
from __future__ import annotations

import json
from pathlib import Path

from soaklib import load_run
from tests.test_soak_a import cli


def test_soak_a_without_an_llm_passes_with_llm_reconnect_skip(tmp_path: Path) -> None:
    out = tmp_path / "out"
    p = cli("watcher", "a", "--run-id", "nollm", "--output-dir", str(out), "--set", "llm.health_url=null",
            "--set", "duration_s=4", "--set", "warmup_s=1", "--set", "probes_at_s=[1]",
            "--set", "sampling.interval_s=0.2", "--set", "sampling.flush_s=1", "--set", "sim.poll_s=0.1",
            "--no-progress")
    assert p.returncode == 0, p.stdout + p.stderr
    signoff = json.loads((out / "nollm.json").read_text())
    rows = {r["metric"]: r for r in signoff["criteria"]}
    assert signoff["verdict"] == "PASS"
    assert rows["llm_reconnect"]["status"] == "SKIP" and rows["llm_reconnect"]["observed"] is None
    assert "no LLM server" in rows["llm_reconnect"]["note"]
    assert not any("LLM" in n and "preflight" in n for n in signoff["notes"])
    samples = load_run(out / "nollm").samples
    assert "llm_status" not in samples or samples["llm_status"].isna().all()  # never probed
    assert "| llm_reconnect |" in (out / "nollm.md").read_text().replace("`", "")

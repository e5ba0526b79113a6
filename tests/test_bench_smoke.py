"""The benchmarks still start: each ``bench/*.py`` runs with ``--quick`` and prints its table.

Not a timed test (CI does not run the benchmarks for their numbers); tiny sizes only.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = {
    "sampler_cost.py": "shell monitor, plan §3 loop body",
    "dispatch_scale.py": "harness CPU ms/job",
    "analysis_scale.py": "library total s",
    "store_throughput.py": "bytes per sample on disk",
    "report_scale.py": "explore redraw after a zoom",
    "fleet_scale.py": "added by Dask: client ms/job",
    "verdict_corpus.py": "Acceptance figures of the soaklib verdict",
    "log_copy.py": "harness CPU ms per MiB",
}


def test_every_benchmark_script_is_covered():
    assert sorted(p.name for p in BENCH.glob("*.py") if not p.name.startswith("_")) == sorted(SCRIPTS)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_benchmark_runs_quick_and_prints_its_table(script, tmp_path):
    md = tmp_path / "results.md"
    done = subprocess.run([sys.executable, str(BENCH / script), "--quick", "--markdown", str(md)],
                          cwd=BENCH.parent, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert SCRIPTS[script] in done.stdout and "| ---" in done.stdout
    text = md.read_text()
    assert text.startswith("\n## ") and "(quick)" in text and "- machine: " in text and SCRIPTS[script] in text

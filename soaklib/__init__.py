"""soaklib: soak validation of multi-provider dispatch lanes and long-running daemons.

The public API (everything a notebook or an analyst needs; the rest is internal):

- ``run_lane(params)``: a multi-provider lane (rounds of parallel dx-runner jobs).
- ``run_soak(params)``: a WATCHER soak A, B or C; ``record(...)``: a psrecord-like monitor.
- ``load_run(path)``: a run folder back as a ``Run`` (samples, events, jobs, attempts, signoff).
- ``build_signoff(run)`` / ``write_signoff(run_dir)``: a soak's signoff, as the CLI writes it.
- ``combine(run_dirs)`` / ``write_combined(run_dirs, output_dir)``: the combined A/B/C verdict.
- ``query(run_dir, sql)``: SQL (DuckDB) over a run's ``samples`` and ``events``, every host of a fleet;
  ``fleet_verdict(run_dir)`` / ``write_fleet_signoff(run_dir)``: a multi-host run judged as a fleet.
- ``compare(base, new)``: the statistical diff of two soaks or two lanes (``soak compare``).
- ``explore(run_or_runs)``: every series of a run (or runs overlaid) in an interactive Jupyter view.
- ``load_params(cls, file, overrides)`` with ``SoakParams`` / ``MultiProviderParams``;
  ``as_bool(value, key)`` for papermill's string booleans.
- For the notebooks (each one a tested function): ``verdict_line``, ``criteria_frame``,
  ``growth_table``, ``soak_figures``, ``triage_lines``, ``requests_table`` (a soak's
  signoff); ``lane_report`` (the lane's tables, ``read_evidence``, ``write_evidence``) and
  ``latency_figure``; ``find_runs``, ``side_by_side_html``, ``failing_frame`` (the combined
  signoff); ``gate_error(artifact)``: the ``GateFailed`` a failing verdict raises.
- Errors: ``SoakError`` and its children ``ParameterError``, ``PreflightError``,
  ``TargetError``, ``ProtocolError``, ``GateFailed``.

The names are imported lazily, so that the embedded simulators (``python -m soaklib.sim...``),
which run as many short-lived processes, do not pay for importing pandas and pyarrow.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "run_lane": "soaklib.dispatch.rounds",
    "run_soak": "soaklib.soak.harness",
    "record": "soaklib.observe.monitor",
    "Run": "soaklib.runs",
    "load_run": "soaklib.runs",
    "build_signoff": "soaklib.report.signoff",
    "write_signoff": "soaklib.report.signoff",
    "combine": "soaklib.report.combined",
    "write_combined": "soaklib.report.combined",
    "query": "soaklib.fleet.query",
    "fleet_verdict": "soaklib.fleet.verdict",
    "write_fleet_signoff": "soaklib.fleet.report",
    "compare": "soaklib.report.compare",
    "explore": "soaklib.report.explore",
    "load_params": "soaklib.params",
    "as_bool": "soaklib.params",
    "verdict_line": "soaklib.report.signoff",
    "criteria_frame": "soaklib.report.signoff",
    "growth_table": "soaklib.report.signoff",
    "soak_figures": "soaklib.report.signoff",
    "triage_lines": "soaklib.report.signoff",
    "requests_table": "soaklib.report.signoff",
    "lane_report": "soaklib.report.multi_provider:",  # the module itself
    "latency_figure": "soaklib.report.plots",
    "find_runs": "soaklib.report.combined",
    "side_by_side_html": "soaklib.report.combined",
    "failing_frame": "soaklib.report.combined",
    "gate_error": "soaklib.report.gate",
    "SoakParams": "soaklib.params",
    "MultiProviderParams": "soaklib.params",
    "SoakError": "soaklib.errors",
    "ParameterError": "soaklib.errors",
    "PreflightError": "soaklib.errors",
    "TargetError": "soaklib.errors",
    "ProtocolError": "soaklib.errors",
    "GateFailed": "soaklib.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'soaklib' has no attribute {name!r}")
    value = importlib.import_module(module[:-1]) if module.endswith(":") else getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

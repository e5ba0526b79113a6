"""Pure statistics over soak data (no I/O, no plotting): latency, growth, convergence, criteria."""
from __future__ import annotations

from soaklib.analysis.convergence import convergence_trend
from soaklib.analysis.criteria import DEFAULT_CRITERIA, Criterion, criteria_table, evaluate, verdict
from soaklib.analysis.growth import (
    SlopeResult,
    bin_series,
    disk_growth,
    fd_stability,
    growth_slope,
    memory_growth,
    trend_test,
)
from soaklib.analysis.latency import ecdf, percentiles, summarize
from soaklib.analysis.units import MIB

__all__ = [
    "DEFAULT_CRITERIA",
    "MIB",
    "Criterion",
    "SlopeResult",
    "bin_series",
    "convergence_trend",
    "criteria_table",
    "disk_growth",
    "ecdf",
    "evaluate",
    "fd_stability",
    "growth_slope",
    "memory_growth",
    "percentiles",
    "summarize",
    "trend_test",
    "verdict",
]

"""The built-in soak types A, B and C of the soak plan, registered in the soak registry."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from soaklib.analysis.units import format_value as v
from soaklib.soak.drivers.endurance import EnduranceSoak
from soaklib.soak.drivers.loop import LoopSoak
from soaklib.soak.drivers.queue import QueueSoak
from soaklib.soak.observers import observe_a, observe_b, observe_c, soak_criteria
from soaklib.soak.registry import SoakType, register
from soaklib.soak.system_soak import SYSTEM_C

HOUR = 3600.0


def summary_a(o: Mapping[str, Any], made_on: str) -> list[str]:
    mem, raw = o.get("memory_growth_mb"), o.get("memory_growth_raw_mb")
    memory = "memory –"
    if isinstance(mem, (int, float)):
        memory = f"memory {mem:+.1f} MB fitted" + (f" ({raw:+.1f} MB raw)" if isinstance(raw, (int, float)) else "")
    return [made_on, memory, f"halt {v(o.get('halt_s'), '{:.1f}')} s", f"{v(o.get('tracebacks'))} tracebacks"]


def summary_b(o: Mapping[str, Any], made_on: str) -> list[str]:
    return [f"{v(o.get('archived'))}/{v(o.get('staged'))} requests processed", made_on,
            f"{v(o.get('errors'))} errors", f"{v(o.get('duplicates'))} duplicates",
            f"{v(o.get('misrouted'))} misrouted", f"{v(o.get('pending'))} pending"]


def summary_c(o: Mapping[str, Any], made_on: str) -> list[str]:
    conv = o.get("convergence") if isinstance(o.get("convergence"), Mapping) else {}
    signal = "no convergence signal"
    if conv:
        state = "converged" if conv.get("converged") else conv.get("trend")
        reached = (f"target {v(conv.get('target'))} reached at cycle {v(conv.get('x_to_target'), '{:g}')}"
                   if conv.get("x_to_target") is not None
                   else f"Theil-Sen slope {v(conv.get('slope'), '{:+.3g}')}/cycle")
        signal = (f"convergence {state} ({conv.get('metric', 'metric')} {v(conv.get('first'))} → "
                  f"{v(conv.get('last'))}, {reached}, Kendall tau {v(conv.get('kendall_tau'), '{:.2f}')})")
    return [f"{v(o.get('cycles'))} cycles", made_on,
            f"draws {v(o.get('draws_injected'))} injected / {v(o.get('draws_ingested'))} ingested", signal,
            f"{v(o.get('heuristic_fallbacks'))} heuristic fallbacks"]


register(SoakType("a", "Daemon endurance", EnduranceSoak, lambda: soak_criteria("a"), observe_a,
                  (2 * HOUR, 4 * HOUR), "2–4 h", summary=summary_a))  # plan section 4: 2–4 hours
register(SoakType("b", "Sequential requests", QueueSoak, lambda: soak_criteria("b"), observe_b,
                  (0.5 * HOUR, 1 * HOUR), "30–60 min", summary=summary_b, figures=("queue",)))  # section 5
register(SoakType("c", "Sustained autonomous loop", LoopSoak, lambda: soak_criteria("c"), observe_c,
                  (2 * HOUR, None), "2+ h", summary=summary_c, figures=("convergence", "loop")))  # section 6
register(SYSTEM_C)  # soak C on the real system: the Chapter 13 orchestrator + the WATCHER daemon

"""The built-in soak types A, B and C of the soak plan, registered in the soak registry."""
from __future__ import annotations

from soaklib.soak.drivers.endurance import EnduranceSoak
from soaklib.soak.drivers.loop import LoopSoak
from soaklib.soak.drivers.queue import QueueSoak
from soaklib.soak.observers import observe_a, observe_b, observe_c, soak_criteria
from soaklib.soak.registry import SoakType, register

HOUR = 3600.0

register(SoakType("a", "Daemon endurance", EnduranceSoak, lambda: soak_criteria("a"), observe_a,
                  (2 * HOUR, 4 * HOUR), "2–4 h"))
register(SoakType("b", "Sequential requests", QueueSoak, lambda: soak_criteria("b"), observe_b,
                  (0.5 * HOUR, 1 * HOUR), "30–60 min"))
register(SoakType("c", "Sustained autonomous loop", LoopSoak, lambda: soak_criteria("c"), observe_c,
                  (2 * HOUR, 2 * HOUR), "2+ h"))

"""The reference WATCHER daemon, a stand-alone program: ``python -m soaklib.sim.watcher ...``.

``daemon`` is the program (the cycle, the fault knobs, the command line); ``protocol`` the
WATCHER file protocol it speaks (profiles, requests, decisions, the LLM client); ``learning``
the autonomous loop's draws and learner. Standard library only (plus ``soaklib.prng``).
"""
from __future__ import annotations

from soaklib.sim.watcher.daemon import knob_flags, main
from soaklib.sim.watcher.protocol import PROFILES

__all__ = ["PROFILES", "knob_flags", "main"]

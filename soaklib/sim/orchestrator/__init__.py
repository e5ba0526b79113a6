"""The reference Chapter 13 orchestrator, a stand-alone program: ``python -m soaklib.sim.orchestrator ...``.

It behaves as the real ``chapter_13_orchestrator.py --daemon`` does towards its files (see
``orchestrator``), so soak C in its two-process form (orchestrator + WATCHER daemon) runs on a
fresh machine and in tests. Standard library only.
"""
from __future__ import annotations

from soaklib.sim.orchestrator.orchestrator import (
    APPROVAL_FILE,
    CHAPTER13_HALT,
    CYCLE_HISTORY,
    GLOBAL_HALT,
    OUTCOMES,
    knob_flags,
    main,
)

__all__ = ["APPROVAL_FILE", "CHAPTER13_HALT", "CYCLE_HISTORY", "GLOBAL_HALT", "OUTCOMES", "knob_flags", "main"]

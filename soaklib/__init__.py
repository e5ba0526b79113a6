"""soaklib: soak validation of multi-provider dispatch lanes and long-running daemons.

The re-exports are lazy so that the embedded simulators (``python -m soaklib.sim...``),
which run as many short-lived processes, do not pay for importing pandas and pyarrow.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "SoakError", "Run", "load_run"]


def __getattr__(name: str) -> Any:
    if name == "SoakError":
        from soaklib.errors import SoakError

        return SoakError
    if name in ("Run", "load_run"):
        from soaklib import store

        return getattr(store, name)
    raise AttributeError(f"module 'soaklib' has no attribute {name!r}")

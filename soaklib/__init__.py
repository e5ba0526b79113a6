"""soaklib: soak validation of multi-provider dispatch lanes and long-running daemons."""
from __future__ import annotations

__version__ = "0.1.0"

from soaklib.errors import SoakError  # noqa: E402
from soaklib.store import Run, load_run  # noqa: E402

__all__ = ["__version__", "SoakError", "Run", "load_run"]

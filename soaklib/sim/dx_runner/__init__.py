"""The dx-runner simulator, a stand-alone program: ``python -m soaklib.sim.dx_runner COMMAND``.

``runner`` is the program (the real runner's commands, files, output formats and exit codes);
``scenarios`` its world (configuration from ``DX_SIM_*``, the scenarios, latencies and job
plans). Standard library only.
"""
from __future__ import annotations

from soaklib.sim.dx_runner.runner import CHECK_EXIT, VERSION, main
from soaklib.sim.dx_runner.scenarios import SCENARIOS, SimConfig

__all__ = ["CHECK_EXIT", "SCENARIOS", "VERSION", "SimConfig", "main"]

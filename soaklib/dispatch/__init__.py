"""Multi-provider dispatch rounds through the dx-runner command surface.

``SCENARIOS`` names the built-in simulator's scenarios (``--scenario``), from their one home
``soaklib.sim.dx_runner.scenarios``: the CLI's help, the lane's validation and the notebook use it.
"""
from soaklib.sim.dx_runner.scenarios import SCENARIOS

__all__ = ["SCENARIOS"]

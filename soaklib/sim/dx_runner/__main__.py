"""``python -m soaklib.sim.dx_runner``: the simulator's command line."""
from soaklib.sim.dx_runner.runner import main

raise SystemExit(main())

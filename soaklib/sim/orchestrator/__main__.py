"""``python -m soaklib.sim.orchestrator``: the reference orchestrator's command line."""
from soaklib.sim.orchestrator.orchestrator import main

raise SystemExit(main())

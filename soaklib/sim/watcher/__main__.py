"""``python -m soaklib.sim.watcher``: the reference daemon's command line."""
from soaklib.sim.watcher.daemon import main

raise SystemExit(main())

"""The soak drivers: A endurance, B sequential requests (queue), C the autonomous loop."""

"""The drift-free schedule: deadlines at ``t0 + k * interval_s`` on the monotonic clock."""
from __future__ import annotations

import threading
import time

from soaklib.errors import ParameterError


class Ticker:
    """Deadlines at ``t0 + k * interval_s`` on the monotonic clock: no drift, lag recorded."""

    def __init__(self, interval_s: float, t0: float | None = None) -> None:
        if not interval_s > 0:
            raise ParameterError(f"interval_s = {interval_s!r} is invalid: expected seconds > 0", key="interval_s")
        self.interval_s = interval_s
        self.t0 = time.monotonic() if t0 is None else t0
        self.k = 0
        self.skipped = 0
        self.last_lag_s = 0.0
        self.max_lag_s = 0.0

    @property
    def next_deadline(self) -> float:
        return self.t0 + (self.k + 1) * self.interval_s

    def wait(self, stop_event: threading.Event | None = None) -> float:
        """Sleep until the next deadline; past it, skip to the latest missed one. Returns the lag."""
        now = time.monotonic()
        k = self.k + 1
        due = int((now - self.t0) // self.interval_s)
        if due > k:
            self.skipped += due - k
            k = due
        deadline = self.t0 + k * self.interval_s
        self.k = k
        while (remaining := deadline - time.monotonic()) > 0:
            if stop_event is None:
                time.sleep(remaining)
            elif stop_event.wait(remaining):
                return 0.0
        lag = max(0.0, time.monotonic() - deadline)
        self.last_lag_s, self.max_lag_s = lag, max(self.max_lag_s, lag)
        return lag



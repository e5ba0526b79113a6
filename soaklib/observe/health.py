"""LLM health: an HTTP probe on its own cadence, in a thread, with up/down transitions."""
from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request

from soaklib.observe.schedule import Ticker

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


class HealthProbe:
    """HTTP health of the LLM server on its own cadence (a daemon thread).

    ``latest()`` is ``(status, latency_ms, checked_at_mono)``; status 0 = no answer.
    Up (2xx/3xx) / down transitions are kept as ``(t_mono, "llm_down"|"llm_up")`` events for
    ``drain_events()``; a first check that finds the server down is an ``llm_down`` event.
    """

    def __init__(self, url: str, interval_s: float = 30.0, timeout_s: float = 2.0, *, autostart: bool = True) -> None:
        self.url, self.interval_s, self.timeout_s = url, interval_s, timeout_s
        self._lock = threading.Lock()
        self._latest: tuple[int, float | None, float | None] = (0, None, None)
        self._events: list[tuple[float, str]] = []
        self._up: bool | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.checks = 0
        if autostart:
            self.start()

    def start(self) -> HealthProbe:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="soak-health-probe", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        ticker = Ticker(self.interval_s)
        while not self._stop.is_set():
            self.check_now()
            ticker.wait(self._stop)

    def check_now(self) -> tuple[int, float | None, float | None]:
        """Probe once (at most ``timeout_s``) and record the result."""
        start = time.monotonic()
        try:
            with _DIRECT.open(self.url, timeout=self.timeout_s) as resp:
                resp.read(65536)
                status = int(resp.status)
        except urllib.error.HTTPError as e:
            status = int(e.code)
            e.close()
        except Exception:  # refused, timeout, reset, garbage: no answer
            status = 0
        now = time.monotonic()
        up = 200 <= status < 400
        with self._lock:
            self._latest = (status, (now - start) * 1000.0 if status else None, now)
            if up != self._up and (self._up is not None or not up):
                self._events.append((now, "llm_up" if up else "llm_down"))
            self._up = up
            self.checks += 1
            return self._latest

    def latest(self) -> tuple[int, float | None, float | None]:
        with self._lock:
            return self._latest

    def drain_events(self) -> list[tuple[float, str]]:
        """Up/down transitions since the last drain, oldest first."""
        with self._lock:
            events, self._events = self._events, []
            return events

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s + 1.0)



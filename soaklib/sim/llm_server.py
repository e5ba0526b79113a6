"""A loopback LLM server stub: ``GET /health`` and ``POST /completion``, with outage windows.

It stands in for the llama.cpp-style server a WATCHER daemon asks for evaluations, so soaks
and tests run on a machine without a model. During an outage window the server **stops
listening** (its socket is closed: clients get "connection refused", which a health probe
records as no answer) and listens again on the same port afterwards — the way a crashed
and restarted model server looks from outside. It binds loopback addresses only.

    python -m soaklib.sim.llm_server --port 0 --port-file F --outage 5:10 --outage 30:31
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

log = logging.getLogger("soaklib.sim.llm_server")

MAX_BODY_BYTES = 1 << 20


class _Handler(BaseHTTPRequestHandler):
    server_version = "soaklib-llm-stub/1.0"
    protocol_version = "HTTP/1.0"  # one request per connection: an outage closes everything

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # http.server naming
        if self.path.split("?", 1)[0] == "/health":
            self._send_json(200, {"status": "ok"})
        else:
            self._send_json(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != "/completion":
            self._send_json(404, {"error": f"no route {self.path}"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._send_json(413, {"error": "request body too large"})
            return
        raw = self.rfile.read(length) if length else b""
        try:
            request = json.loads(raw or b"{}")
        except ValueError:
            self._send_json(400, {"error": "request body is not JSON"})
            return
        stub: LlmStub = self.server.stub  # type: ignore[attr-defined]
        if stub.delay_ms:
            time.sleep(stub.delay_ms / 1000.0)
        decision = json.dumps({"action": stub.action, "confidence": stub.confidence})
        prompt = request.get("prompt", "") if isinstance(request, dict) else ""
        self._send_json(
            200,
            {
                "content": decision,
                "model": "loopback-stub",
                "stop": True,
                "tokens_evaluated": len(str(prompt).split()),
                "tokens_predicted": len(decision.split()),
            },
        )

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def _check_loopback(host: str) -> None:
    if host == "localhost":
        return
    try:
        ok = ipaddress.ip_address(host).is_loopback and ipaddress.ip_address(host).version == 4
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"--host {host!r} is not an IPv4 loopback address: the stub binds loopback only (127.0.0.1)")


def parse_outage(text: str) -> tuple[float, float]:
    """``"START_S:END_S"`` → ``(start_s, end_s)`` with ``0 <= start_s < end_s``."""
    try:
        start_s, end_s = (float(x) for x in text.split(":"))
    except ValueError:
        raise ValueError(f"outage {text!r} is not START_S:END_S (seconds after start, e.g. 5:10)") from None
    if not 0 <= start_s < end_s:
        raise ValueError(f"outage {text!r} needs 0 <= START_S < END_S")
    return start_s, end_s


class LlmStub:
    """The server and its schedule: listening except inside the outage windows."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        outages: Sequence[tuple[float, float]] = (),
        *,
        delay_ms: float = 0.0,
        action: str = "proceed",
        confidence: float = 0.87,
    ) -> None:
        _check_loopback(host)
        self.host, self.port = host, port
        self.outages = sorted((float(a), float(b)) for a, b in outages)
        self.delay_ms, self.action, self.confidence = delay_ms, action, confidence
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()

    @property
    def url(self) -> str:
        """Base URL of the server (valid once it has listened once)."""
        return f"http://{self.host}:{self.port}"

    @property
    def listening(self) -> bool:
        return self._server is not None

    def _in_outage(self, elapsed_s: float) -> bool:
        return any(a <= elapsed_s < b for a, b in self.outages)

    def _next_change_s(self, elapsed_s: float) -> float | None:
        edges = [e for a, b in self.outages for e in (a, b) if e > elapsed_s]
        return min(edges) if edges else None

    def listen(self) -> None:
        """Bind (the same port as before, after the first time) and serve in a thread."""
        if self._server is not None:
            return
        server = ThreadingHTTPServer((self.host, self.port), _Handler)
        server.daemon_threads = True
        server.stub = self  # type: ignore[attr-defined]
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        log.info("listening on %s", self.url)

    def close(self) -> None:
        """Stop listening: close the socket so new connections are refused."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        log.info("stopped listening on %s", self.url)

    def run(self, stop: threading.Event, on_listen: Callable[[int], None] | None = None) -> None:
        """Follow the outage schedule (monotonic clock) until ``stop`` is set; then close."""
        self._t0 = time.monotonic()
        announced = False
        try:
            if self.port == 0:  # bind once to learn the port, even when an outage starts at 0 s
                self.listen()
                announced = True
                if on_listen is not None:
                    on_listen(self.port)
            while not stop.is_set():
                elapsed_s = time.monotonic() - self._t0
                if self._in_outage(elapsed_s):
                    if self.listening:
                        log.warning("outage: not listening (%.1f s after start)", elapsed_s)
                    self.close()
                else:
                    if not self.listening and announced:
                        log.warning("outage over: listening again (%.1f s after start)", elapsed_s)
                    self.listen()
                    if not announced:
                        announced = True
                        if on_listen is not None:
                            on_listen(self.port)
                nxt = self._next_change_s(elapsed_s)
                wait_s = 0.5 if nxt is None else nxt - (time.monotonic() - self._t0)
                stop.wait(min(0.5, max(0.0, wait_s)))  # bounded: signals are handled promptly
        finally:
            self.close()


def serve_in_thread(
    outages: Sequence[tuple[float, float]] = (),
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    delay_ms: float = 0.0,
    action: str = "proceed",
) -> tuple[str, Callable[[], None]]:
    """Run a stub in this process; returns ``(base_url, stop_fn)``. For tests and notebooks."""
    stub = LlmStub(host, port, outages, delay_ms=delay_ms, action=action)
    stop = threading.Event()
    ready = threading.Event()
    thread = threading.Thread(target=stub.run, args=(stop, lambda _port: ready.set()), daemon=True)
    thread.start()
    if not ready.wait(timeout=10):
        stop.set()
        thread.join(timeout=5)
        raise RuntimeError("the LLM stub did not start listening within 10 s")

    def stop_fn() -> None:
        stop.set()
        thread.join(timeout=10)

    return stub.url, stop_fn


def _write_port_file(path: str, port: int) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{port}\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m soaklib.sim.llm_server", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port; 0 = any free port (default 8080)")
    p.add_argument("--port-file", help="write the bound port here (atomically) once listening")
    p.add_argument("--outage", action="append", default=[], metavar="START_S:END_S",
                   help="do not listen from START_S to END_S seconds after start (repeatable)")
    p.add_argument("--delay-ms", type=float, default=0.0, help="time each completion takes (default 0)")
    p.add_argument("--action", default="proceed", help="the action every completion decides (default proceed)")
    p.add_argument("--confidence", type=float, default=0.87, help="the confidence it reports (default 0.87)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the stub until SIGTERM / SIGINT; exit 0, or 2 for bad arguments."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s [%(levelname)s] %(message)s")
    try:
        outages = [parse_outage(o) for o in args.outage]
        stub = LlmStub(args.host, args.port, outages, delay_ms=args.delay_ms, action=args.action, confidence=args.confidence)
    except ValueError as exc:
        parser.error(str(exc))
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        stub.run(stop, on_listen=(lambda port: _write_port_file(args.port_file, port)) if args.port_file else None)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", args.host, args.port, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

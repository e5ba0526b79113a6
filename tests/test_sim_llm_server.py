"""The loopback LLM stub: health, completions, outage windows, clean exit."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from soaklib.sim.llm_server import parse_outage, serve_in_thread

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(url: str, data: bytes | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with OPENER.open(req, timeout=2) as resp:
        return resp.status, json.loads(resp.read())


def refused(url: str) -> bool:
    """True when the connection is refused (nobody listening); a reset at the edge is not."""
    try:
        get(url)
    except urllib.error.URLError as exc:
        return isinstance(exc.reason, ConnectionRefusedError)
    except (ConnectionError, OSError):  # reset while the socket was closing
        return False
    return False


def answers(url: str) -> bool:
    try:
        return get(url)[0] == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_for(pred, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


def test_health_and_completion_in_thread() -> None:
    url, stop = serve_in_thread()
    try:
        assert url.startswith("http://127.0.0.1:")
        assert get(f"{url}/health") == (200, {"status": "ok"})
        status, body = get(f"{url}/completion", json.dumps({"prompt": "evaluate", "n_predict": 32}).encode())
        assert status == 200
        assert json.loads(body["content"]) == {"action": "proceed", "confidence": 0.87}
        with pytest.raises(urllib.error.HTTPError) as err:
            get(f"{url}/nope")
        assert err.value.code == 404
    finally:
        stop()
    assert refused(f"{url}/health")


def test_outage_window_refuses_then_recovers_on_same_port() -> None:
    url, stop = serve_in_thread(outages=[(0.4, 0.9)])
    try:
        assert get(f"{url}/health")[0] == 200
        assert wait_for(lambda: refused(f"{url}/health"), 2.0), "never stopped listening"
        assert wait_for(lambda: answers(f"{url}/health"), 2.0), "never listened again"
        assert get(f"{url}/health")[0] == 200
    finally:
        stop()


def test_parse_outage() -> None:
    assert parse_outage("5:10") == (5.0, 10.0)
    for bad in ("5", "10:5", "a:b", "-1:3"):
        with pytest.raises(ValueError):
            parse_outage(bad)


def test_program_port_file_outage_and_sigterm(tmp_path: Path, procs: list[subprocess.Popen]) -> None:
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "soaklib.sim.llm_server", "--port", "0", "--port-file", str(port_file),
         "--outage", "1.0:1.6"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    procs.append(proc)
    assert wait_for(port_file.exists, 10.0), proc.stderr.read1().decode() if proc.poll() is not None else "no port file"
    port = int(port_file.read_text())
    url = f"http://127.0.0.1:{port}"
    assert get(f"{url}/health") == (200, {"status": "ok"})
    assert wait_for(lambda: refused(f"{url}/health"), 3.0)
    assert wait_for(lambda: answers(f"{url}/health"), 3.0)
    assert int(port_file.read_text()) == port
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=3) == 0
    stderr = proc.stderr.read().decode()
    assert "outage: not listening" in stderr and "listening again" in stderr


def test_program_refuses_non_loopback_host(procs: list[subprocess.Popen]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "soaklib.sim.llm_server", "--host", "0.0.0.0", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    procs.append(proc)
    assert proc.wait(timeout=10) == 2
    assert "loopback" in proc.stderr.read().decode()


def test_an_outage_from_the_start_still_announces_the_port(tmp_path):
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request

    port_file = tmp_path / "port"
    p = subprocess.Popen([sys.executable, "-m", "soaklib.sim.llm_server", "--port", "0", "--port-file", str(port_file),
                          "--outage", "0:1.5"])
    try:
        deadline = time.monotonic() + 10
        while not port_file.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        port = int(port_file.read_text())
        time.sleep(0.3)
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            answered = True
        except (urllib.error.URLError, ConnectionError, OSError):
            answered = False
        assert not answered  # inside the outage: no answer
        time.sleep(1.6)
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200
    finally:
        p.terminate()
        p.wait(timeout=10)

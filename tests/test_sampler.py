"""The sampler: incremental readers, probes, the process tree, LLM health, the schedule."""
from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pytest

from soaklib.observe.health import HealthProbe
from soaklib.observe.readers import IncrementalReader, LogScanner, StatCache, count_files, dir_bytes, json_probe, redact
from soaklib.observe.sampler import Sampler
from soaklib.observe.schedule import Ticker
from soaklib.observe.sources import HarnessSource, LogSource, ProbeSource, ProcessSource
from soaklib.params import SamplingParams
from soaklib.proc.tree import ProcessTree, process_tree_metrics
from soaklib.soak.sampling import soak_sources
from soaklib.watcher.decisions import DecisionCounters, DecisionStream
from soaklib.watcher.protocol import PROFILES

V2 = PROFILES["watcher-v2"]


def soak_sampler(project: Path, logs: list[Path], gpu: object = None, probes: dict | None = None,
                 run_id: str = "", host: str | None = None) -> tuple[Sampler, LogSource]:
    sources, log_source = soak_sources(project, V2, SamplingParams(), log_paths=logs, gpu=gpu, health=None,
                                       probes=probes or {})
    return Sampler(sources, run_id=run_id, host=host), log_source


def append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)


# --------------------------------------------------------------------------- IncrementalReader


def test_reader_counts_only_appended_lines_and_buffers_a_partial_line(tmp_path):
    log = tmp_path / "a.log"
    log.write_text("old 1\nold 2\n")
    r = IncrementalReader(log)
    assert r.read_lines() == []
    append(log, "new 1\nnew ")
    assert r.read_lines() == ["new 1"]
    assert r.read_lines() == []
    append(log, "2\r\nnew 3\n")
    assert r.read_lines() == ["new 2", "new 3"]
    assert IncrementalReader(log, from_end=False).read_lines()[:2] == ["old 1", "old 2"]


def test_reader_survives_rotation_and_truncation(tmp_path):
    log = tmp_path / "a.log"
    log.write_text("x" * 100 + "\n")
    r = IncrementalReader(log)
    append(log, "before rotation\n")
    assert r.read_lines() == ["before rotation"]
    log.rename(tmp_path / "a.log.1")  # rotation: a new file under the same name
    log.write_text("after rotation\n")
    assert r.read_lines() == ["after rotation"]
    assert r.rotations == 1
    append(log, "more\n")
    assert r.read_lines() == ["more"]
    with open(log, "w") as fh:  # copytruncate: same inode, smaller size
        fh.write("t\n")
    assert r.read_lines() == ["t"]
    assert r.rotations == 2


def test_reader_missing_file_yields_nothing_until_it_appears(tmp_path):
    log = tmp_path / "later.log"
    r = IncrementalReader(log)
    assert r.read_lines() == [] and r.bytes_read == 0
    log.write_text("first\n")  # created during the soak: all of it is new
    assert r.read_lines() == ["first"]
    log.unlink()
    assert r.read_lines() == []


def test_reader_cost_does_not_grow_with_the_prior_size(tmp_path):
    log = tmp_path / "big.log"
    line = "2026-02-03 10:00:00 [INFO] cycle ok " + "x" * 60 + "\n"
    log.write_text(line * (5_000_000 // len(line)))
    assert log.stat().st_size > 4_900_000
    r = IncrementalReader(log)
    new = "".join(f"2026-02-03 10:00:{i:02d} [INFO] new line {i}\n" for i in range(10))
    append(log, new)
    assert len(r.read_lines()) == 10
    assert r.bytes_read == len(new.encode())
    for _ in range(5):
        r.read_lines()
    assert r.bytes_read == len(new.encode())  # nothing read twice


def test_log_scanner_counts_planted_errors_exactly(tmp_path):
    logs = [tmp_path / "target.log", tmp_path / "agent.log"]
    logs[0].write_text("ERROR old error, before the soak\n" * 50)
    scan = LogScanner(logs, SamplingParams().error_regex, SamplingParams().traceback_regex,
                      heuristic_regex=V2.heuristic_in_log_regex, keep_first=3)
    planted_errors = planted_tb = planted_h = 0
    for i in range(200):
        path = logs[i % 2]
        if i % 7 == 0:
            append(path, f"2026 [ERROR] failed with API_KEY=sk-{i}abc and Bearer tok{i}\n")
            planted_errors += 1
        elif i % 11 == 0:
            append(path, "Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: boom\n")
            planted_tb += 1
        elif i % 13 == 0:
            append(path, "2026 [WARNING] HTTP LLM evaluation failed: refused; using heuristic default\n")
            planted_h += 1
        else:
            append(path, f"2026 [INFO] cycle {i} ok")  # no newline yet: completed by the next append
            append(path, "\n")
        if i % 17 == 0:
            scan.scan()
    scan.scan()
    assert (scan.errors, scan.tracebacks, scan.heuristics) == (planted_errors, planted_tb, planted_h)
    assert len(scan.first_errors) == 3
    assert "sk-0abc" not in scan.first_errors[0] and "[REDACTED]" in scan.first_errors[0]


def test_redact():
    text = "GEMINI_API_KEY=abc123 token: OPENAI_TOKEN=xyz Authorization: Bearer eyJhbGciOi.x op://vault/item/field"
    out = redact(text)
    for secret in ("abc123", "xyz", "eyJhbGciOi", "vault/item"):
        assert secret not in out
    assert redact("plain error line") == "plain error line"


def test_decision_stream_yields_only_new_lines_typed(tmp_path):
    path = tmp_path / "watcher_decisions.jsonl"
    old = {"dispatch_type": "selfplay", "status": "COMPLETED", "details": {"source": "autonomous"}}
    path.write_text(json.dumps(old) + "\n" * 1 + json.dumps(old) + "\n")
    stream = DecisionStream(path, V2)
    c = DecisionCounters(profile=V2)
    assert stream.poll() == []
    append(path, json.dumps(old) + "\n{broken\n\n" + json.dumps({"step": 1, "parse_method": "llm"}))
    got = stream.poll()
    assert [d.kind for d in got] == ["dispatch", "bad"]
    assert got[0].status == "COMPLETED" and got[0].source == "autonomous" and got[1].text == "{broken"
    append(path, "\n")
    last = stream.poll()
    assert [d.kind for d in last] == ["step"] and last[0].parse_method == "llm"
    for d in got + last:
        c.update(d)
    assert (c.lines, c.bad_lines, c.dispatch_selfplay, c.completed, c.steps) == (3, 1, 1, 1, 1)


# --------------------------------------------------------------------------- files and JSON


def test_json_probe_values_and_missing_or_half_written_files(tmp_path):
    f = tmp_path / "t.json"
    assert json_probe(f, "total_models") is None  # missing
    f.write_text('{"total_models": 7, "scores": [1, 2, 3, "x"], "nested": {"a": [{"b": 2.5}]}, "m": {"x": 1, "y": 4}')
    assert json_probe(f, "total_models") is None  # half-written
    f.write_text(json.dumps({"total_models": 7, "scores": [1, 2, 3, "x"], "nested": {"a": [{"b": 2.5}]},
                             "m": {"x": 1, "y": 4}, "name": "s"}))
    assert json_probe(f, "total_models") == 7.0
    assert json_probe(f, "nested.a.0.b") == 2.5
    assert json_probe(f, "scores", "len") == 4.0
    assert json_probe(f, "scores", "sum") == 6.0
    assert json_probe(f, "scores", "mean") == 2.0
    assert json_probe(f, "scores", "max") == 3.0 and json_probe(f, "scores", "min") == 1.0
    assert json_probe(f, "m", "max") == 4.0
    assert json_probe(f, "name") is None and json_probe(f, "nope.deeper") is None
    assert json_probe(f, "scores.9") is None
    f.write_bytes(b"\x00\xff")
    assert json_probe(f) is None


def test_stat_cache_recomputes_only_on_change(tmp_path):
    f = tmp_path / "h.json"
    f.write_text('{"draws": [1, 2]}')
    calls = []

    def count(p):
        calls.append(p)
        return len(json.loads(p.read_text())["draws"])

    cache = StatCache()
    assert cache.get(f, "draws", count) == 2 and cache.get(f, "draws", count) == 2
    assert len(calls) == 1
    tmp = tmp_path / "h.tmp"
    tmp.write_text('{"draws": [1, 2, 3]}')
    os.replace(tmp, f)  # atomic rewrite: new inode
    assert cache.get(f, "draws", count) == 3 and len(calls) == 2
    f.unlink()
    assert cache.get(f, "draws", count) is None


def test_dir_bytes_and_count_files(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "x.json").write_bytes(b"1" * 100)
    (tmp_path / "a" / "b" / "y.json").write_bytes(b"2" * 50)
    (tmp_path / "a" / ".hidden").write_bytes(b"3" * 7)
    os.link(tmp_path / "a" / "x.json", tmp_path / "a" / "b" / "hard.json")  # same inode, counted once
    assert dir_bytes([tmp_path / "a", tmp_path / "a" / "x.json", tmp_path / "missing"]) == 157
    assert count_files(tmp_path / "a") == 1 and count_files(tmp_path / "a" / "b", "*.json") == 2
    assert count_files(tmp_path / "missing") == 0


# --------------------------------------------------------------------------- schedule


def test_ticker_does_not_drift_over_20_ticks():
    interval = 0.03
    ticker = Ticker(interval)
    times = []
    for k in range(20):
        time.sleep(0.01 if k % 2 else 0.0)  # work of varying length inside each tick
        ticker.wait()
        times.append(time.monotonic() - ticker.t0)
    for k, t in enumerate(times, start=1):
        assert t >= k * interval - 1e-6
    assert times[-1] < 20 * interval + 0.05  # sleeping after work would take 20 * (interval + work)
    assert ticker.skipped == 0


def test_ticker_skips_missed_ticks_and_stops_early():
    ticker = Ticker(0.02)
    time.sleep(0.1)
    lag = ticker.wait()
    assert ticker.skipped >= 3 and 0 <= lag < 0.02
    stop = threading.Event()
    stop.set()
    slow = Ticker(10.0)
    t = time.monotonic()
    assert slow.wait(stop) == 0.0 and time.monotonic() - t < 1.0


# --------------------------------------------------------------------------- process tree

PARENT = (
    "import subprocess, sys, time\n"
    "kids = [subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']) for _ in range(2)]\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


def test_process_tree_metrics_of_a_real_tree_then_vanished(procs):
    p = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, start_new_session=True)
    procs.append(p)
    assert p.stdout.readline().strip() == b"ready"
    tree = ProcessTree()
    first = process_tree_metrics(p.pid, tree=tree)
    assert first["alive"] is True and first["children"] == 2
    assert first["rss_bytes"] > 0 and first["vms_bytes"] >= first["rss_bytes"]
    assert first["tree_rss_bytes"] > first["rss_bytes"] and first["threads"] >= 1
    assert first["tree_num_fds"] >= first["num_fds"] > 0
    assert first["cpu_pct"] is None and first["uss_bytes"] is None  # CPU% needs an interval
    assert len(tree.pids) == 3
    time.sleep(0.05)
    second = process_tree_metrics(p.pid, tree=tree)
    assert isinstance(second["cpu_pct"], float) and isinstance(second["tree_cpu_pct"], float)
    with_uss = process_tree_metrics(p.pid, uss=True)
    assert with_uss["uss_bytes"] is None or with_uss["uss_bytes"] > 0
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=10)
    gone = process_tree_metrics(p.pid, tree=tree)
    assert gone["alive"] is False and gone["rss_bytes"] is None and gone["children"] is None
    assert process_tree_metrics(None)["alive"] is False


def test_process_tree_metrics_of_an_unreaped_zombie(procs):
    p = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    procs.append(p)
    deadline = time.monotonic() + 5
    while psutil.Process(p.pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process_tree_metrics(p.pid, tree=ProcessTree())["alive"] is False
    p.wait(timeout=5)


# --------------------------------------------------------------------------- LLM health


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'{"status": "ok"}'
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def wait_for(cond, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return False


def test_health_probe_up_then_down():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/health"
    probe = HealthProbe(url, interval_s=0.05, timeout_s=0.5)
    try:
        assert wait_for(lambda: probe.latest()[0] == 200)
        _, latency_ms, checked_at = probe.latest()
        assert latency_ms is not None and latency_ms >= 0 and checked_at <= time.monotonic()
        assert probe.drain_events() == []  # starting up is not an event
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        assert wait_for(lambda: probe.latest()[0] == 0)
        assert probe.latest()[1] is None
        events = probe.drain_events()
        assert [e for _, e in events] == ["llm_down"] and probe.drain_events() == []
    finally:
        probe.stop()
        server.server_close()
    n = probe.checks
    time.sleep(0.15)
    assert probe.checks == n  # stopped: no more checks


def test_health_probe_first_check_down_is_an_event():
    probe = HealthProbe("http://127.0.0.1:9/health", interval_s=10, timeout_s=0.2, autostart=False)
    assert probe.check_now()[0] == 0
    assert [e for _, e in probe.drain_events()] == ["llm_down"]


# --------------------------------------------------------------------------- the sample


class _Gpu:
    def __init__(self, fail=False):
        self.fail, self.pids = fail, None

    def read(self, pids):
        if self.fail:
            raise RuntimeError("GPU is lost")
        self.pids = list(pids)
        return {"gpu_available": True, "gpu_used_bytes": 1.0e9, "gpu_total_bytes": 8 << 30,
                "gpu_util_pct": 12, "gpu_target_bytes": None}


def make_project(root: Path) -> Path:
    (root / "watcher_requests" / "archive").mkdir(parents=True)
    (root / "policy_history").mkdir()
    (root / "telemetry").mkdir()
    (root / "logs").mkdir()
    line = json.dumps({"dispatch_type": "selfplay", "status": "COMPLETED", "details": {"source": "autonomous"}})
    (root / "watcher_decisions.jsonl").write_text((line + "\n") * 1000)  # months of history
    (root / "lottery_history.json").write_text(json.dumps({"draws": [{"value": i} for i in range(50)]}))
    return root


def test_sampler_row_on_a_v2_project(tmp_path, procs):
    project = make_project(tmp_path / "project")
    target_log = tmp_path / "target.log"
    target_log.write_text("ERROR before the soak\n")
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    procs.append(p)
    gpu = _Gpu()
    sampler, logs = soak_sampler(
        project, [target_log], gpu=gpu,
        probes={"hit_rate": {"file": "telemetry/learning_health_latest.json", "path": "hit_rate"}},
        run_id="soak-a-test", host="h1")
    first = sampler.sample(p.pid)
    assert first["alive"] is True and first["rss_bytes"] > 0 and gpu.pids == [p.pid]
    assert first["gpu_used_bytes"] == 1_000_000_000 and isinstance(first["gpu_used_bytes"], int)
    assert first["decision_lines"] == 0 and first["log_errors"] == 0  # old history never counts
    assert first["draws"] == 50 and first["policy_candidates"] == 0
    assert first["telemetry_models"] is None and first["telemetry_valid"] is None
    assert first["probe_hit_rate"] is None and first["llm_status"] is None
    assert first["run_id"] == "soak-a-test" and first["host"] == "h1" and first["t_s"] >= 0
    assert first["harness_rss_bytes"] > 0 and first["sample_cost_ms"] > 0

    (project / "watcher_requests" / "r_01.json").write_text("{}")
    (project / "watcher_requests" / "archive" / "COMPLETED_20260203_100000_r_00.json").write_text("{}")
    (project / "policy_history" / "candidate_1.json").write_text("{}")
    (project / "telemetry" / "learning_health_latest.json").write_text('{"total_models": 3, "hit_rate": 0.4}')
    lines = [
        {"dispatch_type": "selfplay", "status": "COMPLETED", "details": {"request_path": "r_00.json"}},
        {"dispatch_type": "ch13_request_selfplay_retrain", "status": "COMPLETED", "details": {"request_path": "r_00.json"}},
        {"step": 2, "parse_method": "heuristic"},
    ]
    append(project / "watcher_decisions.jsonl", "".join(json.dumps(x) + "\n" for x in lines))
    append(target_log, "x [WARNING] HTTP LLM evaluation failed; heuristic default\nx [ERROR] boom\n"
                       "Traceback (most recent call last):\n")
    second = sampler.sample(p.pid)
    assert (second["requests_pending"], second["requests_archived"], second["policy_candidates"]) == (1, 1, 1)
    assert (second["decision_lines"], second["decisions_completed"], second["dispatch_selfplay"]) == (3, 2, 1)
    assert (second["heuristic_fallback"], second["heuristic_steps"]) == (1, 1)
    assert (second["log_errors"], second["log_tracebacks"]) == (1, 1)
    assert logs.new_error_lines == ["x [ERROR] boom", "Traceback (most recent call last):"]
    assert second["telemetry_models"] == 3 and second["telemetry_valid"] is True
    assert second["probe_hit_rate"] == 0.4
    assert second["bytes_read"] > 0 and second["watched_bytes"] > 0
    table = pa.Table.from_pylist([first, second], schema=sampler.schema)  # stable column types
    assert table.num_rows == 2 and table.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert list(first) == sampler.schema.names


def test_sampler_degrades_per_metric(tmp_path):
    project = make_project(tmp_path / "project")
    (project / "telemetry" / "learning_health_latest.json").write_text('{"total_mod')
    (project / "lottery_history.json").write_text('{"draws": [1, 2')  # half-written
    sampler, _ = soak_sampler(project, [], gpu=_Gpu(fail=True))
    row = sampler.sample(None)
    assert row["alive"] is False and row["rss_bytes"] is None
    assert row["gpu_available"] is None and "GPU is lost" in sampler.notes["gpu"]
    assert row["draws"] is None and "draws" in sampler.notes
    assert row["telemetry_valid"] is False
    assert row["decision_lines"] == 0 and row["disk_free_bytes"] > 0
    sampler.sample(None)
    assert len(sampler.notes) == 2  # a reason is noted once


def test_a_sampler_of_process_sources_is_a_process_recorder(tmp_path):
    sampler = Sampler([ProcessSource(), HarnessSource()], run_id="m")
    row = sampler.sample(os.getpid(), lag_s=0.25)
    assert row["alive"] is True and row["rss_bytes"] > 0 and row["harness_rss_bytes"] > 0
    assert row["lag_s"] == 0.25 and row["run_id"] == "m"
    assert "requests_pending" not in row and "gpu_available" not in row  # only the columns of its sources
    assert list(row) == sampler.schema.names


def test_sampler_refuses_a_bad_probe(tmp_path):
    from soaklib.errors import ParameterError

    with pytest.raises(ParameterError, match="reduce"):
        ProbeSource({"x": {"file": "a.json", "reduce": "median"}}, tmp_path)


def test_log_scanner_chunk_prefilter_keeps_per_line_semantics(tmp_path):
    from soaklib.observe.readers import LogScanner

    log = tmp_path / "t.log"
    log.write_text("")
    scanner = LogScanner([log], r"^ERROR\b", r"Traceback \(most recent call last\)$", heuristic_regex=r"\Aheuristic")
    lines = ["INFO ok", "ERROR first", "x ERROR not at start", "Traceback (most recent call last)", "heuristic default"]
    with log.open("a") as fh:
        fh.write("\n".join(lines * 3) + "\n")
    scanner.scan()
    assert (scanner.errors, scanner.tracebacks, scanner.heuristics) == (3, 3, 3)
    with log.open("a") as fh:
        fh.write("INFO quiet\n" * 50)
    scanner.scan()
    assert (scanner.errors, scanner.tracebacks, scanner.heuristics) == (3, 3, 3)

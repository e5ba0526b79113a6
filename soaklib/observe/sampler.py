"""One sample of everything a soak watches, at a cost that does not grow with the logs.

Growing files are read incrementally (:mod:`soaklib.observe.readers`); JSON files of the target
are re-parsed only when their stat changes; the process tree is read from ``/proc``, only
new processes in full (:mod:`soaklib.proc.tree`); LLM health is probed on its own
cadence in a thread. A metric that
cannot be read is null in that row and its reason is noted once (``Sampler.notes``): nothing
the target does makes a sample raise. The schedule runs on absolute monotonic deadlines
(:class:`Ticker`); UTC timestamps appear only as data.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import pyarrow as pa

from soaklib.errors import ParameterError
from soaklib.params import SamplingParams
from soaklib.proc.tree import (
    TREE_KEYS,
    ParentTable,
    ProcessTree,
    ProcStat,
    proc_fds,
    proc_stat,
    proc_statm,
    process_tree_metrics,
)
from soaklib.watcher.protocol import Profile
from soaklib.observe.readers import (
    REDUCES,
    DecisionLogTail,
    IncrementalReader,
    LogScanner,
    StatCache,
    check_probe,
    count_files,
    dir_bytes,
    json_probe,
    redact,
    reduce_value,
)
from soaklib.store import utc_now

__all__ = [
    "REDUCES", "DecisionLogTail", "HealthProbe", "IncrementalReader", "LogScanner", "ParentTable", "ProcStat",
    "ProcessTree", "Sampler", "StatCache", "Ticker", "check_probe", "count_files", "dir_bytes", "json_probe",
    "proc_fds", "proc_stat", "proc_statm", "process_tree_metrics", "redact", "reduce_value", "sample_schema",
]

# --------------------------------------------------------------------------- LLM health


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

    def start(self) -> "HealthProbe":
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


# --------------------------------------------------------------------------- schedule


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


# --------------------------------------------------------------------------- the sample

GPU_KEYS = ("gpu_available", "gpu_used_bytes", "gpu_total_bytes", "gpu_util_pct", "gpu_target_bytes")
_I, _F, _B, _S = pa.int64(), pa.float64(), pa.bool_(), pa.string()
SAMPLE_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    ("run_id", _S), ("host", _S), ("ts", pa.timestamp("us", tz="UTC")), ("t_s", _F),
    ("alive", _B), ("rss_bytes", _I), ("vms_bytes", _I), ("uss_bytes", _I), ("threads", _I),
    ("num_fds", _I), ("cpu_pct", _F), ("children", _I), ("tree_rss_bytes", _I),
    ("tree_num_fds", _I), ("tree_cpu_pct", _F),
    ("gpu_available", _B), ("gpu_used_bytes", _I), ("gpu_total_bytes", _I), ("gpu_util_pct", _F),
    ("gpu_target_bytes", _I),
    ("disk_free_bytes", _I), ("watched_bytes", _I), ("requests_pending", _I), ("requests_archived", _I),
    ("decision_lines", _I), ("decisions_completed", _I), ("dispatch_selfplay", _I),
    ("dispatch_learning", _I), ("unknown_type", _I), ("heuristic_fallback", _I), ("heuristic_steps", _I),
    ("decision_bad_lines", _I), ("draws", _I), ("policy_candidates", _I), ("telemetry_models", _I),
    ("telemetry_valid", _B), ("llm_status", _I), ("llm_latency_ms", _F), ("log_errors", _I),
    ("log_tracebacks", _I),
    ("harness_rss_bytes", _I), ("harness_cpu_pct", _F), ("sample_cost_ms", _F), ("bytes_read", _I),
)
_INT_COLUMNS = {n for n, t in SAMPLE_FIELDS if t == _I}
_PROTOCOL_PATHS = ("requests_dir", "archive_dir", "history_file", "policy_dir", "telemetry_file")
_PROTOCOL_KEYS = (
    "requests_pending", "requests_archived", "decision_lines", "decisions_completed", "dispatch_selfplay",
    "dispatch_learning", "unknown_type", "heuristic_fallback", "heuristic_steps", "decision_bad_lines",
    "draws", "policy_candidates", "telemetry_models", "telemetry_valid",
)


def sample_schema(probe_names: Iterable[str] = ()) -> pa.Schema:
    """The Arrow schema of a sample row (``probe_<name>`` columns after the protocol ones)."""
    fields = [pa.field(n, t) for n, t in SAMPLE_FIELDS]
    at = [f.name for f in fields].index("harness_rss_bytes")
    return pa.schema(fields[:at] + [pa.field(f"probe_{n}", _F) for n in probe_names] + fields[at:])


def _read_draws(path: Path) -> int:
    with open(path, "rb") as fh:
        return len(json.loads(fh.read())["draws"])


def _read_telemetry(path: Path) -> tuple[int | None, bool]:
    try:
        with open(path, "rb") as fh:
            data = json.loads(fh.read())
    except ValueError:
        return None, False
    if not isinstance(data, dict):
        return None, False
    models = data.get("total_models")
    return (int(models) if isinstance(models, (int, float)) and not isinstance(models, bool) else None), True


FOLDER_MAX_AGE_S = 10.0  # a cached file count is re-counted at least this often


class Sampler:
    """Builds one flat row per call to :meth:`sample` (see ``SAMPLE_FIELDS`` for the columns).

    ``project_dir`` / ``profile`` None: the protocol columns are null (``soak monitor``).
    ``gpu`` is an object with ``read(pids) -> dict`` of ``GPU_KEYS``; ``health`` a running
    :class:`HealthProbe`. Counters count only what is appended after construction.
    ``bytes_read`` and ``sample_cost_ms`` are the sample's own cost (observer self-check).
    """

    def __init__(
        self,
        project_dir: str | os.PathLike[str] | None,
        profile: Profile | None,
        sampling: SamplingParams | None = None,
        log_paths: Iterable[str | os.PathLike[str]] = (),
        gpu: Any | None = None,
        health: HealthProbe | None = None,
        probes: Mapping[str, Mapping[str, Any]] | None = None,
        t0: float | None = None,
        host: str | None = None,
        run_id: str = "",
        *,
        from_end: bool = True,
        uss: bool = False,
    ) -> None:
        self.project_dir = Path(project_dir) if project_dir is not None else None
        self.profile = profile
        self.sampling = sampling or SamplingParams()
        self.gpu, self.health = gpu, health
        self.probes = dict(probes or {})
        for name, spec in self.probes.items():
            check_probe(name, spec)
        self.t0 = time.monotonic() if t0 is None else t0
        self.host = host or socket.gethostname()
        self.run_id = run_id
        self.notes: dict[str, str] = {}  # metric → first reason it could not be read
        self.new_error_lines: list[str] = []  # error lines first kept by the last sample
        self.tree = ProcessTree(uss=uss)
        self.cache = StatCache()
        logs = [Path(p) for p in log_paths]
        protocol = self.project_dir is not None and profile is not None
        heuristic_regex = profile.heuristic_in_log_regex if profile is not None and not profile.heuristic_in_decisions else None
        s = self.sampling
        self.logs = LogScanner(logs, s.error_regex, s.traceback_regex, heuristic_regex=heuristic_regex, from_end=from_end)
        self.decisions: DecisionLogTail | None = None
        if protocol:
            self.decisions = DecisionLogTail(profile.path(self.project_dir, "decision_log"), profile, from_end=from_end)
        base = self.project_dir or Path.cwd()
        self.watch_paths = [base / d for d in s.watch_dirs] + logs
        # paths resolved once: building Path objects was a measurable share of a sample
        self._paths: dict[str, Path | None] = {
            k: profile.path(self.project_dir, k) for k in _PROTOCOL_PATHS} if protocol else {}
        self._probe_paths = {
            name: p if (p := Path(spec["file"])).is_absolute() else base / p for name, spec in self.probes.items()}
        self.schema = sample_schema(self.probes)
        self._names_of: pa.Schema | None = None
        self._names: tuple[str, ...] = ()
        self.disk_interval_s = self.sampling.disk_interval_s
        self._watched: tuple[float, int] | None = None
        self._me = ProcessTree()  # the harness's own cost, read the cheap way
        self._me.read_one(os.getpid())

    def _watched_bytes(self, now: float) -> int:
        """Bytes under the watched folders, walked at most every ``sampling.disk_interval_s``:
        the walk costs one stat per file, and an archive only grows during a soak."""
        if self._watched is None or now - self._watched[0] >= self.disk_interval_s:
            self._watched = (now, dir_bytes(self.watch_paths))
        return self._watched[1]

    def _bytes_read(self) -> int:
        return self.logs.bytes_read + (self.decisions.reader.bytes_read if self.decisions else 0)

    def _metric(self, name: str, keys: Iterable[str], read: Callable[[], Mapping[str, Any]]) -> dict[str, Any]:
        keys = tuple(keys)
        try:
            out = read()
            return {k: out.get(k) for k in keys}
        except Exception as e:  # degrade per metric: null now, reason noted once
            self.notes.setdefault(name, f"{type(e).__name__}: {e}")
            return dict.fromkeys(keys)

    def _protocol(self) -> dict[str, Any]:
        assert self.project_dir is not None and self.profile is not None and self.decisions is not None
        prof, paths = self.profile, self._paths
        row: dict[str, Any] = {}
        row.update(self._metric("requests", ("requests_pending", "requests_archived"), lambda: {
            "requests_pending": count_files(paths["requests_dir"], "*.json"),
            "requests_archived": self.cache.get(paths["archive_dir"], "count", count_files, max_age_s=FOLDER_MAX_AGE_S),
        }))

        def decisions() -> dict[str, Any]:
            self.decisions.poll()
            c = self.decisions.counters
            out = c.as_row()
            out["heuristic_fallback"] = (
                c.heuristic_fallback if prof.heuristic_in_decisions
                else self.logs.heuristics if prof.heuristic_in_log_regex else None
            )
            return out

        row.update(self._metric("decision_log", _PROTOCOL_KEYS[2:10], decisions))
        row.update(self._metric("draws", ("draws",), lambda: {
            "draws": self.cache.get(paths["history_file"], "draws", _read_draws)}))
        row.update(self._metric("policy_candidates", ("policy_candidates",), lambda: {
            "policy_candidates": self.cache.get(paths["policy_dir"], "count", count_files, max_age_s=FOLDER_MAX_AGE_S)}))

        def telemetry() -> dict[str, Any]:
            models, valid = self.cache.get(paths["telemetry_file"], "telemetry", _read_telemetry) or (None, None)
            return {"telemetry_models": models, "telemetry_valid": valid}

        row.update(self._metric("telemetry", ("telemetry_models", "telemetry_valid"), telemetry))
        return row

    def _probe(self, name: str, spec: Mapping[str, Any]) -> float | None:
        path, reduce = spec.get("path"), spec.get("reduce", "value")
        return self.cache.get(self._probe_paths[name], f"probe:{path}:{reduce}", lambda q: json_probe(q, path, reduce))

    def sample(self, root_pid: int | None) -> dict[str, Any]:
        """One row: process tree, GPU, disk, queue, decisions, draws, LLM, logs, probes, self-check."""
        start = time.monotonic()
        bytes_before = self._bytes_read()
        row: dict[str, Any] = {"run_id": self.run_id, "host": self.host, "ts": utc_now(), "t_s": start - self.t0}
        row.update(self._metric("process", ("alive",) + TREE_KEYS, lambda: self.tree.read(root_pid)))
        if self.gpu is not None:
            row.update(self._metric("gpu", GPU_KEYS, lambda: self.gpu.read(list(self.tree.pids))))
        else:
            row.update(dict.fromkeys(GPU_KEYS))
        base = self.project_dir or Path.cwd()
        row.update(self._metric("disk_free", ("disk_free_bytes",), lambda: {"disk_free_bytes": shutil.disk_usage(base).free}))
        row.update(self._metric("watched_bytes", ("watched_bytes",), lambda: {"watched_bytes": self._watched_bytes(start)}))
        self.new_error_lines = []

        def logs() -> dict[str, Any]:
            self.new_error_lines = self.logs.scan()
            return {"log_errors": self.logs.errors, "log_tracebacks": self.logs.tracebacks}

        log_row = self._metric("logs", ("log_errors", "log_tracebacks"), logs)
        if self.decisions is not None:
            row.update(self._protocol())
        else:
            row.update(dict.fromkeys(_PROTOCOL_KEYS))
        if self.health is not None:
            status, latency_ms, _ = self.health.latest()
            row.update(llm_status=status, llm_latency_ms=latency_ms)
        else:
            row.update(llm_status=None, llm_latency_ms=None)
        row.update(log_row)
        for name, spec in self.probes.items():
            row[f"probe_{name}"] = self._metric(f"probe_{name}", ("v",), lambda: {"v": self._probe(name, spec)})["v"]
        row.update(self._metric("harness", ("harness_rss_bytes", "harness_cpu_pct"), lambda: {
            "harness_rss_bytes": (me := self._me.read_one(os.getpid(), fds=False))["rss_bytes"], "harness_cpu_pct": me["cpu_pct"]}))
        for k in _INT_COLUMNS & row.keys():
            v = row[k]
            if isinstance(v, float) and v == v and abs(v) != float("inf"):
                row[k] = int(round(v))
        row["bytes_read"] = self._bytes_read() - bytes_before
        row["sample_cost_ms"] = (time.monotonic() - start) * 1000.0
        if self._names_of is not self.schema:  # iterating a pyarrow schema builds Field objects
            self._names_of, self._names = self.schema, tuple(self.schema.names)
        return {name: row.get(name) for name in self._names}

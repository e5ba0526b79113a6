"""The world the sampler benchmark watches: a dummy daemon, its project, its logs, the shell monitor.

A :class:`Project` is a watcher-v2 project folder with a dummy daemon (a Python loop that
writes the decision log and moves requests through the queue, holding a few file handles)
and a log with old history; :class:`Log` appends a known mix of lines so error counts can
be checked exactly. :class:`World` holds what projects share (the LLM stub, the shell
monitor of the soak plan, section 3) and stops every process it started.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, children_cpu_s

MARKER = "soaklib-bench-dummy-watcher"
LOG_NAME = "logs/watcher_agent.log"  # where the plan's monitor looks

DUMMY = r"""
import json, os, sys, time
d = sys.argv[1]
held = [open(os.path.join(d, "watcher_decisions.jsonl"), "rb") for _ in range(4)]
n = 0
while True:
    n += 1
    with open(os.path.join(d, "watcher_decisions.jsonl"), "a") as fh:
        fh.write(json.dumps({"timestamp": time.time(), "run_id": f"r{n}", "dispatch_type": "selfplay",
                             "status": "COMPLETED", "details": {"request_path": f"req_{n:06d}.json"}}) + "\n")
    q = os.path.join(d, "watcher_requests")
    with open(os.path.join(q, f"req_{n:06d}.json"), "w") as fh:
        fh.write('{"request_type": "selfplay_retrain", "episodes": 3}')
    if n > 2:
        old = f"req_{n - 2:06d}.json"
        os.replace(os.path.join(q, old), os.path.join(q, "archive", "COMPLETED_20260101_000000_" + old))
    if n > 52:  # the archive stays at 50 files: a steady state, so the cost does not drift during the run
        os.unlink(os.path.join(q, "archive", f"COMPLETED_20260101_000000_req_{n - 52:06d}.json"))
    time.sleep(1.0)
"""

SHELL = r"""#!/bin/bash
# soak_monitor.sh of the soak plan (section 3): start-up, then the loop body ITERATIONS times
# without the sleep. Only PROJECT, the pgrep pattern, the df path and the health URL differ.
INTERVAL=30
LOGFILE="logs/soak_monitor_bench.log"
PROJECT="$BENCH_PROJECT"
mkdir -p "$PROJECT/logs"
echo "=== SOAK MONITOR STARTED $(date) ===" | tee "$LOGFILE"
echo "Interval: ${INTERVAL}s | Log: $LOGFILE"
echo ""
for ((iteration = 0; iteration < ITERATIONS; iteration++)); do
    TS=$(date '+%Y-%m-%d %H:%M:%S')
    echo "--- $TS ---" >> "$LOGFILE"
    WATCHER_PID=$(pgrep -f "$BENCH_PATTERN" | head -1)
    if [ -n "$WATCHER_PID" ]; then
        RSS_KB=$(ps -o rss= -p "$WATCHER_PID" 2>/dev/null)
        RSS_MB=$((RSS_KB / 1024))
        echo "  WATCHER RSS: ${RSS_MB} MB (PID $WATCHER_PID)" | tee -a "$LOGFILE"
    else
        echo "  WATCHER: not running" | tee -a "$LOGFILE"
    fi
    VRAM=$(nvidia-smi --query-gpu=memory.used,memory.total --format=csv,noheader,nounits 2>/dev/null)
    if [ -n "$VRAM" ]; then
        echo "  GPU VRAM: $VRAM" | tee -a "$LOGFILE"
    fi
    if [ -n "$WATCHER_PID" ]; then
        FD_COUNT=$(ls /proc/$WATCHER_PID/fd 2>/dev/null | wc -l)
        echo "  File descriptors: $FD_COUNT" | tee -a "$LOGFILE"
    fi
    DISK_AVAIL=$(df -h "$PROJECT" --output=avail | tail -1 | tr -d ' ')
    echo "  Disk available: $DISK_AVAIL" | tee -a "$LOGFILE"
    PENDING=$(ls "$PROJECT/watcher_requests/"*.json 2>/dev/null | grep -v archive | wc -l)
    ARCHIVED=$(ls "$PROJECT/watcher_requests/archive/"*.json 2>/dev/null | wc -l)
    echo "  Requests pending: $PENDING | archived: $ARCHIVED" | tee -a "$LOGFILE"
    DECISIONS=$(wc -l < "$PROJECT/watcher_decisions.jsonl" 2>/dev/null || echo 0)
    echo "  Decisions logged: $DECISIONS" | tee -a "$LOGFILE"
    LLM_UP=$(curl -s -o /dev/null -w "%{http_code}" "$BENCH_HEALTH_URL" 2>/dev/null)
    echo "  LLM health: HTTP $LLM_UP" | tee -a "$LOGFILE"
    RECENT_ERRORS=$(tail -50 "$PROJECT/logs/watcher_agent.log" 2>/dev/null | grep -ci "error\|exception\|traceback")
    echo "  Recent errors in log: $RECENT_ERRORS" | tee -a "$LOGFILE"
    echo "" | tee -a "$LOGFILE"
done
"""

INFO = "2026-02-03 10:{m:02d}:{s:02d},{ms:03d} [INFO] cycle {n} complete: 0 requests pending, draws 5000, policy ok\n"
WARN = "2026-02-03 10:{m:02d}:{s:02d},{ms:03d} [WARNING] LLM slow to answer ({n} ms), retrying once\n"
ERROR = "2026-02-03 10:{m:02d}:{s:02d},{ms:03d} [ERROR] dispatch {n} failed: selfplay returned rc 1\n"


# --------------------------------------------------------------------------- the world


class Log:
    """A log file of the daemon: old history first, then known lines appended during the soak."""

    def __init__(self, path: Path, seed: int | str) -> None:
        self.path = path
        self.lines = 0  # lines appended since ``make``
        self.rng = random.Random(seed)

    def make(self, size_bytes: int) -> None:
        """``size_bytes`` of old history (INFO lines, a few errors) written before the soak."""
        block = "".join(
            (ERROR if i % 500 == 0 else INFO).format(m=i % 60, s=i % 60, ms=i % 1000, n=i) for i in range(10_000)
        ).encode()
        with open(self.path, "wb") as fh:
            written = 0
            while written < size_bytes:
                chunk = block[: size_bytes - written]
                fh.write(chunk)
                written += len(chunk)
            if not chunk.endswith(b"\n"):
                fh.write(b"\n")
        self.lines = 0

    def append(self, n_lines: int, n_errors: int) -> list[int]:
        """Append ``n_lines`` lines, ``n_errors`` of them errors at random places; their line numbers."""
        at = set(self.rng.sample(range(n_lines), n_errors))
        out, errors = [], []
        for i in range(n_lines):
            k = self.lines + i
            fmt = ERROR if i in at else WARN if k % 17 == 0 else INFO
            out.append(fmt.format(m=k // 60 % 60, s=k % 60, ms=k % 1000, n=k))
            if i in at:
                errors.append(k)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write("".join(out))
        self.lines += n_lines
        return errors


class World:
    """What every project shares: a scratch folder, the LLM stub and the monitor script."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="soak-bench-sampler-"))
        self.script = self.dir / "soak_monitor.sh"
        self.script.write_text(SHELL)
        self.procs: list[subprocess.Popen[bytes]] = []
        port_file = self.dir / "llm.port"
        self.start([sys.executable, "-m", "soaklib.sim.llm_server", "--port", "0", "--port-file", str(port_file)])
        deadline = time.monotonic() + 15
        while not port_file.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not port_file.exists():
            raise RuntimeError("the LLM stub did not start within 15 s")
        self.health_url = f"http://127.0.0.1:{port_file.read_text().strip()}/health"

    def start(self, argv: list[str]) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(p)
        return p

    def close(self) -> None:
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


class Project:
    """A watcher-v2 project folder with its dummy daemon and a log of ``size_bytes`` history."""

    def __init__(self, world: World, size_bytes: int) -> None:
        self.world, self.size_bytes = world, size_bytes
        self.name = f"{size_bytes >> 20}mb"
        self.dir = world.dir / self.name
        for sub in ("logs", "watcher_requests/archive", "policy_history", "telemetry"):
            (self.dir / sub).mkdir(parents=True)
        (self.dir / "watcher_decisions.jsonl").write_text("")
        (self.dir / "lottery_history.json").write_text(json.dumps({"draws": [[1, 2, 3]] * 5000}))
        (self.dir / "telemetry/learning_health_latest.json").write_text('{"total_models": 3, "hit_rate": 0.4}')
        (self.dir / "policy_history/candidate_1.json").write_text("{}")
        self.marker = f"{MARKER}-{self.name}"  # what the shell monitor's pgrep looks for
        self.dummy = world.start([sys.executable, "-c", DUMMY, str(self.dir), self.marker])
        self.log = Log(self.dir / LOG_NAME, self.name)  # the log the shell monitor reads
        self.log.make(size_bytes)

    @property
    def pid(self) -> int:
        return self.dummy.pid

    def run_shell(self, iterations: int) -> tuple[float, str]:
        """CPU seconds of bash and all it forks for ``iterations`` loop bodies, and its stdout."""
        env = {**os.environ, "ITERATIONS": str(iterations), "BENCH_PROJECT": str(self.dir),
               "BENCH_PATTERN": self.marker, "BENCH_HEALTH_URL": self.world.health_url}
        before = children_cpu_s()
        done = subprocess.run(["bash", str(self.world.script)], cwd=self.dir, env=env, capture_output=True,
                              text=True, timeout=120 + 5 * iterations, check=True)
        return children_cpu_s() - before, done.stdout

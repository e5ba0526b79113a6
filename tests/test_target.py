"""Target: start / attach / halt with real processes; nothing may be left behind."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from soaklib.errors import ParameterError, TargetError
from soaklib.proc.find import find_matching
from soaklib.proc.target import Target

PY = sys.executable

# Ignores SIGTERM (unless argv[2] == "obey"), starts a grandchild that does the same,
# then writes the grandchild's pid to argv[1].
STUBBORN = """
import signal, subprocess, sys, time
obey = sys.argv[2:] == ["obey"]
if not obey:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
g = subprocess.Popen([sys.executable, "-c",
    "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    if not obey else "import time; time.sleep(60)"])
time.sleep(0.2)
open(sys.argv[1], "w").write(f"{g.pid}")
time.sleep(60)
"""

# Exits on SIGTERM but leaves an orphan (re-parented to init) that ignores SIGTERM.
ORPHANER = """
import subprocess, sys, time
mid = subprocess.Popen([sys.executable, "-c",
    "import subprocess,sys; g = subprocess.Popen([sys.executable, '-c', "
    "'import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)']); "
    "print(g.pid)"], stdout=subprocess.PIPE, text=True)
gpid = int(mid.stdout.readline())
mid.wait()
time.sleep(0.2)
open(sys.argv[1], "w").write(f"{gpid}")
time.sleep(60)
"""

# Exits when the flag file argv[1] appears.
FLAG_WAITER = """
import os, sys, time
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
"""


def wait_file(path: Path, timeout_s: float = 10.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.02)
    raise AssertionError(f"{path} never written")


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_start_logs_env_and_reaps(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "target.log"
    log.parent.mkdir()
    log.write_text("earlier\n")
    code = "import os,sys; print('out', os.environ['SOAK_X']); print('err', file=sys.stderr); sys.exit(3)"
    with Target.start([PY, "-c", code], cwd=tmp_path, env={"SOAK_X": "42"}, log_path=log) as t:
        assert t.started and t.pid > 0
        deadline = time.monotonic() + 10
        while t.is_running() and time.monotonic() < deadline:
            time.sleep(0.02)
        info = t.poll()
        assert info is not None and info.returncode == 3 and info.signal is None
        assert not t.is_running() and t.tree() == []
        assert gone(t.pid)  # reaped, not a zombie
    text = log.read_text()
    assert text.startswith("earlier\n") and "out 42" in text and "err" in text


def test_missing_executable_cwd_and_permissions(tmp_path: Path) -> None:
    with pytest.raises(TargetError) as e:
        Target.start(["no-such-program-xyz", "--daemon"])
    assert e.value.exit_code == 3 and "no-such-program-xyz" in str(e.value)
    with pytest.raises(TargetError, match="does not exist"):
        Target.start([str(tmp_path / "missing.sh")])
    with pytest.raises(TargetError, match="working folder"):
        Target.start([PY, "-c", "pass"], cwd=tmp_path / "nowhere")
    script = tmp_path / "plain.sh"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(TargetError, match="not executable"):
        Target.start([str(script)])
    with pytest.raises(ParameterError):
        Target.start([])


def test_halt_by_signal_measures_halt_s(tmp_path: Path) -> None:
    with Target.start([PY, "-c", "import time; time.sleep(60)"]) as t:
        r = t.halt("signal", timeout_s=10)
    assert r.exited and not r.forced and r.error is None
    assert r.halt_s is not None and r.halt_s < 1.0
    assert r.returncode == -15
    assert r.to_dict()["requested_at"].endswith("+00:00")


def test_halt_by_flag_and_by_command(tmp_path: Path) -> None:
    flag = tmp_path / "watcher_halt.flag"
    with Target.start([PY, "-c", FLAG_WAITER, str(flag)]) as t:
        time.sleep(0.1)
        r = t.halt("flag", flag="watcher_halt.flag", project_dir=tmp_path, timeout_s=10)
    assert r.exited and r.returncode == 0 and r.halt_s < 1.0 and flag.exists()
    with Target.start([PY, "-c", "import time; time.sleep(60)"]) as t:
        stop_cmd = [PY, "-c", f"import os; os.kill({t.pid}, 15)"]
        r = t.halt("command", command=stop_cmd, project_dir=tmp_path, timeout_s=10)
    assert r.exited and r.error is None and r.returncode == -15


def test_failing_halt_command_is_recorded_and_tree_killed(tmp_path: Path) -> None:
    with Target.start([PY, "-c", "import time; time.sleep(60)"]) as t:
        r = t.halt("command", command=[PY, "-c", "import sys; sys.exit('no daemon to halt')"],
                   timeout_s=0.5, grace_s=1)
        assert not t.is_running()
    assert r.forced and not r.exited and r.halt_s is None
    assert "exited 1" in r.error and "no daemon to halt" in r.error and "terminated" in r.error


def test_tree_kill_of_processes_ignoring_sigterm(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    with Target.start([PY, "-c", STUBBORN, str(pidfile)]) as t:
        grandchild = int(wait_file(pidfile))
        assert {p.pid for p in t.tree()} >= {t.pid, grandchild}
        r = t.halt("signal", timeout_s=0.3, grace_s=0.3)
        assert r.forced and not r.exited and r.returncode == -9
        assert gone(t.pid) and gone(grandchild)
        assert t.terminate_tree() == []  # idempotent


def test_orphaned_grandchild_is_found_by_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    t = Target.start([PY, "-c", ORPHANER, str(pidfile)])
    try:
        orphan = int(wait_file(pidfile))
        assert orphan not in {p.pid for p in t.tree()}  # re-parented: no longer a descendant
        r = t.stop(timeout_s=5)
        assert r.exited and not r.forced  # the root obeyed SIGTERM ...
        assert not gone(orphan)  # ... and left its orphan behind
        killed = t.terminate_tree(grace_s=0.3)
        assert orphan in killed and gone(orphan)
    finally:
        t.terminate_tree(grace_s=0.1)


def test_context_manager_terminates_on_error(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    with pytest.raises(RuntimeError), Target.start([PY, "-c", STUBBORN, str(pidfile), "obey"]) as t:
        grandchild = int(wait_file(pidfile))
        raise RuntimeError("harness failed")
    assert gone(t.pid) and gone(grandchild)


def test_attach_by_match_and_pid(procs: list[subprocess.Popen]) -> None:
    marker = f"soak-marker-{uuid.uuid4().hex}"
    p = subprocess.Popen([PY, "-c", "import time; time.sleep(60)", marker], start_new_session=True)
    procs.append(p)
    deadline = time.monotonic() + 10
    while not find_matching(marker) and time.monotonic() < deadline:
        time.sleep(0.02)
    t = Target.attach(match=marker)
    assert t.pid == p.pid and not t.started and t.is_running()
    assert marker in " ".join(t.argv)
    assert Target.attach(pid=p.pid).pid == p.pid
    r = t.halt("signal", timeout_s=10)
    assert r.exited and r.returncode is None and r.halt_s < 1.0  # not our child: no status
    assert t.poll() is not None and t.poll().returncode is None


def test_attach_errors_list_candidates(procs: list[subprocess.Popen]) -> None:
    marker = f"soak-twin-{uuid.uuid4().hex}"
    for _ in range(2):
        procs.append(subprocess.Popen([PY, "-c", "import time; time.sleep(60)", marker], start_new_session=True))
    deadline = time.monotonic() + 10
    while len(find_matching(marker)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    with pytest.raises(TargetError) as e:
        Target.attach(match=marker)
    assert "2 processes match" in str(e.value) and sorted(e.value.candidates) == sorted(p.pid for p in procs)
    with pytest.raises(TargetError, match="no process matches"):
        Target.attach(match=f"absent-{uuid.uuid4().hex}")
    with pytest.raises(TargetError, match="no process with pid"):
        Target.attach(pid=2**22 + 12345)
    with pytest.raises(TargetError, match="harness"):
        Target.attach(pid=os.getpid())
    with pytest.raises(ParameterError):
        Target.attach(match="([unclosed")
    assert os.getpid() not in {q.pid for q in find_matching("pytest")}


def test_pause_then_stop(tmp_path: Path) -> None:
    flag = tmp_path / "agent_halt"
    with Target.start([PY, "-c", "import time; time.sleep(60)"]) as t:
        r = t.halt("flag", flag=str(flag), timeout_s=5, wait=False)
        assert not r.exited and not r.forced and r.halt_s is None and flag.exists()
        assert t.is_running()
        s = t.stop(timeout_s=5)
    assert s.exited and s.halt_s < 1.0


def test_halt_of_an_exited_target_says_so() -> None:
    with Target.start([PY, "-c", "pass"]) as t:
        deadline = time.monotonic() + 10
        while t.is_running() and time.monotonic() < deadline:
            time.sleep(0.02)
        r = t.halt("signal", timeout_s=1)
    assert r.exited and r.halt_s is None and r.returncode == 0 and "already exited" in r.error

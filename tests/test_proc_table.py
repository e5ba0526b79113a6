"""The /proc readers behind the process tree: one stat read per process, only new processes read."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from soaklib.proc.tree import ParentTable, ProcessTree, proc_fds, proc_stat, proc_statm

pytestmark = pytest.mark.skipif(not ParentTable.supported(), reason="needs Linux /proc")

# A parent that starts a middle process (which starts a grandchild) for each line on stdin,
# and prints "pids <middle> <grandchild>"; it never reaps, so a killed middle stays a zombie.
TREE = r"""
import subprocess, sys
kids = []
for _ in sys.stdin:
    m = subprocess.Popen([sys.executable, "-c",
        "import subprocess, sys, time\n"
        "g = subprocess.Popen(['sleep', '60'])\n"
        "print(g.pid, flush=True)\n"
        "time.sleep(60)"], stdout=subprocess.PIPE)
    kids.append(m)
    print("pids", m.pid, int(m.stdout.readline()), flush=True)
"""


def _spawn(p: subprocess.Popen) -> tuple[int, int]:
    p.stdin.write(b"go\n")
    p.stdin.flush()
    _, middle, grandchild = p.stdout.readline().split()
    return int(middle), int(grandchild)


def test_proc_stat_and_fds_agree_with_psutil(procs):
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    procs.append(p)
    time.sleep(0.2)  # past interpreter start-up: memory settles
    st, ref = proc_stat(p.pid), psutil.Process(p.pid)
    assert st is not None and st.ppid == os.getpid() and st.state in "SR"
    assert st.threads == ref.num_threads() and st.cpu_s >= 0
    assert st.start_ticks == proc_stat(p.pid).start_ticks > 0
    assert proc_statm(p.pid) == (ref.memory_info().vms, ref.memory_info().rss)
    assert proc_fds(p.pid) == ref.num_fds()
    p.kill()
    p.wait(timeout=10)
    assert proc_stat(p.pid) is None and proc_statm(p.pid) is None and proc_fds(p.pid) is None


def test_parent_table_finds_new_descendants_and_reads_only_new_processes(procs):
    p = subprocess.Popen([sys.executable, "-c", TREE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         start_new_session=True)
    procs.append(p)
    table = ParentTable()
    table.refresh()
    assert table.descendants(p.pid) == []
    middle, grandchild = _spawn(p)
    table.refresh()
    assert table.descendants(p.pid) == [middle, grandchild]
    reads = table.stat_reads
    table.refresh()
    assert table.stat_reads - reads < 20  # the machine's other new processes at most, not all of them
    assert table.descendants(p.pid) == [middle, grandchild]


def test_process_tree_drops_the_children_of_a_zombie_at_once_like_psutil(procs):
    p = subprocess.Popen([sys.executable, "-c", TREE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         start_new_session=True)
    procs.append(p)
    tree, reference = ProcessTree(), ProcessTree()
    reference._table = None  # the psutil path: children(recursive=True), a full scan
    middle, grandchild = _spawn(p)
    _spawn(p)
    time.sleep(0.3)  # past the children's start-up: their descriptors settle
    first, ref_first = tree.read(p.pid), reference.read(p.pid)
    assert first["children"] == ref_first["children"] == 4
    # two reads a moment apart: a descriptor opened or closed in between is not a disagreement
    assert abs(first["tree_num_fds"] - ref_first["tree_num_fds"]) <= 1
    assert abs(first["tree_rss_bytes"] - ref_first["tree_rss_bytes"]) <= 0.05 * ref_first["tree_rss_bytes"]
    os.kill(middle, signal.SIGKILL)  # a zombie now (never reaped); the grandchild is re-parented away
    deadline = time.monotonic() + 5
    while proc_stat(middle).state != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    while proc_stat(grandchild).ppid == middle and time.monotonic() < deadline:
        time.sleep(0.01)
    second, ref_second = tree.read(p.pid), reference.read(p.pid)
    assert second["children"] == ref_second["children"] == 2
    assert grandchild not in tree.pids and middle not in tree.pids
    os.kill(grandchild, signal.SIGKILL)

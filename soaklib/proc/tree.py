"""The process tree of the target, read cheaply: what a sample costs should not grow with the machine.

On Linux each process costs one read of ``/proc/<pid>/stat`` and of ``statm`` and a listing
of its ``fd`` folder, and descendants come from :class:`ParentTable`, which lists ``/proc``
and reads only the processes new since the last sample. A full scan (psutil's
``children(recursive=True)``, which reads the stat file of every process on the machine at
every call) is the fallback where there is no ``/proc``; USS always comes from psutil.
"""
from __future__ import annotations

import os
import time
from typing import Any, NamedTuple

import psutil

__all__ = [
    "TREE_KEYS", "ParentTable", "ProcStat", "ProcessTree", "children_files_supported", "proc_children", "proc_fds",
    "proc_stat", "proc_statm", "process_tree_metrics",
]

_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def children_files_supported(proc_dir: str = "/proc") -> bool:
    """True where the kernel has ``/proc/<pid>/task/<tid>/children`` (CONFIG_PROC_CHILDREN)."""
    me = os.getpid()
    return os.path.exists(f"{proc_dir}/{me}/task/{me}/children")


def proc_children(pid: int, proc_dir: str = "/proc") -> list[int]:
    """Direct children of ``pid`` from each of its threads' ``children`` file ([] when gone)."""
    try:
        tids = os.listdir(f"{proc_dir}/{pid}/task")
    except OSError:
        return []
    kids: list[int] = []
    for tid in tids:
        try:
            kids.extend(int(x) for x in _read_proc_file(f"{proc_dir}/{pid}/task/{tid}/children", 1 << 16).split())
        except (OSError, ValueError):
            continue
    return kids


class ProcStat(NamedTuple):
    """What one read of ``/proc/<pid>/stat`` tells a sample (Linux ``proc(5)``)."""

    state: str  # R S D Z T ...
    ppid: int
    cpu_s: float  # user + system, seconds
    threads: int
    start_ticks: int  # start time since boot: with the pid, identifies the process


def _read_proc_file(path: str, size: int = 4096) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, size)
    finally:
        os.close(fd)


def proc_stat(pid: int, proc_dir: str = "/proc") -> ProcStat | None:
    """Parse ``/proc/<pid>/stat`` (one read); None when the process is gone or unreadable.

    Memory is not taken from here: the kernel may report ``stat``'s RSS from approximate
    per-CPU counters (off by up to batch × CPUs pages); ``statm`` is exact (:func:`proc_statm`).
    """
    try:
        data = _read_proc_file(f"{proc_dir}/{pid}/stat")
        f = data[data.rindex(b")") + 2:].split()  # "pid (comm) S ppid ...": comm may hold spaces
        return ProcStat(f[0].decode(), int(f[1]), (int(f[11]) + int(f[12])) / _TICKS_PER_S, int(f[17]), int(f[19]))
    except (OSError, ValueError, IndexError):
        return None


def proc_statm(pid: int, proc_dir: str = "/proc") -> tuple[int, int] | None:
    """``(vms_bytes, rss_bytes)`` from ``/proc/<pid>/statm``, as psutil's ``memory_info``; None when gone."""
    try:
        size, resident = _read_proc_file(f"{proc_dir}/{pid}/statm").split()[:2]
        return int(size) * _PAGE_BYTES, int(resident) * _PAGE_BYTES
    except (OSError, ValueError):
        return None


def proc_fds(pid: int, proc_dir: str = "/proc") -> int | None:
    """Open file descriptors of ``pid`` (None when not permitted or gone)."""
    try:
        return len(os.listdir(f"{proc_dir}/{pid}/fd"))
    except OSError:
        return None


class ParentTable:
    """Parent of every process, from ``/proc``, reading only the processes new since the last call.

    A full scan (psutil's ``children(recursive=True)``) reads the stat file of every process
    on the machine at every sample: most of a sample's cost, growing with the machine's
    process count. Here each :meth:`refresh` lists ``/proc`` and reads the stat file of the
    new pids only. A known pid keeps its parent: a parent changes only when it exits
    (re-parenting), and then the children of the exited pid are read again (when it leaves
    ``/proc``, or at once when the caller finds it a zombie: :meth:`exited`). A full
    re-read every ``rescan_s`` covers a pid reused after a wrap-around. ``supported()`` is
    False where there is no ``/proc`` (the caller then falls back to psutil).
    """

    def __init__(self, proc_dir: str = "/proc", *, rescan_s: float = 600.0) -> None:
        self.proc_dir = proc_dir
        self.rescan_s = rescan_s
        self._parent: dict[int, int] = {}
        self._children: dict[int, set[int]] = {}
        self._scanned_at: float | None = None
        self._listing: set[str] = set()  # names in /proc at the last refresh
        self.stat_reads = 0  # stat files read so far (the cost this table saves)

    @staticmethod
    def supported(proc_dir: str = "/proc") -> bool:
        return os.path.isfile(os.path.join(proc_dir, "self", "stat"))

    def _set(self, pid: int, ppid: int) -> None:
        old = self._parent.get(pid)
        if old == ppid:
            return
        if old is not None:
            self._children.get(old, set()).discard(pid)
        self._parent[pid] = ppid
        self._children.setdefault(ppid, set()).add(pid)

    def _drop(self, pid: int) -> set[int]:
        """Forget ``pid``; returns its children (re-parented now: their parent must be re-read)."""
        old = self._parent.pop(pid, None)
        if old is not None:
            kids = self._children.get(old)
            if kids is not None:
                kids.discard(pid)
        return self._children.pop(pid, set())

    def refresh(self) -> None:
        """List ``/proc``; forget the pids that left, read the parent of the new ones."""
        try:
            names = set(os.listdir(self.proc_dir))
        except OSError:
            return
        now = time.monotonic()
        if self._scanned_at is None or now - self._scanned_at >= self.rescan_s:
            self._parent.clear()
            self._children.clear()
            self._listing = set()
            self._scanned_at = now
        orphans: set[int] = set()
        for name in self._listing - names:  # set arithmetic on names: no per-entry Python work
            if name.isdigit():
                orphans |= self._drop(int(name))
        todo = {int(n) for n in names - self._listing if n.isdigit()}
        self._listing = names
        for pid in todo | {o for o in orphans if str(o) in names}:
            self.stat_reads += 1
            st = proc_stat(pid, self.proc_dir)
            if st is not None:
                self._set(pid, st.ppid)

    def exited(self, pid: int) -> None:
        """``pid`` was found exited (a zombie or gone): its children were re-parented, re-read them."""
        for kid in self._children.pop(pid, set()):
            self.stat_reads += 1
            st = proc_stat(kid, self.proc_dir)
            if st is None:
                self._parent.pop(kid, None)
            else:
                self._set(kid, st.ppid)

    def descendants(self, pid: int) -> list[int]:
        """Children, grandchildren, ... of ``pid`` as of the last refresh, each once."""
        out: list[int] = []
        todo = [pid]
        seen = {pid}
        while todo:
            for kid in sorted(self._children.get(todo.pop(), ())):
                if kid not in seen:
                    seen.add(kid)
                    out.append(kid)
                    todo.append(kid)
        return out


TREE_KEYS = (
    "rss_bytes", "vms_bytes", "uss_bytes", "threads", "num_fds", "cpu_pct",
    "children", "tree_rss_bytes", "tree_num_fds", "tree_cpu_pct",
)
_GONE = (psutil.NoSuchProcess, psutil.ZombieProcess)


class ProcessTree:
    """Reads a process tree, keeping state between reads so CPU% covers each interval.

    On Linux: ``/proc/<pid>/stat``, ``statm`` and the ``fd`` listing per process, and the
    descendants from a :class:`ParentTable`; elsewhere psutil (``Process`` objects kept,
    ``children(recursive=True)``). USS (``uss=True``) always comes from psutil's
    ``memory_full_info``: slow, off by default.
    """

    def __init__(self, *, uss: bool = False) -> None:
        self.uss = uss
        self._procs: dict[int, psutil.Process] = {}
        self._table = ParentTable() if ParentTable.supported() else None
        # descendants from the children files: a few small reads instead of listing /proc
        self._children_files = self._table is not None and children_files_supported()
        self._cpu: dict[int, tuple[int, float, float]] = {}  # pid → (start_ticks, cpu_s, t_mono)
        self.pids: list[int] = []

    def _descendants(self, pid: int) -> list[int]:
        if self._table is None:
            return [k.pid for k in self._proc(pid)[0].children(recursive=True)]
        if self._children_files:
            out: list[int] = []
            todo, seen = [pid], {pid}
            while todo:
                for kid in sorted(proc_children(todo.pop())):
                    if kid not in seen:
                        seen.add(kid)
                        out.append(kid)
                        todo.append(kid)
            return out
        self._table.refresh()
        return self._table.descendants(pid)

    def _proc(self, pid: int) -> tuple[psutil.Process, bool]:
        p = self._procs.get(pid)
        if p is not None and p.is_running():
            return p, False
        p = psutil.Process(pid)
        self._procs[pid] = p
        return p, True

    def _read(self, pid: int, full: bool, fds: bool = True) -> dict[str, Any]:
        if self._table is None:
            return self._read_psutil(pid, full)
        st, mem = proc_stat(pid), proc_statm(pid)
        if st is None or mem is None:
            raise psutil.NoSuchProcess(pid)
        if st.state in ("Z", "X", "x"):
            raise psutil.ZombieProcess(pid)
        now = time.monotonic()
        prev = self._cpu.get(pid)
        self._cpu[pid] = (st.start_ticks, st.cpu_s, now)
        cpu = None  # like psutil's cpu_percent: % of one CPU since the last read, None at first
        if prev is not None and prev[0] == st.start_ticks and now > prev[2]:
            cpu = round((st.cpu_s - prev[1]) / (now - prev[2]) * 100.0, 1)
        out: dict[str, Any] = {"vms_bytes": mem[0], "rss_bytes": mem[1], "cpu_pct": cpu,
                               "num_fds": proc_fds(pid) if fds else None}
        if full:
            out["threads"], out["uss_bytes"] = st.threads, None
            if self.uss:
                try:
                    out["uss_bytes"] = psutil.Process(pid).memory_full_info().uss
                except (psutil.Error, OSError):
                    pass
        return out

    def _read_psutil(self, pid: int, full: bool) -> dict[str, Any]:
        p, fresh = self._proc(pid)
        out: dict[str, Any] = {}
        with p.oneshot():
            if p.status() == psutil.STATUS_ZOMBIE:
                raise psutil.ZombieProcess(p.pid)
            mem = p.memory_info()
            out["rss_bytes"], out["vms_bytes"] = mem.rss, mem.vms
            cpu = p.cpu_percent(None)
            out["cpu_pct"] = None if fresh else cpu
            try:
                out["num_fds"] = p.num_fds() if hasattr(p, "num_fds") else None
            except psutil.AccessDenied:
                out["num_fds"] = None
            if full:
                out["threads"] = p.num_threads()
                out["uss_bytes"] = None
                if self.uss:
                    try:
                        out["uss_bytes"] = p.memory_full_info().uss
                    except psutil.AccessDenied:
                        pass
        return out

    def read_one(self, pid: int, *, fds: bool = True) -> dict[str, Any]:
        """RSS, VMS, CPU% (and FDs) of one process, no descendants; raises ``psutil.NoSuchProcess``."""
        return self._read(pid, full=False, fds=fds)

    def read(self, root_pid: int | None) -> dict[str, Any]:
        """Metrics of the root and (summed) of its descendants; a vanished root = alive False."""
        row: dict[str, Any] = {"alive": False, **dict.fromkeys(TREE_KEYS)}
        self.pids = []
        if root_pid is None:
            return row
        try:
            row.update(self._read(root_pid, full=True))
            kids = self._descendants(root_pid)
        except _GONE:
            self._procs.pop(root_pid, None)
            self._cpu.pop(root_pid, None)
            return {"alive": False, **dict.fromkeys(TREE_KEYS)}
        except psutil.AccessDenied:  # another user's process: alive, metrics unreadable
            return {"alive": psutil.pid_exists(root_pid), **dict.fromkeys(TREE_KEYS)}
        row["alive"] = True
        readings: dict[int, dict[str, Any]] = {}
        exited: list[int] = []
        for kid in kids:
            try:
                readings[kid] = self._read(kid, full=False)
            except _GONE:
                exited.append(kid)
            except psutil.AccessDenied:
                continue
        if exited and self._table is not None:  # their children were re-parented away: walk again
            for pid in exited:
                self._table.exited(pid)
            still = set(self._descendants(root_pid) if self._children_files else self._table.descendants(root_pid))
            readings = {pid: m for pid, m in readings.items() if pid in still}
        pids, rss, fds, cpus = [root_pid], row["rss_bytes"], row["num_fds"], [row["cpu_pct"]]
        for kid, m in readings.items():
            pids.append(kid)
            rss += m["rss_bytes"]
            fds = None if fds is None or m["num_fds"] is None else fds + m["num_fds"]
            cpus.append(m["cpu_pct"])
        known = [c for c in cpus if c is not None]
        row.update(children=len(pids) - 1, tree_rss_bytes=rss, tree_num_fds=fds, tree_cpu_pct=sum(known) if known else None)
        self.pids = pids
        for cache in (self._procs, self._cpu):
            for pid in cache.keys() - set(pids):
                del cache[pid]
        return row


_DEFAULT_TREE = ProcessTree()


def process_tree_metrics(root_pid: int | None, *, uss: bool = False, tree: ProcessTree | None = None) -> dict[str, Any]:
    """``alive`` + RSS/VMS/(USS)/threads/FDs/CPU% of ``root_pid`` and tree totals; never raises."""
    if tree is None:
        tree = _DEFAULT_TREE if not uss else ProcessTree(uss=True)
    return tree.read(root_pid)

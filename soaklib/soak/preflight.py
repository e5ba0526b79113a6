"""The soak preflight: what the soak plan's section 2 checks by hand, before a soak starts.

Every check runs and becomes a :class:`Finding`; the soak refuses to start with one list of
everything to fix (``TargetError``, exit 3), or, with ``force``, records the findings and
goes on. Checks: no halt file of the profile present, no stale ``*.lock``, free disk above
a bound, the run's own projected disk use leaving that bound free, the LLM health endpoint
answering, the pipeline artifacts present, and no other instance of the target already
running. Warnings (``warn``, never a refusal): for a WATCHER daemon (not the reference
one), free space on ``/`` under its KillSwitch threshold or memory use near it.
"""
from __future__ import annotations

import math
import os
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from soaklib.errors import TargetError
from soaklib.observe.health import HealthProbe
from soaklib.params import SoakParams
from soaklib.proc.find import find_matching

MIB = 2**20
#: the run's own disk use (bench/RESULTS.md, store): a part file's fixed cost and a compacted sample
PART_FILE_BYTES = 13_400
SAMPLE_BYTES = 120
EVENTS_BYTES = 256 * 1024  # events, observations, manifest, signoff
RESERVE_BYTES = 512 * 1024  # the run folder's .disk-reserve
#: the WATCHER daemon's KillSwitch (checked every cycle): it halts itself below this free space
#: on / or at this memory use (DESIGN.md section 6)
KILLSWITCH_MIN_FREE_BYTES = 10 * 2**30
KILLSWITCH_MEMORY_PCT = 95.0
MEMORY_WARN_PCT = 90.0  # "near" the KillSwitch: warn from here

MAX_LOCK_SCAN_ENTRIES = 50_000  # a huge project folder is scanned this far, then noted
SKIP_DIRS = {".git", "node_modules", "__pycache__", ".venv", "venv"}


@dataclass(frozen=True)
class Finding:
    """One preflight check: ``ok`` False means the soak must not start without ``force``."""

    check: str
    ok: bool
    message: str
    fix: str = ""
    warn: bool = False  # ok, but worth saying before a long soak (shown, noted in the signoff)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _halt_files(paths: Iterable[Path]) -> list[Finding]:
    out = []
    for p in paths:
        if p.exists():
            out.append(Finding("halt_file", False, f"halt file {p} exists: the daemon would halt at once",
                               f"remove it (rm {p})"))
        else:
            out.append(Finding("halt_file", True, f"no halt file at {p}"))
    return out


def stale_locks(folder: Path, older_than_min: float, *, now: float | None = None) -> tuple[list[Path], bool]:
    """``*.lock`` files under ``folder`` older than ``older_than_min`` minutes; (files, scan_complete)."""
    now = time.time() if now is None else now
    found: list[Path] = []
    seen = 0
    stack = [folder]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for e in it:
                    seen += 1
                    if seen > MAX_LOCK_SCAN_ENTRIES:
                        return found, False
                    try:
                        if e.is_dir(follow_symlinks=False):
                            if e.name not in SKIP_DIRS:
                                stack.append(Path(e.path))
                        elif e.name.endswith(".lock") and now - e.stat(follow_symlinks=False).st_mtime > older_than_min * 60:
                            found.append(Path(e.path))
                    except OSError:
                        continue
        except OSError:
            continue
    return sorted(found), True


def _locks(project_dir: Path, older_than_min: float) -> Finding:
    found, complete = stale_locks(project_dir, older_than_min)
    if found:
        names = ", ".join(str(p) for p in found[:10]) + (f" (+{len(found) - 10} more)" if len(found) > 10 else "")
        return Finding("stale_locks", False, f"{len(found)} lock file(s) older than {older_than_min:g} min: {names}",
                       "make sure no process holds them, then remove them")
    note = "" if complete else f" (scan stopped after {MAX_LOCK_SCAN_ENTRIES} entries)"
    return Finding("stale_locks", True, f"no *.lock older than {older_than_min:g} min{note}")


def _disk(folder: Path, min_free_mb: float) -> Finding:
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free_mb = shutil.disk_usage(probe).free / 2**20
    if free_mb < min_free_mb:
        return Finding("disk_free", False, f"{free_mb:.0f} MiB free under {probe}, below the {min_free_mb:g} MiB bound",
                       "free disk space (old logs, archives) or lower preflight.min_free_disk_mb")
    return Finding("disk_free", True, f"{free_mb:.0f} MiB free under {probe}")


def _existing(folder: Path) -> Path:
    probe = folder.expanduser().absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def projected_use_bytes(params: SoakParams) -> int:
    """The most this run writes under its output folder: part files (each flush's fixed cost
    plus its samples), the compacted copy written beside them at the end, the bounded
    ``target.log`` at its limit, events and the signoff, and the run's disk reserve."""
    s = params.sampling
    samples = math.ceil(params.duration_s / s.interval_s) + 2
    parts = math.ceil(params.duration_s / max(s.flush_s, s.interval_s)) + 2
    return int(parts * PART_FILE_BYTES + 2 * samples * SAMPLE_BYTES + s.target_log_max_mb * MIB
               + EVENTS_BYTES + RESERVE_BYTES)


def _projection(params: SoakParams, min_free_mb: float) -> Finding:
    probe = _existing(Path(params.output_dir))
    free = shutil.disk_usage(probe).free
    need = projected_use_bytes(params)
    what = (f"this run writes up to {need / MIB:.1f} MiB under {probe} "
            f"({params.duration_s:g} s at one sample per {params.sampling.interval_s:g} s, target.log up to "
            f"{params.sampling.target_log_max_mb:g} MiB)")
    if (free - need) / MIB < min_free_mb:
        return Finding("disk_projection", False, f"{what}: the {free / MIB:.1f} MiB free would fall below the "
                       f"{min_free_mb:g} MiB margin",
                       "free disk space, or shorten duration_s, raise sampling.interval_s / sampling.flush_s, "
                       "lower sampling.target_log_max_mb or preflight.min_free_disk_mb")
    return Finding("disk_projection", True, f"{what}; {free / MIB:.0f} MiB free")


def killswitch(root: Path = Path("/"), memory_pct: float | None = None) -> list[Finding]:
    """Warnings for a WATCHER daemon that halts itself (its KillSwitch): free space on ``root``
    under 10 GB, memory use near 95% (``memory_pct`` None: read now)."""
    out = []
    free = shutil.disk_usage(root).free
    if free < KILLSWITCH_MIN_FREE_BYTES:
        out.append(Finding("killswitch_disk", True, f"{free / 2**30:.1f} GB free on {root}: the WATCHER daemon halts "
                           f"itself below {KILLSWITCH_MIN_FREE_BYTES / 2**30:.0f} GB (its KillSwitch), which a soak "
                           "reads as a stuck queue", f"free space on {root} before a long soak", warn=True))
    pct = psutil.virtual_memory().percent if memory_pct is None else memory_pct
    if pct >= MEMORY_WARN_PCT:
        out.append(Finding("killswitch_memory", True, f"memory use is {pct:.0f}%: the WATCHER daemon halts itself at "
                           f"{KILLSWITCH_MEMORY_PCT:g}% (its KillSwitch)", "stop what else uses the memory",
                           warn=True))
    return out


def _llm(url: str, timeout_s: float) -> Finding:
    status, latency_ms, _ = HealthProbe(url, timeout_s=timeout_s, autostart=False).check_now()
    if 200 <= status < 400:
        return Finding("llm_health", True, f"LLM health {url} answered HTTP {status} in {latency_ms:.0f} ms")
    what = "does not answer" if status == 0 else f"answered HTTP {status}"
    return Finding("llm_health", False, f"LLM health {url} {what}",
                   "start the LLM server (llm_services/start_llm_servers.sh), or --force to soak with it "
                   "recorded as down")


def _artifacts(project_dir: Path, names: Iterable[str]) -> list[Finding]:
    out = []
    for name in names:
        p = Path(name) if os.path.isabs(name) else project_dir / name
        if p.is_file():
            out.append(Finding("artifact", True, f"{name} present ({p.stat().st_size} bytes)"))
        else:
            out.append(Finding("artifact", False, f"pipeline artifact {name} is missing",
                               "run the pipeline steps that produce it first (plan 2.4)"))
    return out


def _other_instance(pattern: str, what: str) -> Finding:
    found = find_matching(pattern)
    if found:
        listing = "; ".join(f"{p.pid}: {' '.join(p.info.get('cmdline') or [])[:120]}" for p in found[:5])
        return Finding("other_instance", False, f"{len(found)} instance(s) of {what} already running ({listing})",
                       "stop them first (or attach to one with target.pid)")
    return Finding("other_instance", True, f"no other instance of {what} running")


def soak_preflight(
    params: SoakParams,
    project_dir: Path,
    *,
    halt_paths: Iterable[Path],
    instance_argv: list[str] | None,
    check_llm: bool,
    watcher_daemon: bool = False,
) -> list[Finding]:
    """Run every check; ``instance_argv`` is the command a second instance would show (None: skip);
    ``watcher_daemon``: the target is a WATCHER daemon with a KillSwitch (its warnings)."""
    pf = params.preflight
    findings: list[Finding] = []
    if not project_dir.is_dir():
        findings.append(Finding("project_dir", False, f"project folder {project_dir} does not exist",
                                "create it or fix project_dir"))
    else:
        findings += _halt_files(halt_paths)
        findings.append(_locks(project_dir, pf.stale_lock_min))
        findings += _artifacts(project_dir, pf.required_artifacts)
    findings.append(_disk(project_dir if project_dir.exists() else Path(params.output_dir), pf.min_free_disk_mb))
    findings.append(_projection(params, pf.min_free_disk_mb))
    if watcher_daemon:
        findings += killswitch()
    if check_llm and params.llm.health_url is not None:
        findings.append(_llm(params.llm.health_url, params.sampling.health_timeout_s))
    if instance_argv:
        findings.append(_other_instance(re.escape(" ".join(instance_argv)), " ".join(instance_argv)[:120]))
    return findings


def enforce(findings: list[Finding], force: bool) -> list[Finding]:
    """Raise ``TargetError`` (exit 3) listing every failed check, unless ``force``; returns the failures."""
    failed = [f for f in findings if not f.ok]
    if failed and not force:
        lines = "\n".join(f"  - {f.message}" + (f": {f.fix}" if f.fix else "") for f in failed)
        raise TargetError(
            f"soak preflight refused to start, {len(failed)} problem(s) to fix:\n{lines}\n"
            "Fix them, or pass --force (force: true) to record them and soak anyway.",
            findings=tuple(f.to_dict() for f in findings),
        )
    return failed

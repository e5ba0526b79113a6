"""The soak preflight: what the soak plan's section 2 checks by hand, before a soak starts.

Every check runs and becomes a :class:`Finding`; the soak refuses to start with one list of
everything to fix (``TargetError``, exit 3), or, with ``force``, records the findings and
goes on. Checks: no halt file of the profile present, no stale ``*.lock``, free disk above
a bound, the LLM health endpoint answering, the pipeline artifacts present, and no other
instance of the target already running.
"""
from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from soaklib.errors import TargetError
from soaklib.observe.health import HealthProbe
from soaklib.params import SoakParams
from soaklib.proc.find import find_matching

MAX_LOCK_SCAN_ENTRIES = 50_000  # a huge project folder is scanned this far, then noted
SKIP_DIRS = {".git", "node_modules", "__pycache__", ".venv", "venv"}


@dataclass(frozen=True)
class Finding:
    """One preflight check: ``ok`` False means the soak must not start without ``force``."""

    check: str
    ok: bool
    message: str
    fix: str = ""

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
) -> list[Finding]:
    """Run every check; ``instance_argv`` is the command a second instance would show (None: skip)."""
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
            findings=[f.to_dict() for f in findings],
        )
    return failed

"""Before a soak starts: its run plan, and the soak preflight of the plan's section 2.

``plan_run`` decides the run id and folders, the protocol profile and the target's argv
without starting anything. The soak preflight does what the soak plan's section 2 checks by hand.

Every check runs and becomes a :class:`Finding`; the soak refuses to start with one list of
everything to fix (``TargetError``, exit 3), or, with ``force``, records the findings and
goes on. Checks: no halt file of the profile present, no stale ``*.lock``, free disk above
a bound, the LLM health endpoint answering, the pipeline artifacts present, and no other
instance of the target already running.
"""
from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import psutil

from soaklib.errors import ParameterError, TargetError
from soaklib.params import SoakParams
from soaklib.observe.gpu import gpu_inventory
from soaklib.watcher.protocol import Profile, get_profile
from soaklib.observe.sampler import HealthProbe
from soaklib.proc.target import Target, find_matching
from soaklib.store import MANIFEST, run_dir_for, utc_stamp

REFERENCE_HALT_FILE = "agent_halt"  # project-local: the operator's /tmp/agent_halt is never touched
REFERENCE_MODULE = "soaklib.sim.watcher"
_HARNESS_FLAGS = {"project_dir", "daemon", "llm_url", "halt_file", "profile", "process_requests", "halt", "stop"}
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


# --------------------------------------------------------------------------- the run plan


def git_commit() -> str | None:
    """The commit of the soaklib checkout, when it is one."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment() -> dict[str, Any]:
    """What ran the soak: host, Python, package versions, commit, CPUs, GPU inventory."""
    import importlib.metadata as md

    versions = {}
    for pkg in ("soaklib", "pandas", "pyarrow", "scipy", "psutil", "nvidia-ml-py"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return {"host": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "packages": versions, "commit": git_commit(), "gpu": gpu_inventory()}


def knob_argv(sim: dict[str, Any]) -> list[str]:
    """``{"leak_mb_per_h": 3600, "ignore_halt": True}`` → ``--leak-mb-per-h 3600 --ignore-halt``."""
    from soaklib.sim.watcher import build_parser

    known = {a.dest: a for a in build_parser()._actions if a.option_strings}
    argv: list[str] = []
    for name, value in sim.items():
        key = name.replace("-", "_")
        if key not in known or key in _HARNESS_FLAGS or key == "help":
            allowed = sorted(k for k in known if k not in _HARNESS_FLAGS and k != "help")
            raise ParameterError(f"sim.{name}: unknown reference-daemon knob; allowed are {', '.join(allowed)}",
                                 key=f"sim.{name}", value=value)
        flag = known[key].option_strings[-1]
        if value is True:
            argv.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, (int, float, str)):
            argv += [flag, str(value)]
        else:
            raise ParameterError(f"sim.{name} = {value!r} is invalid: expected a number, a string or true",
                                 key=f"sim.{name}", value=value)
    return argv


@dataclass
class RunPlan:
    """Everything decided about a soak before any process starts (parameters already checked)."""

    run_id: str
    run_dir: Path
    project_dir: Path
    profile: Profile
    reference: bool
    start_stub: bool
    halt_paths: list[Path]


def plan_run(params: SoakParams) -> RunPlan:
    """Run id and folder, project folder, profile (a project-local halt file for the reference
    daemon), halt files; refuses an existing run folder, unknown knobs and bad criteria (exit 2)."""
    run_id = params.run_id or f"soak-{params.soak}-{utc_stamp()}"
    run_dir = run_dir_for(params.output_dir, run_id)
    if (run_dir / MANIFEST).exists():
        raise ParameterError(f"run folder {run_dir} already exists: choose another run id (--run-id)",
                             key="run_id", value=run_id)
    t = params.target
    attach = t.pid is not None or t.match is not None
    reference = t.command is None and not attach
    overrides = dict(params.profile_overrides)
    if reference and params.profile == "watcher-v2":
        overrides["halt_file"] = REFERENCE_HALT_FILE
    profile = get_profile(params.profile, overrides)
    if params.project_dir is not None:
        project_dir = Path(params.project_dir).expanduser().resolve()
    elif reference:
        project_dir = (run_dir / "project").resolve()
    elif attach:
        project_dir = Path(attached_cwd(t.pid, t.match))
    else:
        raise ParameterError("project_dir is required when target.command is set (the daemon's folder)",
                             key="project_dir")
    if params.sim and not reference:
        raise ParameterError("sim knobs apply to the reference daemon only: remove sim or target.command/pid/match",
                             key="sim")
    halt_paths = [profile.path(project_dir, "halt_file")]
    if t.halt.method == "flag" and t.halt.flag:
        flag = Path(t.halt.flag)
        halt_paths.append(flag if flag.is_absolute() else project_dir / flag)
    if reference:
        knob_argv(params.sim)  # unknown knobs are refused before anything starts
    from soaklib.analysis.criteria import apply_overrides
    from soaklib.report.signoff import soak_criteria

    apply_overrides(soak_criteria(params.soak), params.criteria)  # bad criteria: exit 2 before any work
    start_stub = (reference and params.llm.health_url is not None) or params.llm.start_stub
    return RunPlan(run_id, run_dir, project_dir, profile, reference, start_stub,
                 [p for p in dict.fromkeys(halt_paths) if p is not None])


def attached_cwd(pid: int | None, match: str | None) -> str:
    """The working folder of the process to attach to (its project folder by default)."""
    target = Target.attach(pid=pid, match=match)
    try:
        return psutil.Process(target.pid).cwd()
    except psutil.Error as e:
        raise TargetError(f"cannot read the working folder of pid {target.pid} ({e}): set project_dir",
                          pid=target.pid) from None


def target_argv(params: SoakParams, plan: RunPlan, llm_url: str | None) -> list[str]:
    """The target's argv: ``target.command``, or the reference daemon with its knobs."""
    if not plan.reference:
        return list(params.target.command or [])
    argv = [sys.executable, "-m", REFERENCE_MODULE, "--project-dir", str(plan.project_dir), "--daemon",
            "--profile", plan.profile.name, "--halt-file", str(plan.halt_paths[0])]
    if llm_url:
        argv += ["--llm-url", llm_url]
    return argv + knob_argv(params.sim)

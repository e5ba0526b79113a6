"""The run plan of a soak: everything decided before any process starts.

``plan_run`` decides the run id and folders, the protocol profile and the target's argv,
and refuses bad parameters (unknown soak, reference-daemon knobs or criteria: exit 2)
before anything starts.
"""
from __future__ import annotations

import re
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from soaklib.analysis.criteria import apply_overrides
from soaklib.errors import ParameterError, TargetError
from soaklib.params import SoakParams
from soaklib.parts import check_host
from soaklib.proc.target import Target
from soaklib.sim.watcher import knob_flags
from soaklib.soak import registry, system
from soaklib.store import MANIFEST, run_dir_for, utc_stamp
from soaklib.watcher.protocol import Profile, get_profile

REFERENCE_HALT_FILE = "agent_halt"  # project-local: the operator's /tmp/agent_halt is never touched
REFERENCE_MODULE = "soaklib.sim.watcher"
_HARNESS_FLAGS = {"project_dir", "daemon", "llm_url", "halt_file", "profile", "process_requests", "halt", "stop"}


def knob_argv(sim: dict[str, Any]) -> list[str]:
    """``{"leak_mb_per_h": 3600, "ignore_halt": True}`` → ``--leak-mb-per-h 3600 --ignore-halt``."""
    known = knob_flags()
    argv: list[str] = []
    for name, value in sim.items():
        key = name.replace("-", "_")
        if key not in known or key in _HARNESS_FLAGS or key == "help":
            allowed = sorted(k for k in known if k not in _HARNESS_FLAGS and k != "help")
            raise ParameterError(f"sim.{name}: unknown reference-daemon knob; allowed are {', '.join(allowed)}",
                                 key=f"sim.{name}", value=value)
        flag = known[key]
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
    host: str = field(default_factory=lambda: this_host())
    #: where samples/host={host}/ and events/host={host}/ go: the run folder, or a fleet's shared folder
    data_dir: Path | None = None

    @property
    def samples_dir(self) -> Path:
        """This host's partition of the run's samples."""
        return (self.data_dir or self.run_dir) / "samples" / f"host={self.host}"


def this_host() -> str:
    """This machine's name as a partition name (characters outside ``[A-Za-z0-9._-]`` become ``-``)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()).lstrip("._-")
    return name or "localhost"


def plan_run(params: SoakParams, data_dir: Path | None = None) -> RunPlan:
    """Run id and folder, project folder, profile (a project-local halt file for the reference
    daemon), halt files, host (``params.host`` or this machine's name) and where the samples go
    (``data_dir``: a fleet's shared folder; None = the run folder); refuses an existing run
    folder, a bad host name, unknown knobs and bad criteria (exit 2)."""
    host = check_host(params.host) if params.host is not None else this_host()
    run_id = params.run_id or f"soak-{params.soak}-{utc_stamp()}"
    run_dir = run_dir_for(params.output_dir, run_id)
    if (run_dir / MANIFEST).exists():
        raise ParameterError(f"run folder {run_dir} already exists: choose another run id (--run-id)",
                             key="run_id", value=run_id)
    t = params.target
    attach = t.pid is not None or t.match is not None
    reference = t.command is None and not attach
    if params.targets:  # several named processes: reference when every one is a reference program
        attach, reference = False, all(system.is_reference(p) for p in params.targets)
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
    if params.targets:
        system.check_targets(params)
        halt_paths += system.halt_paths(params, project_dir)
    apply_overrides(registry.get(params.soak).criteria(), params.criteria)  # bad criteria: exit 2 before any work
    start_stub = (reference and params.llm.health_url is not None) or params.llm.start_stub
    return RunPlan(run_id, run_dir, project_dir, profile, reference, start_stub,
                   [p for p in dict.fromkeys(halt_paths) if p is not None], host=host,
                   data_dir=Path(data_dir).resolve() if data_dir is not None else None)


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

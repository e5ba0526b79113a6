"""Parameter sets shared by the CLI, the notebooks and YAML files, validated up front.

Every error names the key, the value given and what is allowed, before any work starts.
Sources are applied in a fixed order: defaults → YAML file (``--params``) → ``--set``
overrides / flags. The same keys are the notebooks' papermill parameters.
"""
from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from soaklib.errors import ParameterError
from soaklib.paramfile import as_bool, from_dict, merge, parse_override, read_yaml, set_path, to_dict
from soaklib.store import check_run_id

__all__ = ["NOTEBOOK_KEYS", "PROVIDERS", "HaltParams", "InjectionParams", "LlmParams", "MultiProviderParams",
           "PreflightParams", "ProcessParams", "SamplingParams", "SoakParams", "TargetParams", "as_bool",
           "canonical_models", "from_dict", "help_of", "load_params", "merge", "param", "parse_override",
           "read_yaml", "set_path", "to_dict"]

T = TypeVar("T")


def param(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = dataclasses.MISSING) -> Any:
    """A parameter field with its help text: the one source of the CLI's option help, the
    notebooks' parameter comments and the documentation of the YAML keys."""
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


def help_of(cls: type, name: str) -> str:
    """The help text of parameter ``name`` of dataclass ``cls`` (dotted for nested fields)."""
    head, _, rest = name.partition(".")
    fld = {f.name: f for f in dataclasses.fields(cls)}[head]
    if rest:
        return help_of(typing.get_type_hints(cls)[head], rest)
    return str(fld.metadata.get("help", ""))

#: Keys a parameter file may hold for the notebooks only (ignored by the library's loaders).
NOTEBOOK_KEYS = frozenset({"runs_json", "run_dir", "fail_on_gate", "write_evidence", "write_signoff"})

PROVIDERS = ("opencode", "cc-glm", "gemini")
CANONICAL_MODEL_DEFAULTS = {
    "opencode": ("OPENCODE_MODEL", "zhipuai-coding-plan/glm-5"),
    "cc-glm": ("CC_GLM_MODEL", "glm-5"),
    "gemini": ("GEMINI_MODEL", "gemini-3-flash-preview"),
}


def canonical_models(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Canonical model per provider, from OPENCODE_MODEL / CC_GLM_MODEL / GEMINI_MODEL."""
    env = os.environ if env is None else env
    return {p: env.get(var) or default for p, (var, default) in CANONICAL_MODEL_DEFAULTS.items()}


# --------------------------------------------------------------------------- multi-provider


@dataclass
class MultiProviderParams:
    """Parameters of a multi-provider validation (``soak multi-provider``)."""

    run_id: str | None = param(None, 'plain name; None = soak-<UTC stamp>')
    rounds: int = param(2, 'consecutive rounds that must all be clean')
    parallel: int = param(6, 'jobs in flight at most')
    timeout_sec: float = param(300.0, 'per-job limit, seconds')
    providers: list[str] = param(factory=lambda: list(PROVIDERS), help='providers that run, comma-separated: opencode, cc-glm, gemini')
    jobs_per_provider: int = param(2, 'jobs per provider per round')
    max_retries: int = param(0, 'extra attempts for transient failures')
    dry_run: bool = param(False, 'True = the built-in simulator instead of a real dx-runner')
    scenario: str = param("clean", 'simulator scenario (dry runs only)')
    dx_runner: str | None = param(None, 'path of dx-runner; None = $DX_RUNNER, PATH, scripts/dx-runner')
    outcome_dir: str | None = param(None, 'where the runner writes <provider>/<id>.*; None = /tmp/dx-runner')
    worktree: str | None = param(None, 'None = a fresh git repo under /tmp/agents/<run_id>/repo')
    output_dir: str = param("outputs/multi-provider-soak", 'folder: where {run_id}.json/.md and {run_id}/jobs.parquet are written')
    no_op_is_success: bool = param(True, 'no_op_success (exit 0, no change) counts as success')
    preflight_timeout_s: float = param(120.0, 'a real preflight can take ~45 s')
    start_timeout_s: float = param(120.0, 'start reruns preflight')
    check_timeout_s: float = param(20.0, 'a check can take ~5 s (late finalize grace)')
    max_concurrent_starts: int = param(8, 'start calls in flight at most (each reruns preflight)')
    seed: int = param(0, 'simulator latency seed (dry runs only)')
    success_target: float = param(0.95, "per-job success the lane's confidence rows ask rounds for (Wilson 95% lower bound); the pass rule stays rounds")

    def validate(self) -> MultiProviderParams:
        if self.run_id is not None:
            check_run_id(self.run_id)
        for key in ("rounds", "parallel", "jobs_per_provider", "max_concurrent_starts"):
            _require(key, getattr(self, key), getattr(self, key) >= 1, "an integer >= 1")
        _require("max_retries", self.max_retries, self.max_retries >= 0, "an integer >= 0")
        _require("success_target", self.success_target, 0 < self.success_target < 1, "a fraction between 0 and 1")
        for key in ("timeout_sec", "preflight_timeout_s", "start_timeout_s", "check_timeout_s"):
            _require(key, getattr(self, key), getattr(self, key) > 0, "a number of seconds > 0")
        if not self.providers:
            raise ParameterError("providers is empty: name at least one of " + ",".join(PROVIDERS), key="providers")
        for p in self.providers:
            if p not in PROVIDERS:
                raise ParameterError(
                    f"unknown provider {p!r} in providers: allowed are {', '.join(PROVIDERS)}",
                    key="providers",
                    value=p,
                )
        if len(set(self.providers)) != len(self.providers):
            raise ParameterError(f"providers {self.providers!r} name a provider twice", key="providers")
        return self


# --------------------------------------------------------------------------- WATCHER soaks


@dataclass
class HaltParams:
    method: Literal["signal", "command", "flag"] = param("signal", 'how the soak asks the target to stop')
    command: list[str] | None = param(None, 'argv, for method: command')
    flag: str | None = param(None, 'path, for method: flag (relative = in project_dir)')
    timeout_s: float = param(30.0, 'seconds from halt request to exit before the tree is killed')
    normal_exit_codes: list[int] = param(factory=lambda: [0, -15], help="exit codes after a requested halt that are the daemon's normal stop (-15: ended by the SIGTERM itself); any other code FAILs the halt")


@dataclass
class TargetParams:
    command: list[str] | None = param(None, 'argv; None = the reference daemon')
    env: dict[str, str] = param(factory=dict, help="environment variables added to the target's")
    pid: int | None = param(None, 'attach instead of start')
    match: str | None = param(None, 'attach by command-line pattern (regex)')
    halt: HaltParams = param(factory=HaltParams, help='how the soak stops the target: method, command / flag, timeout_s')


@dataclass
class SamplingParams:
    interval_s: float = param(30.0, 'seconds between samples')
    flush_s: float = param(60.0, 'seconds between part-file flushes')
    disk_interval_s: float = param(10.0, 'seconds between walks of the watched folders (sizes change slowly)')
    health_interval_s: float = param(30.0, 'seconds between LLM health probes')
    health_timeout_s: float = param(2.0, 'seconds a health probe may take')
    error_regex: str = param(r"(?i)\b(error|exception)\b", 'lines counted as errors in the target log')
    traceback_regex: str = param(r"Traceback \(most recent call last\)", 'lines counted as tracebacks')
    watch_dirs: list[str] = param(factory=lambda: ["logs", "watcher_requests"], help='folders (relative to project_dir) whose bytes are sampled')
    target_log_max_mb: float = param(64.0, "MiB: the run folder's copy of the target's output (target.log) is rotated at this size, keeping its head and latest tail; errors and tracebacks are counted over everything the target wrote")


@dataclass
class LlmParams:
    health_url: str | None = param("http://localhost:8080/health", "URL of the daemon's LLM /health; null = the daemon has no LLM server (no probe, llm_reconnect SKIP)")
    start_stub: bool = param(False, 'start the loopback LLM stub for this soak (reference daemon)')
    outages: list[list[float]] = param(factory=list, help='stub outage windows [[start_s, end_s], ...]')


@dataclass
class InjectionParams:
    interval_s: float = param(120.0, 'seconds between synthetic draws')
    prng: str = param("java_lcg", 'PRNG of the synthetic draws (java_lcg)')
    seed: int = param(12345, 'the true seed the daemon should converge to')
    mod: int = param(1000, 'draw values are the PRNG output modulo this')
    bootstrap_draws: int = param(5000, 'only when the project has no history yet')


@dataclass
class ProcessParams:
    name: str = param("", 'the process\'s name in rows and columns (orchestrator, watcher): letters, digits, _')
    command: list[str] | None = param(None, 'argv; None = the reference program of this name (orchestrator, watcher)')
    cwd: str | None = param(None, 'working folder (relative = in project_dir); None = project_dir')
    env: dict[str, str] = param(factory=dict, help="environment variables added to the process's")
    pid: int | None = param(None, 'attach instead of start')
    match: str | None = param(None, 'attach by command-line pattern (regex)')
    halt: HaltParams = param(factory=HaltParams, help='how the soak stops this process: method, command / flag, timeout_s')
    sim: dict[str, Any] = param(factory=dict, help='knobs of the reference program (flag → value)')


@dataclass
class PreflightParams:
    min_free_disk_mb: float = param(1024.0, 'refuse below this much free disk')
    stale_lock_min: float = param(60.0, '*.lock files older than this are stale')
    required_artifacts: list[str] = param(factory=list, help='files that must exist in project_dir')


@dataclass
class SoakParams:
    """Parameters of a WATCHER soak (``soak watcher a|b|c``, ``watcher_soak.ipynb``)."""

    soak: str = param("a", 'the soak type (its registry letter): a daemon endurance, b sequential requests, c autonomous loop, csys the loop on the real system (orchestrator + WATCHER daemon)')
    run_id: str | None = param(None, 'plain name; None = soak-<a|b|c>-<UTC stamp>')
    output_dir: str = param("outputs/watcher-soak", 'folder: run folders and signoffs ({run_id}.json/.md) go here')
    project_dir: str | None = param(None, "the daemon's folder; None = fresh folder for the reference daemon")
    profile: Literal["watcher-v2", "plan"] = param("watcher-v2", 'protocol profile: watcher-v2 (the daemon as built) | plan (as the soak plan describes it)')
    profile_overrides: dict[str, Any] = param(factory=dict, help='Profile fields that differ (e.g. request_types)')
    duration_s: float = param(14400.0, 'seconds: length of the soak (the plan: A 2-4 h, B 30-60 min, C 1-2 h)')
    target: TargetParams = param(factory=TargetParams, help='the daemon: command argv (null: the reference daemon), env, attach by pid / match, halt')
    sampling: SamplingParams = param(factory=SamplingParams, help="sampling cadence (seconds) and what is counted in the target's log")
    llm: LlmParams = param(factory=LlmParams, help="the daemon's LLM server: health_url, start_stub, outages")
    criteria: dict[str, Any] = param(factory=dict, help='overrides of default criteria by metric id')
    probes_at_s: list[float] = param(factory=list, help='soak A: probe request offsets')
    requests: list[dict[str, Any]] = param(factory=list, help="soak B mix; [] = the plan's mix")
    injection: InjectionParams = param(factory=InjectionParams, help='soak C: synthetic draws (interval_s seconds, prng, seed, mod, bootstrap_draws)')
    probes: dict[str, dict[str, Any]] = param(factory=dict, help='{name: {file, path, reduce}}')
    preflight: PreflightParams = param(factory=PreflightParams, help='checks before the soak starts: min_free_disk_mb, stale_lock_min, required_artifacts')
    sim: dict[str, Any] = param(factory=dict, help='reference-daemon knobs (flag → value)')
    force: bool = param(False, 'go on despite preflight findings')
    keep_changes: bool = param(False, "soak C: keep the operator's modified files")
    drain_timeout_s: float = param(600.0, 'soak B: deadline for the queue to drain')
    warmup_s: float | None = param(None, 'seconds left out at the start of growth fits; None = 5% of the run, <= 600')
    host: str | None = param(None, "the machine's name in every row and in samples/host=NAME/; None = this machine's name")
    targets: list[ProcessParams] = param(factory=list, help="several named processes (started in order, halted in reverse) instead of target; [] = target")
    policies: dict[str, Any] = param(factory=dict, help="soak C: keys set in watcher_policies.json for the run (mappings merge), restored byte for byte after")
    stop_on_fail: bool = param(False, "end the soak at the first conclusive memory FAIL (a sequential rule over the flushes: false FAILs <= stop_on_fail_alpha); false = the plan's duration")
    stop_on_fail_alpha: float = param(0.01, "false-FAIL rate of stop_on_fail's rule over all its looks together")
    stop_on_fail_after_s: float = param(600.0, "seconds: stop_on_fail decides nothing before this (a cache still filling looks like a leak)")
    memory_limit_mb: float | None = param(None, "MiB the target's memory is projected against (time to exhaustion); None = its cgroup limit, else the host's memory")

    def validate(self) -> SoakParams:
        if self.run_id is not None:
            check_run_id(self.run_id)
        _require("duration_s", self.duration_s, self.duration_s > 0, "a number of seconds > 0")
        s = self.sampling
        _require("sampling.interval_s", s.interval_s, s.interval_s > 0, "a number of seconds > 0")
        _require("sampling.flush_s", s.flush_s, s.flush_s > 0, "a number of seconds > 0")
        _require("sampling.target_log_max_mb", s.target_log_max_mb, s.target_log_max_mb >= 0.01, "MiB >= 0.01")
        _require("target.halt.timeout_s", self.target.halt.timeout_s, self.target.halt.timeout_s > 0, "seconds > 0")
        if self.target.pid is not None and self.target.match is not None:
            raise ParameterError("target.pid and target.match are both set: attach by one of them", key="target")
        h = self.target.halt
        if h.method == "command" and not h.command:
            raise ParameterError("target.halt.method is 'command' but target.halt.command is empty", key="target.halt.command")
        if self.warmup_s is not None:
            _require("warmup_s", self.warmup_s, 0 <= self.warmup_s < self.duration_s, "seconds >= 0 and < duration_s")
        _require("injection.interval_s", self.injection.interval_s, self.injection.interval_s > 0, "seconds > 0")
        _require("injection.mod", self.injection.mod, self.injection.mod >= 1, "an integer >= 1")
        for name, probe in self.probes.items():
            if not isinstance(probe, dict) or "file" not in probe:
                raise ParameterError(f"probes.{name} needs at least a 'file' key", key=f"probes.{name}", value=probe)
        _require("stop_on_fail_alpha", self.stop_on_fail_alpha, 0 < self.stop_on_fail_alpha < 1, "a fraction between 0 and 1")
        _require("stop_on_fail_after_s", self.stop_on_fail_after_s, self.stop_on_fail_after_s >= 0, "seconds >= 0")
        if self.memory_limit_mb is not None:
            _require("memory_limit_mb", self.memory_limit_mb, self.memory_limit_mb > 0, "MiB > 0")
        _check_targets(self.targets)
        return self


def _check_targets(targets: list[ProcessParams]) -> None:
    names = [t.name for t in targets]
    for i, t in enumerate(targets):
        key = f"targets[{i}]"
        if not t.name.isidentifier() or not t.name.isascii() or t.name != t.name.lower():
            raise ParameterError(f"{key}.name = {t.name!r} is invalid: expected a lower-case name of letters, digits "
                                 "and _ (it names columns and rows)", key=f"{key}.name", value=t.name)
        if names.count(t.name) > 1:
            raise ParameterError(f"targets name {t.name!r} twice: every process needs its own name", key=f"{key}.name")
        if t.pid is not None and t.match is not None:
            raise ParameterError(f"{key}.pid and {key}.match are both set: attach by one of them", key=key)
        _require(f"{key}.halt.timeout_s", t.halt.timeout_s, t.halt.timeout_s > 0, "seconds > 0")
        if t.halt.method == "command" and not t.halt.command:
            raise ParameterError(f"{key}.halt.method is 'command' but {key}.halt.command is empty",
                                 key=f"{key}.halt.command")




# --------------------------------------------------------------------------- loading


def _require(key: str, value: Any, ok: bool, allowed: str) -> None:
    if not ok:
        raise ParameterError(f"{key} = {value!r} is invalid: expected {allowed}", key=key, value=value)


def load_params(
    cls: type[T],
    path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    sets: list[str] | None = None,
) -> T:
    """Defaults → YAML file → ``overrides`` mapping → ``KEY=VALUE`` sets; validated."""
    data: dict[str, Any] = read_yaml(path) if path else {}
    data = {k: v for k, v in data.items() if k not in NOTEBOOK_KEYS}
    if overrides:
        data = merge(data, {k: v for k, v in overrides.items()})
    for s in sets or []:
        keys, value = parse_override(s)
        data = set_path(data, keys, value)
    params = from_dict(cls, data)
    validate = getattr(params, "validate", None)
    return validate() if validate else params

"""The dx-runner simulator's world: configuration, scenarios, latencies, job plans, job files.

Standard library only, so the runner program stays stand-alone; plans are pure functions,
testable without processes. A job's plan is fixed when it starts and is
deterministic per (scenario, seed, beads id, attempt).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import overload

PROVIDERS = ("opencode", "cc-glm", "gemini")
MODEL_ENV = {"opencode": "OPENCODE_MODEL", "cc-glm": "CC_GLM_MODEL", "gemini": "GEMINI_MODEL"}
MODEL_DEFAULTS = {
    "opencode": "zhipuai-coding-plan/glm-5",
    "cc-glm": "glm-5",
    "gemini": "gemini-3-flash-preview",
}
RUNTIMES = {"opencode": "opencode", "cc-glm": "cc-glm-headless.sh", "gemini": "gemini"}
MEDIAN_LATENCY_S = {"opencode": 1.2, "cc-glm": 1.6, "gemini": 0.9}
LATENCY_SIGMA = 0.35
LONG_RUN_S = 3600.0  # a provider that stalls or hangs runs this long unless killed
DRIFT_MODEL = "zai-coding-plan/glm-5"
DEFAULT_PREFIXES = ("/tmp/agents", "/tmp/dx-runner")
# DX_SIM_SCENARIO: clean (all pass) · signoff-2026-02-20 (cc-glm preflight NO_AUTH_SOURCE;
# gemini jobs rc 1, HTTP 403 and planted secrets in the log) · model-drift (opencode selects
# zai-coding-plan/glm-5, fallback alias_for=...) · stall (opencode reported stalled after
# DX_SIM_STALL_AFTER_S, provider keeps running) · hang (gemini check never returns, provider
# runs an hour) · flaky (gemini attempt 1 fails gemini_capacity_exhausted) · cap (gemini cap 1)
# · no-op (cc-glm jobs end no_op, check exit 23) · blocked (cc-glm reported blocked, running).
SCENARIOS = (
    "clean",
    "signoff-2026-02-20",
    "model-drift",
    "stall",
    "hang",
    "flaky",
    "cap",
    "no-op",
    "blocked",
)
SCENARIO_CAPS = {"cap": {"gemini": 1}}
MUTATE_MARKER = "sim_mutate"  # a prompt containing this makes the provider change the worktree

SIGNOFF_GEMINI_LOG = (
    "Loaded cached credentials.",
    "GEMINI_API_KEY=AIzaSyD-planted-secret-0123456789",
    "POST https://generativelanguage.googleapis.com/v1beta/models/"
    "gemini-3-flash-preview:generateContent",
    "Authorization: Bearer sk-planted-bearer-token-abcdef",
    "Error when talking to Gemini API ValidationRequiredError: "
    "Verify your account to continue (HTTP 403)",
)
FLAKY_GEMINI_LOG = (
    "Loaded cached credentials.",
    "Error: RESOURCE_EXHAUSTED: model capacity exhausted for gemini-3-flash-preview (HTTP 429)",
)


class ConfigError(ValueError):
    """A DX_SIM_* setting that cannot be used; the message names the variable and value."""


@overload
def _float(env: Mapping[str, str], name: str, default: float) -> float: ...
@overload
def _float(env: Mapping[str, str], name: str, default: None) -> float | None: ...
def _float(env: Mapping[str, str], name: str, default: float | None) -> float | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value < 0 or math.isnan(value):
        raise ConfigError(f"{name}={raw!r} must be >= 0")
    return value


def parse_caps(raw: str) -> dict[str, int]:
    """Parse ``opencode:2,cc-glm:2,gemini:1`` into {provider: cap}."""
    caps: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        provider, sep, count = item.partition(":")
        if not sep or provider not in PROVIDERS or not count.isdigit():
            raise ConfigError(
                f"DX_SIM_CAPS item {item!r}: expected provider:count with provider in "
                f"{', '.join(PROVIDERS)}"
            )
        caps[provider] = int(count)
    return caps


@dataclass(frozen=True)
class SimConfig:
    """The simulator's settings, read from DX_SIM_* and the canonical-model variables."""

    state_dir: Path = Path("/tmp/dx-runner")
    scenario: str = "clean"
    seed: int = 0
    preflight_s: float = 0.05
    check_s: float = 0.0
    tick_s: float = 2.0
    latency_scale: float = 1.0
    fixed_latency_s: float | None = None
    stall_after_s: float = 1.0
    outcome_pause_s: float = 0.05
    caps: dict[str, int] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=lambda: dict(MODEL_DEFAULTS))
    worktree_prefixes: tuple[str, ...] = DEFAULT_PREFIXES

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SimConfig:
        """Build the settings from an environment (``os.environ`` by default)."""
        env = os.environ if env is None else env
        scenario = env.get("DX_SIM_SCENARIO", "").strip() or "clean"
        if scenario not in SCENARIOS:
            raise ConfigError(
                f"DX_SIM_SCENARIO={scenario!r}: expected one of {', '.join(SCENARIOS)}")
        raw_seed = env.get("DX_SIM_SEED", "").strip() or "0"
        try:
            seed = int(raw_seed)
        except ValueError:
            raise ConfigError(f"DX_SIM_SEED={raw_seed!r} is not an integer") from None
        tick_s = _float(env, "DX_SIM_TICK_S", 2.0)
        if not tick_s:
            raise ConfigError("DX_SIM_TICK_S must be > 0")
        caps = dict(SCENARIO_CAPS.get(scenario, {}))
        caps.update(parse_caps(env.get("DX_SIM_CAPS", "")))
        prefixes = tuple(p for p in env.get("DX_SIM_WORKTREE_PREFIXES", "").split(":") if p)
        return cls(
            state_dir=Path(env.get("DX_SIM_STATE_DIR", "").strip() or "/tmp/dx-runner").absolute(),
            scenario=scenario,
            seed=seed,
            preflight_s=_float(env, "DX_SIM_PREFLIGHT_S", 0.05),
            check_s=_float(env, "DX_SIM_CHECK_S", 0.0),
            tick_s=tick_s,
            latency_scale=_float(env, "DX_SIM_LATENCY_SCALE", 1.0),
            fixed_latency_s=_float(env, "DX_SIM_FIXED_LATENCY_S", None),
            stall_after_s=_float(env, "DX_SIM_STALL_AFTER_S", 1.0),
            outcome_pause_s=_float(env, "DX_SIM_OUTCOME_PAUSE_S", 0.05),
            caps=caps,
            models={p: env.get(v, "").strip() or MODEL_DEFAULTS[p] for p, v in MODEL_ENV.items()},
            worktree_prefixes=prefixes or DEFAULT_PREFIXES,
        )


def latency_s(
    provider: str,
    beads: str,
    attempt: int,
    *,
    seed: int = 0,
    scale: float = 1.0,
    fixed_s: float | None = None,
) -> float:
    """A job's run time in seconds: lognormal around the provider's median (sigma 0.35).

    Seeded by sha256(f"{seed}:{beads}:{attempt}"), never ``hash()`` (salted per process), so
    every process computes the same value.
    """
    if fixed_s is not None:
        return fixed_s
    digest = hashlib.sha256(f"{seed}:{beads}:{attempt}".encode()).digest()
    rng = random.Random(int.from_bytes(digest, "big"))
    return rng.lognormvariate(math.log(MEDIAN_LATENCY_S[provider]), LATENCY_SIGMA) * scale


def preflight_report(cfg: SimConfig, provider: str) -> tuple[list[str], int]:
    """The human preflight report for a provider and its number of errors (0 = passed)."""
    lines = [f"=== dx-runner preflight (provider={provider}) ===",
             f"[OK] runtime: {RUNTIMES[provider]} found"]
    errors: list[str] = []
    if cfg.scenario == "signoff-2026-02-20" and provider == "cc-glm":
        errors.append(
            "ERROR: NO_AUTH_SOURCE: no auth source for cc-glm "
            "(ZAI_API_KEY unset, op:// reference unresolved)"
        )
    else:
        lines.append("[OK] auth: resolved")
        lines.append(f"[OK] model: {cfg.models[provider]} available")
    lines.append("[OK] worktree policy: workspace-first (" + ", ".join(cfg.worktree_prefixes) + ")")
    lines.extend(errors)
    if errors:
        lines.append(f"=== Preflight FAILED ({len(errors)} error(s)) ===")
    else:
        lines.append("=== Preflight PASSED ===")
    return lines, len(errors)


def answer_for(prompt: str) -> str:
    """The provider's answer to an echo prompt: echo_ready → READY, echo_ok → OK."""
    lowered = prompt.lower()
    if "echo_ready" in lowered:
        return "READY"
    if "echo_ok" in lowered:
        return "OK"
    return "DONE"


@dataclass(frozen=True)
class JobPlan:
    """Everything the simulated job will do, fixed at start and stored in ``<ID>.meta``."""

    provider: str
    beads: str
    attempt: int
    latency_s: float
    rc: int = 0
    runner_reason: str = "outcome_exit_0"  # the outcome's reason_code
    outcome_state: str = "success"  # success | failed | no_op
    selected_model: str = ""
    fallback_reason: str = ""
    live_state: str = ""  # stalled | blocked: reported by check while the process runs
    live_reason: str = ""
    check_hangs: bool = False
    log_lines: tuple[str, ...] = ()  # printed instead of the answer when non-empty

    def to_meta(self) -> dict[str, str]:
        """Flat key=value form for the meta file (log lines are rebuilt from the scenario)."""
        return {
            "attempt": str(self.attempt),
            "latency_s": repr(self.latency_s),
            "planned_rc": str(self.rc),
            "runner_reason": self.runner_reason,
            "outcome_state_planned": self.outcome_state,
            "selected_model": self.selected_model,
            "fallback_reason": self.fallback_reason,
            "live_state": self.live_state,
            "live_reason": self.live_reason,
            "check_hangs": "1" if self.check_hangs else "0",
        }


def plan_job(cfg: SimConfig, provider: str, beads: str, attempt: int) -> JobPlan:
    """The plan of one attempt of a job under the configured scenario."""
    base = JobPlan(
        provider=provider,
        beads=beads,
        attempt=attempt,
        latency_s=latency_s(provider, beads, attempt, seed=cfg.seed,
                            scale=cfg.latency_scale, fixed_s=cfg.fixed_latency_s),
        selected_model=cfg.models[provider],
    )
    return _apply_scenario(cfg, base)


def _apply_scenario(cfg: SimConfig, plan: JobPlan) -> JobPlan:
    s, p = cfg.scenario, plan.provider
    kw: dict[str, object] = {}
    if s == "signoff-2026-02-20" and p == "gemini":
        kw = dict(rc=1, runner_reason="process_exit_with_rc", outcome_state="failed",
                  log_lines=SIGNOFF_GEMINI_LOG)
    elif s == "model-drift" and p == "opencode":
        kw = dict(selected_model=DRIFT_MODEL, fallback_reason=f"alias_for={cfg.models[p]}")
    elif s == "stall" and p == "opencode":
        kw = dict(latency_s=LONG_RUN_S, live_state="stalled", live_reason="no_progress_detected")
    elif s == "blocked" and p == "cc-glm":
        kw = dict(latency_s=LONG_RUN_S, live_state="blocked", live_reason="max_retries_exhausted")
    elif s == "hang" and p == "gemini":
        kw = dict(latency_s=LONG_RUN_S, check_hangs=True)
    elif s == "flaky" and p == "gemini" and plan.attempt == 1:
        kw = dict(rc=1, runner_reason="gemini_capacity_exhausted", outcome_state="failed",
                  log_lines=FLAKY_GEMINI_LOG)
    elif s == "no-op" and p == "cc-glm":
        kw = dict(runner_reason="no_op_no_heartbeat", outcome_state="no_op")
    return JobPlan(**{**plan.__dict__, **kw}) if kw else plan


def log_lines_for(cfg: SimConfig, meta: Mapping[str, str]) -> tuple[str, ...]:
    """The failure text a provider prints for a planned job (empty = print the answer)."""
    plan = JobPlan(provider=meta["provider"], beads=meta["beads"],
                   attempt=int(meta["attempt"]), latency_s=0.0)
    sim = SimConfig(scenario=meta.get("scenario", "clean"), models=cfg.models)
    return _apply_scenario(sim, plan).log_lines


# --------------------------------------------------------------------------- job files

HAVE_PROC = Path("/proc/self/stat").exists()
OUTCOME_KEYS = ("exit_code", "state", "reason_code", "completed_at", "duration_sec",
                "retries", "selected_model", "fallback_reason", "mutation_count")


class Job:
    """The files of one job in ``<state>/<provider>/``."""

    def __init__(self, state_dir: Path, provider: str, beads: str) -> None:
        self.provider, self.beads = provider, beads
        self.dir = state_dir / provider
        base = self.dir / beads
        self.meta, self.log, self.rc = (Path(f"{base}.{ext}") for ext in ("meta", "log", "rc"))
        self.pid, self.outcome = Path(f"{base}.pid"), Path(f"{base}.outcome")
        self.monitor_pid, self.truth = Path(f"{base}.monitor.pid"), Path(f"{base}.truth.json")
        self.attempts = Path(f"{base}.attempts")

    @classmethod
    def find(cls, state_dir: Path, beads: str) -> Job | None:
        """The job with this beads id (the newest meta across providers), or None."""
        found = []
        for provider in PROVIDERS:
            job = cls(state_dir, provider, beads)
            try:
                found.append((job.meta.stat().st_mtime, job))
            except OSError:
                continue
        return max(found, key=lambda pair: pair[0])[1] if found else None

    def read_meta(self) -> dict[str, str]:
        return read_kv(self.meta)

    def read_int(self, path: Path) -> int | None:
        """The integer in a pid/rc/attempts file, or None (missing, empty or partial)."""
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None

    def read_outcome(self) -> dict[str, str] | None:
        """The outcome once every key is written (a half-written file reads as None)."""
        data = read_kv(self.outcome)
        return data if all(k in data for k in OUTCOME_KEYS) else None

    def monitor_alive(self) -> bool:
        """The job's monitor runs (its pid file names a live process running this job)."""
        pid = self.read_int(self.monitor_pid)
        return pid is not None and alive(pid) and self.beads in cmdline(pid)

    def provider_alive(self) -> bool:
        pid = self.read_int(self.pid)
        return pid is not None and alive(pid)

    def active(self) -> bool:
        """Something of this job still runs: it counts as running and towards the cap."""
        return self.meta.is_file() and (self.monitor_alive() or self.provider_alive())


def read_kv(path: Path) -> dict[str, str]:
    """``key=value`` lines as a dict; a missing file is empty, a line without '=' is skipped."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {}
    pairs = (line.partition("=") for line in text.splitlines())
    return {k.strip(): v.strip() for k, sep, v in pairs if sep and k.strip()}


def write_atomic(path: Path, text: str) -> None:
    """Write a temporary file and rename it over ``path``: readers see old or new, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def kv_text(data: dict[str, str]) -> str:
    """``key=value`` lines, the format of .meta and .outcome."""
    return "".join(f"{k}={v}\n" for k, v in data.items())


def alive(pid: int) -> bool:
    """True for a running process (a zombie, waiting for a reaper, counts as gone)."""
    if HAVE_PROC:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[-1].split()[:1] not in (["Z"], ["X"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def cmdline(pid: int) -> str:
    """A process's command line ('' when it is gone or unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def read_json(path: Path) -> dict[str, object]:
    """A JSON object from a file; {} when missing, partial or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}

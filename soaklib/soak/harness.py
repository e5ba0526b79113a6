"""The soak harness: one loop for soaks A, B and C, with the soak-specific parts in drivers.

``run_soak`` validates, runs the soak preflight, prepares the project, starts the loopback
LLM stub (reference daemon), starts or attaches to the target, then samples on absolute
monotonic deadlines into parquet part files until the driver is done, ``duration_s`` has
passed, the target exits or a stop is requested. It then flushes, lets the driver finish
(soak A halts and times the target there), stops what it started, resets the state the
plan's section 8 resets (halt files, target processes) and writes ``observations.json``.
The signoff is computed from the run folder alone (:mod:`soaklib.report.signoff`).

A driver (``soak`` = "a" | "b" | "c") implements ``setup``, ``tick`` and ``finish``; it is
constructed without arguments and gets everything through the :class:`SoakContext`.
"""
from __future__ import annotations

import importlib
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import pandas as pd
import pyarrow as pa

from soaklib.errors import ParameterError, ProtocolError, TargetError
from soaklib.params import SoakParams, to_dict
from soaklib.soak import preflight as pf
from soaklib.observe.gpu import GpuReader
from soaklib.soak.preflight import REFERENCE_MODULE, RunPlan, environment, plan_run, target_argv
from soaklib.watcher.protocol import Profile, log_paths
from soaklib.observe.sampler import HealthProbe, Sampler, Ticker
from soaklib.proc.target import HaltResult, Target
from soaklib.parts import PartWriter, compact_parts, read_parts
from soaklib.store import atomic_write_json, finish_manifest, start_manifest, utc_now, write_table

OBSERVATIONS = "observations.json"
EVENTS = "events.parquet"
STUB_MODULE = "soaklib.sim.llm_server"
STUB_START_TIMEOUT_S = 10.0
PROGRESS_EVERY_S = 60.0  # without a terminal, a progress line this often
EVENT_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("ts", pa.timestamp("us", tz="UTC")), ("t_s", pa.float64()),
    ("kind", pa.string()), ("message", pa.string()), ("data", pa.string()),
])


# --------------------------------------------------------------------------- context and driver


@dataclass
class SoakContext:
    """What a driver may use: parameters, folders, the protocol profile, the target, events."""

    params: SoakParams
    run_id: str
    run_dir: Path
    project_dir: Path
    profile: Profile
    target: Target
    t0: float
    echo: Callable[[str], None]
    stop_event: threading.Event
    reference: bool = False  # the target is the built-in reference daemon
    llm_url: str | None = None  # base URL the daemon uses (the stub's, when the harness started one)
    _events: list[dict[str, Any]] = field(default_factory=list, repr=False)
    _rows: list[dict[str, Any]] = field(default_factory=list, repr=False)
    _schema: pa.Schema | None = field(default=None, repr=False)

    def elapsed_s(self) -> float:
        """Seconds since the soak started (monotonic)."""
        return time.monotonic() - self.t0

    def event(self, kind: str, **fields: Any) -> None:
        """Record an event (``message`` is its text, other fields go to its JSON ``data``)."""
        self._event(kind, self.elapsed_s(), **fields)

    def _event(self, kind: str, at_s: float, **fields: Any) -> None:
        message = str(fields.pop("message", "") or "")
        self._events.append({
            "run_id": self.run_id, "ts": utc_now(), "t_s": float(at_s), "kind": kind, "message": message,
            "data": json.dumps(fields, default=str, sort_keys=True),
        })

    def samples(self) -> pd.DataFrame:
        """Every sample so far: the flushed part files plus the rows not yet flushed."""
        flushed = read_parts(self.run_dir / "samples")
        if not self._rows:
            return flushed
        pending = pa.Table.from_pylist(self._rows, schema=self._schema).to_pandas()
        return pending if flushed.empty else pd.concat([flushed, pending], ignore_index=True)

    def flush_events(self) -> None:
        """Rewrite ``events.parquet`` atomically with every event so far."""
        write_table(self.run_dir / EVENTS, pa.Table.from_pylist(self._events, schema=EVENT_SCHEMA))


class Driver(Protocol):
    """The soak-specific part of a soak; see the module docstring."""

    soak: str

    def setup(self, ctx: SoakContext) -> None: ...

    def tick(self, ctx: SoakContext, row: dict[str, Any]) -> bool: ...

    def finish(self, ctx: SoakContext) -> dict[str, Any]: ...


@dataclass
class SoakResult:
    """How a soak ended; the verdict comes from the signoff written from ``run_dir``."""

    run_id: str
    run_dir: Path
    soak: str
    interrupted: bool
    target_exit: dict[str, Any] | None
    observations: dict[str, Any]
    error: str | None = None


_DRIVERS = {"a": ("soaklib.soak.drivers.endurance", "EnduranceSoak"), "b": ("soaklib.soak.drivers.queue", "QueueSoak"),
            "c": ("soaklib.soak.drivers.loop", "LoopSoak")}


def driver_for(soak: str) -> Driver:
    """The driver of soak ``a`` / ``b`` / ``c`` (ParameterError when it is not available)."""
    if soak not in _DRIVERS:
        raise ParameterError(f"soak {soak!r} is unknown: allowed are a, b, c", key="soak", value=soak)
    module, name = _DRIVERS[soak]
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ParameterError(f"soak {soak} is not available in this build ({module}.{name}: {e})",
                             key="soak", value=soak) from None
    return cls()


def _start_stub(params: SoakParams, plan: RunPlan) -> tuple[Target, str]:
    """Start the loopback LLM stub; returns it and its base URL."""
    from urllib.parse import urlparse

    url = params.llm.health_url
    port = 0 if plan.reference or url is None else (urlparse(url).port or 8080)
    port_file = plan.run_dir / "llm.port"
    argv = [sys.executable, "-m", STUB_MODULE, "--port", str(port), "--port-file", str(port_file)]
    for start_s, end_s in params.llm.outages:
        argv += ["--outage", f"{start_s:g}:{end_s:g}"]
    stub = Target.start(argv, cwd=plan.run_dir, log_path=plan.run_dir / "llm_server.log")
    deadline = time.monotonic() + STUB_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text().strip():
            return stub, f"http://127.0.0.1:{int(port_file.read_text())}"
        if not stub.is_running():
            break
        time.sleep(0.02)
    stub.terminate_tree(1.0)
    tail = (plan.run_dir / "llm_server.log").read_text(errors="replace")[-400:]
    raise TargetError(f"the loopback LLM stub did not start within {STUB_START_TIMEOUT_S:g} s: {tail}")


# --------------------------------------------------------------------------- the soak


def _progress_line(ctx: SoakContext, row: dict[str, Any], duration_s: float) -> str:
    rss = row.get("tree_rss_bytes") or row.get("rss_bytes")
    fds = row.get("tree_num_fds") if row.get("tree_num_fds") is not None else row.get("num_fds")
    el = ctx.elapsed_s()
    rss_txt = f"{rss / 2**20:.1f} MB" if rss is not None else "–"
    return (f"soak {ctx.params.soak} {ctx.run_id}: {el:6.0f} s elapsed / {max(0.0, duration_s - el):6.0f} s left · "
            f"RSS {rss_txt} · FDs {fds if fds is not None else '–'}")


def run_soak(params: SoakParams, *, echo: Callable[[str], None] | None = None, progress: bool = False,
             driver: Driver | None = None, stop_event: threading.Event | None = None) -> SoakResult:
    """Run one soak (see the module docstring); never leaves a process behind.

    Raises ``ParameterError`` (exit 2) for bad parameters, ``TargetError`` (exit 3) when
    the preflight refuses or the target cannot be started/found, and a driver's
    ``ProtocolError`` (exit 1) after writing what the run has. Ctrl-C returns a result
    with ``interrupted`` True.
    """
    params.validate()
    echo = echo or (lambda _s: None)
    driver = driver or driver_for(params.soak)
    plan = plan_run(params)
    if plan.reference:
        plan.project_dir.mkdir(parents=True, exist_ok=True)
    ref_instance = ["-m", REFERENCE_MODULE, "--project-dir", str(plan.project_dir)]
    attach = params.target.pid is not None or params.target.match is not None
    findings = pf.soak_preflight(
        params, plan.project_dir, halt_paths=plan.halt_paths,
        instance_argv=None if attach else (ref_instance if plan.reference else list(params.target.command or [])),
        check_llm=not plan.start_stub)
    failed = pf.enforce(findings, params.force)
    preexisting_halt = [p for p in plan.halt_paths if p.exists()]
    start_manifest(plan.run_dir, plan.run_id, f"watcher-{params.soak}", soak=params.soak,
                   parameters=to_dict(params), environment=environment(), project_dir=str(plan.project_dir),
                   profile=plan.profile.name, reference_daemon=plan.reference,
                   preflight=[f.to_dict() for f in findings])
    stop_event = stop_event or threading.Event()
    stub: Target | None = None
    target: Target | None = None
    health: HealthProbe | None = None
    gpu = GpuReader()
    obs: dict[str, Any] = {"soak": params.soak, "observations": {}, "notes": [], "halt": None, "target_exit": None,
                           "interrupted": False, "error": None, "preflight_failed": [f.to_dict() for f in failed]}
    ctx: SoakContext | None = None
    try:
        llm_url = None
        health_url = params.llm.health_url
        if plan.start_stub:
            stub, llm_url = _start_stub(params, plan)
            health_url = f"{llm_url}/health"
        elif plan.reference and health_url is not None:
            llm_url = health_url.rsplit("/health", 1)[0]
        if health_url is not None:  # null: the daemon has no LLM server, nothing to probe
            health = HealthProbe(health_url, params.sampling.health_interval_s, params.sampling.health_timeout_s,
                                 autostart=False)
        log_file = plan.run_dir / "target.log"
        sampler = Sampler(plan.project_dir, plan.profile, params.sampling,
                          log_paths=log_paths(plan.profile, plan.project_dir, log_file), gpu=gpu, health=health,
                          probes=params.probes, run_id=plan.run_id)
        if attach:
            target = Target.attach(pid=params.target.pid, match=params.target.match)
        else:
            target = Target.start(target_argv(params, plan, llm_url), cwd=plan.project_dir,
                                  env=params.target.env, log_path=log_file)
        t0 = time.monotonic()
        sampler.t0 = t0
        if health is not None:
            health.check_now()  # the first sample has an answer, not the probe's initial "no answer"
            health.start()
        ctx = SoakContext(params=params, run_id=plan.run_id, run_dir=plan.run_dir, project_dir=plan.project_dir,
                          profile=plan.profile, target=target, t0=t0, echo=echo, stop_event=stop_event,
                          reference=plan.reference, llm_url=llm_url, _schema=sampler.schema)
        ctx.event("target_started" if target.started else "target_attached", pid=target.pid, argv=target.argv,
                  message=f"{'started' if target.started else 'attached to'} pid {target.pid}")
        for f in failed:
            ctx.event("preflight_finding", check=f.check, message=f.message)
        echo(f"soak {params.soak}: run {plan.run_id} in {plan.run_dir} (target pid {target.pid})")
        _loop(ctx, driver, sampler, health, obs, progress)
    except KeyboardInterrupt:
        obs["interrupted"] = True
        if ctx is not None:
            ctx.event("interrupted", message="interrupted (Ctrl-C / SIGTERM): samples flushed, target stopped")
    except ProtocolError as e:
        obs["error"] = f"ProtocolError: {e}"
        if ctx is not None:
            ctx.event("protocol_error", message=str(e))
        e.run_dir = e.run_dir or str(plan.run_dir)
        _finalize(ctx, driver, plan, params, obs, stub, target, health, gpu, preexisting_halt,
                  finish_driver=False)
        raise
    except BaseException as e:
        obs["error"] = f"{type(e).__name__}: {e}"
        _finalize(ctx, driver, plan, params, obs, stub, target, health, gpu, preexisting_halt,
                  finish_driver=False)
        raise
    _finalize(ctx, driver, plan, params, obs, stub, target, health, gpu, preexisting_halt,
              finish_driver=not obs["interrupted"])
    return SoakResult(plan.run_id, plan.run_dir, params.soak, obs["interrupted"], obs["target_exit"],
                      obs["observations"], obs["error"])


def _loop(ctx: SoakContext, driver: Driver, sampler: Sampler, health: HealthProbe | None, obs: dict[str, Any],
          progress: bool) -> None:
    """Sample → driver.tick until done; flush every ``flush_s``."""
    p = ctx.params
    writer = PartWriter(ctx.run_dir / "samples", schema=sampler.schema)
    ticker = Ticker(p.sampling.interval_s, ctx.t0)
    last_flush = last_line = ctx.t0
    final = False
    try:
        driver.setup(ctx)
        while True:
            row = sampler.sample(ctx.target.pid)
            ctx._rows.append(row)
            for t_mono, kind in (health.drain_events() if health is not None else ()):
                ctx._event(kind, t_mono - ctx.t0, url=health.url, message=f"LLM health {kind.split('_')[1]}")
            for line in sampler.new_error_lines:
                ctx.event("log_error", message=line)
            info = ctx.target.poll()
            if info is not None:
                obs["target_exit"] = {"returncode": info.returncode, "signal": info.signal,
                                      "exited_at_s": info.exited_at_mono - ctx.t0}
                ctx.event("target_exited", **obs["target_exit"],
                          message=f"target exited on its own (code {info.returncode}, signal {info.signal})")
                ctx.echo(f"soak {p.soak}: the target exited on its own (code {info.returncode})")
                break
            done = driver.tick(ctx, row)
            if progress:
                sys.stderr.write("\r" + _progress_line(ctx, row, p.duration_s))
                sys.stderr.flush()
            elif time.monotonic() - last_line >= PROGRESS_EVERY_S:
                ctx.echo(_progress_line(ctx, row, p.duration_s))
                last_line = time.monotonic()
            if done or final or ctx.stop_event.is_set():
                break
            if time.monotonic() - last_flush >= p.sampling.flush_s:
                _flush(ctx, writer)
                last_flush = time.monotonic()
            if ticker.next_deadline - ctx.t0 >= p.duration_s - 1e-6:
                final = True  # one last sample at duration_s
                if ctx.stop_event.wait(max(0.0, ctx.t0 + p.duration_s - time.monotonic())):
                    break
            else:
                ticker.wait(ctx.stop_event)
    finally:
        if progress:
            sys.stderr.write("\n")
        _flush(ctx, writer)
        obs["sampling"] = {"samples": writer.rows_written, "parts": writer.parts_written,
                           "max_lag_s": ticker.max_lag_s, "skipped_ticks": ticker.skipped}
        obs["sampler_notes"] = dict(sampler.notes)
        obs["first_error_lines"] = list(sampler.logs.first_errors)


def _flush(ctx: SoakContext, writer: PartWriter) -> None:
    if ctx._rows:
        writer.extend(ctx._rows)
        writer.flush()
        ctx._rows = []
    ctx.flush_events()


def _finalize(ctx: SoakContext | None, driver: Driver, plan: RunPlan, params: SoakParams, obs: dict[str, Any],
              stub: Target | None, target: Target | None, health: HealthProbe | None, gpu: GpuReader,
              preexisting_halt: list[Path], *, finish_driver: bool) -> None:
    """Driver finish, stop everything, reset state, write observations.json and the manifest."""
    try:
        if ctx is not None and finish_driver:
            try:
                obs["observations"] = driver.finish(ctx) or {}
            except KeyboardInterrupt:
                obs["interrupted"] = True
                ctx.event("interrupted", message="interrupted while the soak was finishing")
            halt = obs["observations"].pop("halt", None) if isinstance(obs["observations"], dict) else None
            if isinstance(halt, HaltResult):
                obs["halt"] = halt.to_dict()
            elif isinstance(halt, dict):
                obs["halt"] = halt
    finally:
        if health is not None:
            health.stop()
        if target is not None and target.started:
            if target.is_running():
                stop = target.stop(timeout_s=min(10.0, params.target.halt.timeout_s), grace_s=2.0)
                if ctx is not None:
                    ctx.event("target_stopped", **stop.to_dict(), message="target stopped by the harness")
            target.terminate_tree(2.0)  # leftovers of the group / session
        if stub is not None:
            stub.stop(timeout_s=5.0, grace_s=1.0)
            stub.terminate_tree(1.0)
        gpu.close()
        close = getattr(driver, "close", None)  # e.g. soak C restores the operator's files
        if close is not None:
            try:
                close(ctx)
            except Exception as e:  # noqa: BLE001 - record it; the rest of the reset must run
                obs["notes"].append(f"driver cleanup failed: {type(e).__name__}: {e}")
        removed = []
        for p in plan.halt_paths:
            if p not in preexisting_halt and p.exists():
                try:
                    p.unlink()
                    removed.append(str(p))
                except OSError as e:
                    obs["notes"].append(f"could not remove halt file {p}: {e}")
        obs["reset"] = {"halt_files_removed": removed,
                        "target_left_running": bool(target is not None and target.started and target.is_running())}
        obs["gpu_notes"] = list(gpu.notes)
        obs["llm"] = {"url": ctx.llm_url if ctx else None, "stub": stub is not None,
                      "outages": params.llm.outages}
        if ctx is not None:
            ctx.event("soak_finished", interrupted=obs["interrupted"], message="soak finished")
            ctx.flush_events()
        try:  # one file instead of a part per flush; a crash here leaves the parts valid
            compact_parts(plan.run_dir / "samples")
        except OSError as e:
            obs["notes"].append(f"sample part files left as they are (compaction failed: {e})")
        atomic_write_json(plan.run_dir / OBSERVATIONS, obs)
        partial = obs["interrupted"] or obs["error"] is not None
        finish_manifest(plan.run_dir, complete=not partial, interrupted=obs["interrupted"], error=obs["error"])

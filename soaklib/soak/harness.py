"""The soak harness: one loop for every soak type, with the soak-specific parts in drivers.

``run_soak`` validates, runs the soak preflight, prepares the project, starts the loopback
LLM stub (reference daemon), starts or attaches to the target, then records samples
(:class:`~soaklib.observe.recorder.Recorder`) into parquet part files until the driver is
done, ``duration_s`` has passed, the target exits or a stop is requested. It then lets the
driver finish (soak A halts and times the target there), stops what it started, resets the
state the plan's section 8 resets (halt files, target processes), compacts the part files
and writes ``observations.json``. The signoff is computed from the run folder alone
(:mod:`soaklib.report.signoff`). Which driver runs comes from the soak registry.
"""
from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

from soaklib.errors import DiskFullError, ProtocolError, TargetError
from soaklib.observe.environment import environment
from soaklib.observe.gpu import GpuReader
from soaklib.observe.health import HealthProbe
from soaklib.observe.recorder import DISK_FULL_ERRNOS, Recorder
from soaklib.params import SoakParams, to_dict
from soaklib.parts import compact_parts
from soaklib.proc.limits import target_limits
from soaklib.proc.target import Target
from soaklib.proc.targets import TargetGroup
from soaklib.soak import faults, registry
from soaklib.soak import preflight as pf
from soaklib.soak.context import Driver, Events, JSONObject, JSONValue, SoakContext, SoakObservations
from soaklib.soak.plan import REFERENCE_MODULE, RunPlan, plan_run, target_argv
from soaklib.soak.sampling import soak_sampler
from soaklib.soak.stop_rule import progress as verdict_text
from soaklib.soak.stop_rule import running_verdict
from soaklib.soak.system import process_log, process_specs
from soaklib.store import MANIFEST, atomic_write_json, finish_manifest, release_space, reserve_space, start_manifest
from soaklib.watcher.protocol import log_paths

STUB_MODULE = "soaklib.sim.llm_server"
STUB_START_TIMEOUT_S = 10.0
PROGRESS_EVERY_S = 60.0  # without a terminal, a progress line this often
MIB = 2**20
LAST_WORDS_TIMEOUT_S = 5.0  # how long the copy of the target's output waits for its last writer
RESERVE_BYTES = 512 * 1024  # disk held while recording, freed for the run's last files when the disk fills


@dataclass
class SoakResult:
    """How a soak ended; the verdict comes from the signoff written from ``run_dir``."""

    run_id: str
    run_dir: Path
    soak: str
    interrupted: bool
    target_exit: JSONObject | None
    observations: JSONObject = field(default_factory=dict)
    error: str | None = None


def driver_for(soak: str) -> Driver:
    """A fresh driver of soak ``soak`` (ParameterError naming the known soaks otherwise)."""
    return registry.get(soak).driver()


def _progress_line(ctx: SoakContext, row: dict[str, Any], duration_s: float) -> str:
    rss = row.get("tree_rss_bytes") or row.get("rss_bytes")
    fds = row.get("tree_num_fds") if row.get("tree_num_fds") is not None else row.get("num_fds")
    el = ctx.elapsed_s()
    rss_txt = f"{rss / MIB:.1f} MiB" if rss is not None else "–"
    return (f"soak {ctx.params.soak} {ctx.run_id}: {el:6.0f} s elapsed / {max(0.0, duration_s - el):6.0f} s left · "
            f"RSS {rss_txt} · FDs {fds if fds is not None else '–'}")


class _Soak:
    """One run of a soak: what it started, what it saw, and how it is taken down."""

    def __init__(self, params: SoakParams, plan: RunPlan, driver: Driver, echo: Callable[[str], None],
                 stop_event: threading.Event, failed: list[pf.Finding]) -> None:
        self.params, self.plan, self.driver, self.echo, self.stop_event = params, plan, driver, echo, stop_event
        self.obs = SoakObservations(soak=params.soak, preflight_failed=[f.to_dict() for f in failed])
        self.failed = failed
        self.stub: Target | None = None
        self.target: Target | None = None
        self.health: HealthProbe | None = None
        self.gpu = GpuReader()
        self.ctx: SoakContext | None = None
        self.events = Events(plan.data_dir or plan.run_dir, plan.run_id, time.monotonic(), host=plan.host)
        self.preexisting_halt = [p for p in plan.halt_paths if p.exists()]
        self.costs: list[tuple[Any, ...]] = []  # (t_s, sample_cost_ms, bytes_read, harness_cpu_pct) per sample
        self.disk_full: DiskFullError | None = None
        self.folder_removed = False  # samples were lost with it: the run cannot be complete
        self.manifest: dict[str, Any] = {}  # as written at the start (rewritten if the run folder vanishes)

    # ------------------------------------------------------------------ start

    def _start_stub(self) -> str:
        """Start the loopback LLM stub; returns its base URL."""
        params, plan = self.params, self.plan
        url = params.llm.health_url
        port = 0 if plan.reference or url is None else (urlparse(url).port or 8080)
        port_file = plan.run_dir / "llm.port"
        argv = [sys.executable, "-m", STUB_MODULE, "--port", str(port), "--port-file", str(port_file)]
        for start_s, end_s in params.llm.outages:
            argv += ["--outage", f"{start_s:g}:{end_s:g}"]
        self.stub = Target.start(argv, cwd=plan.run_dir, log_path=plan.run_dir / "llm_server.log")
        deadline = time.monotonic() + STUB_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if port_file.exists() and port_file.read_text().strip():
                return f"http://127.0.0.1:{int(port_file.read_text())}"
            if not self.stub.is_running():
                break
            time.sleep(0.02)
        tail = (plan.run_dir / "llm_server.log").read_text(errors="replace")[-400:]
        raise TargetError(f"the loopback LLM stub did not start within {STUB_START_TIMEOUT_S:g} s: {tail}",
                          path=str(plan.run_dir / "llm_server.log"))

    def start(self) -> SoakContext:
        params, plan = self.params, self.plan
        llm_url = None
        health_url = params.llm.health_url
        if plan.start_stub:
            llm_url = self._start_stub()
            health_url = f"{llm_url}/health"
        elif plan.reference and health_url is not None:
            llm_url = health_url.rsplit("/health", 1)[0]
        if health_url is not None:  # null: the daemon has no LLM server, nothing to probe
            self.health = HealthProbe(health_url, params.sampling.health_interval_s,
                                      params.sampling.health_timeout_s, autostart=False)
        log_file = plan.run_dir / "target.log"
        before = getattr(self.driver, "before_start", None)  # soak csys: policies the processes read at start
        if before is not None:
            before(params, plan, self.echo)
        if params.targets:  # several named processes, each sampled as its own tree
            self.target = cast(Target, TargetGroup.start(process_specs(params, plan, llm_url)))  # reads as one
        elif params.target.pid is not None or params.target.match is not None:
            self.target = Target.attach(pid=params.target.pid, match=params.target.match)
        else:
            self.target = Target.start(target_argv(params, plan, llm_url), cwd=plan.project_dir,
                                       env=params.target.env, log_path=log_file,
                                       log_max_bytes=int(params.sampling.target_log_max_mb * MIB))
        t0 = time.monotonic()
        self.events.t0 = t0
        sampler, self.logs = soak_sampler(
            plan.project_dir, plan.profile, params.sampling, run_id=plan.run_id, t0=t0,
            log_paths=[process_log(plan.run_dir, p.name) for p in params.targets] if params.targets
            else log_paths(plan.profile, plan.project_dir, log_file), gpu=self.gpu, health=self.health,
            probes=params.probes, host=plan.host,
            processes=self.target.pids() if isinstance(self.target, TargetGroup) else None)
        if getattr(self.target, "log_copy", None) is not None:  # counted as it arrives, dropped bytes too
            for source in sampler.sources:  # the log counts and the disk growth
                if hasattr(source, "attach_copy"):
                    source.attach_copy(self.target.log_copy)
        recorder = Recorder(sampler, plan.samples_dir, interval_s=params.sampling.interval_s,
                            flush_s=params.sampling.flush_s, t0=t0, on_flush=self.events.flush)
        if self.health is not None:
            self.health.check_now()  # the first sample has an answer, not the probe's initial "no answer"
            self.health.start()
        target = self.target
        self.ctx = ctx = SoakContext(params=params, run_id=plan.run_id, run_dir=plan.run_dir,
                                     project_dir=plan.project_dir, profile=plan.profile, target=target, t0=t0,
                                     echo=self.echo, stop_event=self.stop_event, events=self.events,
                                     recorder=recorder, reference=plan.reference, llm_url=llm_url)
        self.obs.limits = target_limits(target.pid).to_json() if target.pid else {}
        ctx.event("target_started" if target.started else "target_attached", pid=target.pid, argv=target.argv,
                  message=f"{'started' if target.started else 'attached to'} pid {target.pid}")
        for f in self.failed:
            ctx.event("preflight_finding", check=f.check, message=f.message)
        self.echo(f"soak {params.soak}: run {plan.run_id} in {plan.run_dir} (target pid {target.pid})")
        return ctx

    # ------------------------------------------------------------------ the loop

    def loop(self, progress: bool) -> None:
        """Record samples; each row goes to the driver until it, the clock or the target ends it."""
        ctx, p = self.ctx, self.params
        assert ctx is not None and ctx.recorder is not None
        last_line = ctx.t0
        running = running_verdict(p)

        def on_row(row: dict[str, Any]) -> str | None:
            nonlocal last_line
            self.costs.append((row.get("t_s"), row.get("sample_cost_ms"), row.get("bytes_read"),
                               row.get("harness_cpu_pct")))
            if self.manifest and not (self.plan.run_dir / MANIFEST).exists():
                self._run_folder_removed(row)
            if self.health is not None:
                for t_mono, kind in self.health.drain_events():
                    ctx.events.add(kind, t_mono - ctx.t0, url=self.health.url,
                                   message=f"LLM health {kind.split('_')[1]}")
            for line in self.logs.new_error_lines:
                ctx.event("log_error", message=line)
            info = ctx.target.poll()
            if info is not None:
                self.obs.target_exit = {"returncode": info.returncode, "signal": info.signal,
                                        "exited_at_s": info.exited_at_mono - ctx.t0}
                ctx.event("target_exited", **self.obs.target_exit,
                          message=f"target exited on its own (code {info.returncode}, signal {info.signal})")
                self.echo(f"soak {p.soak}: the target exited on its own (code {info.returncode})")
                return "target_exited"
            done = self.driver.tick(ctx, row)
            stop = running is not None and running.add(row)
            if progress:
                sys.stderr.write("\r" + _progress_line(ctx, row, p.duration_s) + verdict_text(running))
                sys.stderr.flush()
            elif time.monotonic() - last_line >= PROGRESS_EVERY_S:
                self.echo(_progress_line(ctx, row, p.duration_s) + verdict_text(running))
                last_line = time.monotonic()
            if stop and running is not None:
                return running.announce(ctx)
            return "hook" if done else None

        recorder = ctx.recorder
        try:
            self.driver.setup(ctx)
            end = recorder.run(ctx.target.pid, on_row, duration_s=p.duration_s, stop_event=self.stop_event)
            self.obs.sampling = end.to_dict()
        finally:
            if progress:
                sys.stderr.write("\n")
            if not self.obs.sampling:
                self.obs.sampling = recorder.end("stopped").to_dict()
            self.obs.sampler_notes = dict(recorder.sampler.notes)
            self.obs.stop_on_fail = running.to_json() if running is not None else None
            self.obs.first_error_lines = list(self.logs.first_errors)

    # ------------------------------------------------------------------ the end

    def _finish_driver(self) -> None:
        ctx = self.ctx
        assert ctx is not None
        try:
            self.obs.observations = self.driver.finish(ctx) or {}
        except KeyboardInterrupt:
            self.obs.interrupted = True
            ctx.event("interrupted", message="interrupted while the soak was finishing")
        if ctx.halt is not None:
            self.obs.halt = ctx.halt.to_dict()

    def _stop_processes(self) -> None:
        params = self.params
        if self.health is not None:
            self.health.stop()
        target = self.target
        if target is not None and target.started:
            if target.is_running():
                stop = target.stop(timeout_s=min(10.0, params.target.halt.timeout_s), grace_s=2.0)
                if self.ctx is not None:
                    self.ctx.event("target_stopped", **stop.to_dict(), message="target stopped by the harness")
            target.terminate_tree(2.0)  # leftovers of the group / session
        if self.stub is not None:
            self.stub.stop(timeout_s=5.0, grace_s=1.0)
            self.stub.terminate_tree(1.0)
        self.gpu.close()

    def _run_folder_removed(self, row: dict[str, Any]) -> None:
        """Someone removed the run folder: say so, and write its manifest again (what follows is kept)."""
        at_s = float(row.get("t_s") or 0.0)
        self.obs.notes.append(f"the run folder was removed during the run (seen at {at_s:.1f} s): the samples "
                              "written before that are lost; those written after are kept")
        self.echo(f"soak {self.params.soak}: the run folder {self.plan.run_dir} was removed; writing it again")
        if self.ctx is not None:
            self.ctx.event("run_folder_removed", message=f"the run folder was removed (seen at {at_s:.1f} s)")
        atomic_write_json(self.plan.run_dir / MANIFEST, self.manifest)
        self.folder_removed = True

    def _last_words(self) -> None:
        """The target has exited: its last words are read and sampled (see ``faults.last_words``)."""
        if self.ctx is not None and self.target is not None and not self.obs.error:
            faults.last_words(self.ctx, self.target, self.logs, self.obs, LAST_WORDS_TIMEOUT_S)

    def _output_notes(self) -> None:
        """Notes on the copy of the target's output, the sampler's cost and unwritten samples."""
        self.obs.notes += faults.end_notes(self.obs, getattr(self.target, "log_copy", None),
                                           self.params.sampling.target_log_max_mb, self.costs)

    def _reset(self) -> None:
        close = getattr(self.driver, "close", None)  # e.g. soak C restores the operator's files
        if close is not None:
            try:
                close(self.ctx)
            except Exception as e:  # record it; the rest of the reset must run
                self.obs.notes.append(f"driver cleanup failed: {type(e).__name__}: {e}")
        removed: list[JSONValue] = []
        for p in self.plan.halt_paths:
            if p not in self.preexisting_halt and p.exists():
                try:
                    p.unlink()
                    removed.append(str(p))
                except OSError as e:
                    self.obs.notes.append(f"could not remove halt file {p}: {e}")
        target = self.target
        self.obs.reset = {"halt_files_removed": removed,
                          "target_left_running": bool(target is not None and target.started and target.is_running())}

    def finish(self, *, finish_driver: bool) -> None:
        """Driver finish, stop everything, the target's last words, reset state, write
        observations.json and the manifest (on a full disk: what still fits)."""
        obs = self.obs
        try:
            if self.ctx is not None and finish_driver:
                self._finish_driver()
        finally:
            self._stop_processes()
            try:
                self._last_words()
            except DiskFullError as e:
                self.disk_full = self.disk_full or e
            self._reset()
            obs.gpu_notes = list(self.gpu.notes)
            obs.llm = {"url": self.ctx.llm_url if self.ctx else None, "stub": self.stub is not None,
                       "outages": [list(w) for w in self.params.llm.outages]}
            self._output_notes()
            if self.ctx is not None:
                self.ctx.event("soak_finished", interrupted=obs.interrupted, message="soak finished")
            self._write_end()

    def _write_end(self) -> None:
        """Events, compaction, observations and manifest; on a full disk, what still fits."""
        obs, plan = self.obs, self.plan
        release_space(plan.run_dir)
        if self.disk_full is None:
            try:
                self.events.flush()
                try:  # one file instead of a part per flush; a crash here leaves the parts valid
                    compact_parts(plan.samples_dir)
                except OSError as e:
                    if e.errno in DISK_FULL_ERRNOS:
                        raise
                    obs.notes.append(f"sample part files left as they are (compaction failed: {e})")
                obs.write(plan.run_dir)
                partial = obs.interrupted or obs.error is not None or self.folder_removed
                finish_manifest(plan.run_dir, complete=not partial, interrupted=obs.interrupted, error=obs.error)
                return
            except OSError as e:
                if e.errno not in DISK_FULL_ERRNOS:
                    raise
                self.disk_full = faults.as_disk_full(e, plan.run_dir)
        obs.error = obs.error or f"DiskFullError: {self.disk_full}"
        for write in (self.events.flush, lambda: obs.write(plan.run_dir),  # no compaction: it needs the space
                      lambda: finish_manifest(plan.run_dir, complete=False, interrupted=False, error=obs.error)):
            with contextlib.suppress(OSError):
                write()


def run_soak(params: SoakParams, *, echo: Callable[[str], None] | None = None, progress: bool = False,
             driver: Driver | None = None, stop_event: threading.Event | None = None,
             data_dir: Path | None = None) -> SoakResult:
    """Run one soak (see the module docstring); never leaves a process behind.

    Raises ``ParameterError`` (exit 2) for bad parameters or an unknown soak, ``TargetError``
    (exit 3) when the preflight refuses or the target cannot be started/found, and a
    driver's ``ProtocolError`` (exit 1) after writing what the run has. Ctrl-C returns a
    result with ``interrupted`` True. Samples and events go to this host's partition,
    ``samples/host={host}/`` and ``events/host={host}/``, of the run folder, or of ``data_dir``
    (a fleet's shared folder, where every host's soak writes its own partition).
    """
    params.validate()
    echo = echo or (lambda _s: None)
    driver = driver or driver_for(params.soak)
    plan = plan_run(params, data_dir)
    if plan.reference:
        plan.project_dir.mkdir(parents=True, exist_ok=True)
    ref_instance = ["-m", REFERENCE_MODULE, "--project-dir", str(plan.project_dir)]
    attach = params.target.pid is not None or params.target.match is not None
    findings = pf.soak_preflight(
        params, plan.project_dir, halt_paths=plan.halt_paths,
        instance_argv=None if attach else (ref_instance if plan.reference else list(params.target.command or [])),
        check_llm=not plan.start_stub, watcher_daemon=not plan.reference)
    failed = pf.enforce(findings, params.force)
    warnings = [f for f in findings if f.warn]
    for f in warnings:
        echo(f"soak {params.soak}: preflight warning: {f.message}" + (f" ({f.fix})" if f.fix else ""))
    manifest = start_manifest(plan.run_dir, plan.run_id, f"watcher-{params.soak}", soak=params.soak,
                   parameters=to_dict(params), environment=environment(), project_dir=str(plan.project_dir),
                   profile=plan.profile.name, reference_daemon=plan.reference,
                   preflight=[f.to_dict() for f in findings], host=plan.host,
                   data_dir=str(plan.data_dir) if plan.data_dir is not None else None)
    reserve_space(plan.run_dir, RESERVE_BYTES)
    soak = _Soak(params, plan, driver, echo, stop_event or threading.Event(), failed)
    soak.manifest = manifest
    obs = soak.obs
    obs.notes += [f"preflight warning: {f.message}" for f in warnings]
    try:
        soak.start()
        soak.loop(progress)
    except KeyboardInterrupt:
        obs.interrupted = True
        if soak.ctx is not None:
            soak.ctx.event("interrupted", message="interrupted (Ctrl-C / SIGTERM): samples flushed, target stopped")
    except ProtocolError as e:
        obs.error = f"ProtocolError: {e}"
        if soak.ctx is not None:
            soak.ctx.event("protocol_error", message=str(e))
        e.run_dir = e.run_dir or str(plan.run_dir)
        soak.finish(finish_driver=False)
        raise
    except BaseException as err:
        full = faults.as_disk_full(err, plan.run_dir)  # ENOSPC / EDQUOT, from the recorder or anywhere
        obs.error = f"{type(full or err).__name__}: {full or err}"
        if full is not None:
            soak.disk_full = full
            if soak.ctx is not None:
                soak.ctx.event("disk_full", message=str(full))
        soak.finish(finish_driver=False)
        if full is not None:
            raise faults.tell_disk_full(full, plan.run_dir) from None
        raise
    soak.finish(finish_driver=not obs.interrupted)
    if soak.disk_full is not None:  # the disk filled while the soak was finishing
        raise faults.tell_disk_full(soak.disk_full, plan.run_dir)
    return SoakResult(plan.run_id, plan.run_dir, params.soak, obs.interrupted, obs.target_exit,
                      obs.observations, obs.error)

"""Fleet soaks: one soak per host, all writing one run folder, judged as a fleet.

``run_fleet`` plans the fleet run ``{output_dir}/{run_id}/``: each host's soak keeps its own
folder ``hosts/{host}/`` (manifest, target log, observations, project) and writes its
samples and events into the shared partitions ``samples/host={host}/`` and
``events/host={host}/`` (no two hosts write one file, so samplers on many machines share one
network folder without contention). On ``local`` each host's soak runs in a thread of this
process (N reference daemons on one machine); on ``dask://HOST:PORT`` each runs on the worker
named after its host, pinned there. Progress lines come back as they happen (Dask: worker
events on a topic). A host that has no worker, whose soak cannot start or whose worker is
lost is recorded in the manifest's ``host_status`` as FAIL with the reason (its soak is not
retried elsewhere), and the wait for the others goes on; every wait has a deadline.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor
from concurrent.futures import wait as wait_local
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soaklib.errors import ParameterError, SoakError
from soaklib.fleet.cluster import ExecutorError, ExecutorSpec, WorkerInfo, connect, parse_executor, submit_pinned
from soaklib.fleet.cluster import workers as list_workers
from soaklib.fleet.verdict import HOSTS_DIR
from soaklib.params import SoakParams, from_dict, merge, to_dict
from soaklib.parts import check_host
from soaklib.soak import registry
from soaklib.store import MANIFEST, finish_manifest, run_dir_for, start_manifest, utc_stamp

POLL_S = 0.5
_REGISTRY_LOCK = threading.Lock()  # the soak registry loads its built-in types on first use: once
#: a host's soak must end within duration_s + halt timeout + this (start, preflight, finish)
END_MARGIN_S = 120.0


@dataclass
class HostOutcome:
    """How one host's soak ended (status FAIL with a reason when it never ran to its end)."""

    host: str
    status: str  # "OK" | "FAIL"
    reason: str | None = None
    worker: str | None = None
    run_dir: str | None = None
    interrupted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason, "worker": self.worker, "run_dir": self.run_dir,
                "interrupted": self.interrupted}


@dataclass
class FleetRun:
    """A fleet run: its folder and each host's outcome."""

    run_id: str
    run_dir: Path
    soak: str
    executor: str
    hosts: list[HostOutcome] = field(default_factory=list)

    def outcome(self, host: str) -> HostOutcome:
        return next(h for h in self.hosts if h.host == host)


def host_params(base: SoakParams, host: str, fleet_dir: Path, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The parameters of ``host``'s soak as a plain dict (what travels to its worker)."""
    data = to_dict(base)
    data.update(run_id=host, output_dir=str(fleet_dir / HOSTS_DIR), host=host)
    if overrides:
        data = merge(data, dict(overrides))
    from_dict(SoakParams, data).validate()  # a bad per-host override is refused before anything starts
    return data


def soak_on_host(params: dict[str, Any], data_dir: str, *, topic: str | None = None,
                 stop_name: str | None = None, stop: threading.Event | None = None,
                 say: Callable[[str], None] | None = None) -> HostOutcome:
    """Run one host's soak here (in a Dask worker or a local thread) and say how it ended;
    ``stop`` (local) or the distributed Event ``stop_name`` (Dask) ends it early (Ctrl-C).

    Never raises for the soak's own failures: they come back as a FAIL outcome with the
    reason, so the fleet records them beside the other hosts.
    """
    from soaklib.soak.harness import run_soak

    host = str(params.get("host"))
    with _REGISTRY_LOCK:
        registry.get(str(params.get("soak")))
    stop = stop or threading.Event()
    echo: Callable[[str], None] = (lambda line: say(f"[{host}] {line}")) if say else (lambda line: None)
    done = threading.Event()
    worker = None
    if topic is not None:
        from distributed import get_worker

        worker = get_worker()
        echo = lambda line: worker.log_event(topic, {"host": host, "line": line})  # noqa: E731
        if stop_name is not None:
            threading.Thread(target=_watch_stop, args=(stop_name, stop, done), daemon=True).start()
    try:
        result = run_soak(from_dict(SoakParams, params), echo=echo, stop_event=stop, data_dir=Path(data_dir))
        return HostOutcome(host, "FAIL" if result.error else "OK", result.error,
                           worker.address if worker else None, str(result.run_dir), result.interrupted)
    except SoakError as e:
        return HostOutcome(host, "FAIL", f"{type(e).__name__}: {e}", worker.address if worker else None)
    except Exception as e:
        return HostOutcome(host, "FAIL", f"{type(e).__name__}: {e}", worker.address if worker else None)
    finally:
        done.set()


def _watch_stop(name: str, stop: threading.Event, done: threading.Event) -> None:
    """Set ``stop`` when the fleet's distributed Event ``name`` is set (Ctrl-C on the client)."""
    from distributed import Event

    ev = Event(name)
    while not done.is_set():
        try:
            if ev.wait(timeout=1.0):
                stop.set()
                return
        except Exception:
            return


def plan_fleet(soak: str, hosts: list[str], base: SoakParams, *, run_id: str | None,
               per_host: Mapping[str, Mapping[str, Any]] | None) -> tuple[str, Path, dict[str, dict[str, Any]]]:
    """Run id, folder and each host's parameters; refuses bad hosts and an existing run (exit 2)."""
    registry.get(soak)  # an unknown soak is refused here (exit 2), before any host starts
    if not hosts:
        raise ParameterError("--hosts is empty: name at least one host", key="hosts")
    for h in hosts:
        check_host(h)
    if len(set(hosts)) != len(hosts):
        raise ParameterError(f"--hosts names a host twice: {','.join(hosts)}", key="hosts", value=hosts)
    unknown = sorted(set(per_host or {}) - set(hosts))
    if unknown:
        raise ParameterError(f"per-host parameters for {unknown[0]!r}, which is not in --hosts", key="hosts")
    rid = run_id or base.run_id or f"fleet-{soak}-{utc_stamp()}"
    fleet_dir = run_dir_for(base.output_dir, rid)
    if (fleet_dir / MANIFEST).exists():
        raise ParameterError(f"run folder {fleet_dir} already exists: choose another run id (--run-id)",
                             key="run_id", value=rid)
    params = {h: host_params(base, h, fleet_dir, (per_host or {}).get(h)) for h in hosts}
    return rid, fleet_dir, params


def run_fleet(soak: str, hosts: list[str], base: SoakParams, *, executor: str | ExecutorSpec = "local",
              run_id: str | None = None, per_host: Mapping[str, Mapping[str, Any]] | None = None,
              echo: Callable[[str], None] | None = None) -> FleetRun:
    """Run soak ``soak`` on every host (see the module docstring); returns each host's outcome."""
    spec = executor if isinstance(executor, ExecutorSpec) else parse_executor(executor)
    base = from_dict(SoakParams, to_dict(base) | {"soak": soak}).validate()
    rid, fleet_dir, params = plan_fleet(soak, hosts, base, run_id=run_id, per_host=per_host)
    say = echo or (lambda _s: None)
    start_manifest(fleet_dir, rid, f"fleet-{soak}", soak=soak, hosts=hosts, executor=str(spec),
                   parameters=to_dict(base), per_host={h: dict(v) for h, v in (per_host or {}).items()})
    deadline_s = base.duration_s + base.target.halt.timeout_s + END_MARGIN_S
    run = FleetRun(rid, fleet_dir, soak, str(spec))
    interrupted = False
    try:
        if spec.kind == "dask":
            run.hosts = _run_dask(spec, params, fleet_dir, rid, deadline_s, say)
        else:
            run.hosts = _run_local(params, fleet_dir, deadline_s, say)
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        finish_manifest(fleet_dir, complete=not interrupted and bool(run.hosts), interrupted=interrupted,
                        host_status={h.host: h.to_dict() for h in run.hosts})
    return run


def _run_local(params: dict[str, dict[str, Any]], fleet_dir: Path, deadline_s: float,
               say: Callable[[str], None]) -> list[HostOutcome]:
    out: dict[str, HostOutcome] = {}
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=len(params), thread_name_prefix="fleet") as pool:
        futures = {pool.submit(soak_on_host, p, str(fleet_dir), stop=stop, say=say): h for h, p in params.items()}
        pending = set(futures)
        end = time.monotonic() + deadline_s
        try:
            while pending and time.monotonic() < end:
                done, pending = wait_local(pending, timeout=POLL_S, return_when=FIRST_COMPLETED)
                for f in done:
                    out[futures[f]] = f.result()
                    say(f"fleet: {futures[f]} {out[futures[f]].status}")
        except KeyboardInterrupt:
            stop.set()  # every soak flushes, stops its target and returns; the pool waits for them
            raise
        for f in pending:  # past the deadline: record it (the soak's own timeouts end its thread)
            out[futures[f]] = HostOutcome(futures[f], "FAIL", f"no result within {deadline_s:.0f} s")
    return [out[h] for h in params]


def _run_dask(spec: ExecutorSpec, params: dict[str, dict[str, Any]], fleet_dir: Path, rid: str,
              deadline_s: float, say: Callable[[str], None]) -> list[HostOutcome]:
    from distributed import Event

    client = connect(spec)
    topic, stop_name = f"soaklib-fleet-{rid}", f"soaklib-fleet-stop-{rid}"
    out: dict[str, HostOutcome] = {}
    try:
        known = list_workers(client)
        client.subscribe_topic(topic, lambda ev: say(f"[{ev[1]['host']}] {ev[1]['line']}"))
        stop = Event(stop_name, client=client)
        futures: dict[Any, tuple[str, WorkerInfo]] = {}
        for host, p in params.items():
            w = known.get(host)
            if w is None:
                out[host] = HostOutcome(host, "FAIL", f"no Dask worker named {host!r} at {spec} (workers: "
                                        f"{', '.join(sorted(known)) or 'none'}); start one with "
                                        f"`dask worker {spec.address} --name {host}` on that machine")
                say(f"fleet: {host} FAIL ({out[host].reason})")
                continue
            f = submit_pinned(client, w, soak_on_host, p, str(fleet_dir), topic=topic, stop_name=stop_name,
                              key=f"soak-{rid}-{host}")
            futures[f] = (host, w)
        pending = set(futures)
        end = time.monotonic() + deadline_s
        try:
            while pending and time.monotonic() < end:
                time.sleep(POLL_S)
                done = {f for f in pending if f.done()}
                pending -= done
                for f in done:
                    host, w = futures[f]
                    out[host] = _result(f, host, w)
                    say(f"fleet: {host} {out[host].status}")
                alive = {w.address for w in list_workers(client).values()}
                for f in list(pending):
                    host, w = futures[f]
                    if w.address not in alive:
                        f.cancel()
                        pending.discard(f)
                        out[host] = HostOutcome(host, "FAIL", f"Dask worker {w.name} ({w.address}) was lost during "
                                                "the soak; the samples it flushed are kept", w.address)
                        say(f"fleet: {host} FAIL ({out[host].reason})")
        except KeyboardInterrupt:
            stop.set()
            raise
        for f in pending:
            host, w = futures[f]
            f.cancel()
            out[host] = HostOutcome(host, "FAIL", f"no result from worker {w.name} within {deadline_s:.0f} s", w.address)
    finally:
        client.close(timeout=10)
    return [out[h] for h in params]


def _result(future: Any, host: str, worker: WorkerInfo) -> HostOutcome:
    try:
        res = future.result(timeout=30)
    except Exception as e:
        return HostOutcome(host, "FAIL", f"{type(e).__name__}: {e}", worker.address)
    if isinstance(res, HostOutcome):
        res.worker = res.worker or worker.address
        return res
    raise ExecutorError(f"worker {worker.name} returned {type(res).__name__}, not a soak outcome")


def fleet_inputs(params_file: str | None, sets: list[str], host_sets: list[str], hosts: list[str] | None,
                 overrides: Mapping[str, Any]) -> tuple[SoakParams, list[str], dict[str, dict[str, Any]]]:
    """The base parameters, the hosts and each host's overrides, from a parameter file (a soak's
    keys, plus an optional ``fleet: {hosts: [...], per_host: {HOST: {key: value}}}``), ``--set
    KEY=VALUE`` and ``--set-host HOST:KEY=VALUE``; ``hosts`` (``--hosts``) wins over the file's."""
    from soaklib.params import NOTEBOOK_KEYS, load_params, parse_override, read_yaml, set_path

    data: dict[str, Any] = read_yaml(params_file) if params_file else {}
    data = {k: v for k, v in data.items() if k not in NOTEBOOK_KEYS}
    fleet = data.pop("fleet", None) or {}
    if not isinstance(fleet, dict) or set(fleet) - {"hosts", "per_host"}:
        raise ParameterError("fleet: expected a mapping with hosts and per_host", key="fleet", value=fleet)
    per_host: dict[str, dict[str, Any]] = {str(h): dict(v or {}) for h, v in (fleet.get("per_host") or {}).items()}
    for item in host_sets:
        host, sep, rest = item.partition(":")
        if not sep or not host:
            raise ParameterError(f"--set-host {item!r} is invalid: expected HOST:KEY=VALUE", key="set-host", value=item)
        keys, value = parse_override(rest)
        per_host[host] = set_path(per_host.get(host, {}), keys, value)
    names = list(hosts) if hosts else [str(h) for h in fleet.get("hosts") or []]
    base = load_params(SoakParams, overrides=merge(data, dict(overrides)), sets=list(sets))
    return base, names, per_host


def run_and_judge(soak: str, hosts: list[str], base: SoakParams, *, executor: str = "local",
                  run_id: str | None = None, per_host: Mapping[str, Mapping[str, Any]] | None = None,
                  echo: Callable[[str], None] | None = None) -> tuple[FleetRun, dict[str, Path], str]:
    """``soak fleet``: run the fleet, write its signoff; returns the run, the paths and the verdict."""
    from soaklib.fleet.report import write_fleet_signoff
    from soaklib.fleet.verdict import fleet_verdict

    run = run_fleet(soak, hosts, base, executor=executor, run_id=run_id, per_host=per_host, echo=echo)
    fv = fleet_verdict(run.run_dir)
    return run, write_fleet_signoff(fv), fv.verdict

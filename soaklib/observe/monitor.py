"""``soak monitor``: a psrecord-like recorder of any process tree (CPU, memory, FDs, VRAM).

Attach to a process (pid or command-line pattern) or start a command in its own process
group, sample its tree on absolute monotonic deadlines, and flush parquet part files to
``{out_dir}/samples/`` every ``flush_s``: a recording killed at any moment keeps every
flushed sample. The recording ends when the duration or sample count is reached, when the
process exits (a normal end, recorded in the manifest) or when ``stop_event`` is set.
The PNG is drawn by the CLI through the report package.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Mapping

import pyarrow as pa

from soaklib.errors import ParameterError
from soaklib.observe.gpu import GpuReader
from soaklib.observe.sampler import ProcessTree, Ticker, process_tree_metrics, sample_schema
from soaklib.proc.target import Target
from soaklib.parts import PartWriter
from soaklib.store import finish_manifest, start_manifest, utc_now

KIND = "monitor"
_INT_NAMES = ("_bytes", "threads", "children", "_fds", "_count", "pid")
_FLOAT_NAMES = ("_pct", "_s", "_ms")
_KNOWN = {f.name: f.type for f in sample_schema()}  # same names and types as soak samples


def _arrow_type(name: str, value: Any) -> pa.DataType:
    """Column type of a soak sample column, else from the unit in the name or the first value."""
    if name in _KNOWN:
        return _KNOWN[name]
    if isinstance(value, bool):
        return pa.bool_()
    if name.endswith(_FLOAT_NAMES):
        return pa.float64()
    if isinstance(value, int) or name.endswith(_INT_NAMES):
        return pa.int64()
    if isinstance(value, float):
        return pa.float64()
    return pa.string()


def schema_for(row: Mapping[str, Any]) -> pa.Schema:
    """A stable schema for monitor rows, so every part file has the same column types."""
    return pa.schema([(k, _arrow_type(k, v)) for k, v in row.items()])


def _check(interval_s: float, duration_s: float | None, samples: int | None, flush_s: float,
           sources: int) -> None:
    if sources != 1:
        raise ParameterError("soak monitor needs exactly one of --pid, --match or a command after --",
                             key="target")
    if not interval_s > 0:
        raise ParameterError(f"interval_s = {interval_s!r} is invalid: expected seconds > 0", key="interval_s",
                             value=interval_s)
    if duration_s is not None and not duration_s > 0:
        raise ParameterError(f"duration_s = {duration_s!r} is invalid: expected seconds > 0", key="duration_s",
                             value=duration_s)
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or samples < 1):
        raise ParameterError(f"samples = {samples!r} is invalid: expected an integer >= 1", key="samples",
                             value=samples)
    if not flush_s > 0:
        raise ParameterError(f"flush_s = {flush_s!r} is invalid: expected seconds > 0", key="flush_s", value=flush_s)


def record(*, pid: int | None = None, match: str | None = None, command: list[str] | None = None,
           interval_s: float = 1.0, duration_s: float | None = None, samples: int | None = None,
           out_dir: str | os.PathLike[str], flush_s: float = 10.0, cwd: str | os.PathLike[str] | None = None,
           env: Mapping[str, str] | None = None, uss: bool = False, gpu: GpuReader | None = None,
           stop_event: threading.Event | None = None) -> Path:
    """Record a process tree into ``out_dir`` (``samples/part-*.parquet``, ``run.json``) and return it.

    Exactly one of ``pid``, ``match`` (regex on the command line) or ``command`` (an argv,
    started with output to ``out_dir/target.log`` and stopped at the end). Without
    ``duration_s`` or ``samples`` it records until the process exits or ``stop_event`` is
    set. Ctrl-C flushes, completes the manifest (``end_reason: interrupted``) and re-raises.
    """
    _check(interval_s, duration_s, samples, flush_s, sum(x is not None for x in (pid, match, command)))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if command is not None:
        target = Target.start(list(command), cwd=cwd, env=env, log_path=out / "target.log")
    else:
        target = Target.attach(pid=pid, match=match)
    own_gpu = gpu is None
    reader = GpuReader() if gpu is None else gpu
    with target:
        start_manifest(out, out.name, KIND, target={"pid": target.pid, "argv": target.argv,
                                                    "started": target.started, "match": match},
                       interval_s=interval_s, duration_s=duration_s, samples=samples, flush_s=flush_s)
        end: dict[str, Any] = {"end_reason": "error", "complete": False}
        writer = PartWriter(out / "samples")
        ticker = Ticker(interval_s)
        try:
            end = _loop(target, reader, writer, ticker, duration_s, samples, flush_s, uss, stop_event, out.name)
        except KeyboardInterrupt:
            end = {"end_reason": "interrupted", "interrupted": True}
            raise
        except BaseException as e:
            end = {"end_reason": "error", "complete": False, "error": f"{type(e).__name__}: {e}"}
            raise
        finally:
            _finish(out, target, reader, writer, ticker, end)
            if own_gpu:
                reader.close()
    return out


def _loop(target: Target, reader: GpuReader, writer: PartWriter, ticker: Ticker, duration_s: float | None,
          samples: int | None, flush_s: float, uss: bool, stop_event: threading.Event | None,
          run_id: str) -> dict[str, Any]:
    """Sample until an end condition; return how the recording ended."""
    host = socket.gethostname()
    tree = ProcessTree(uss=uss)
    last_flush = ticker.t0
    lag_s = 0.0
    while True:
        if target.poll() is not None:
            return {"end_reason": "target_exited"}
        started = time.monotonic()
        row: dict[str, Any] = {"run_id": run_id, "host": host, "ts": utc_now(), "t_s": started - ticker.t0,
                               "lag_s": lag_s, "pid": target.pid}
        row.update(process_tree_metrics(target.pid, uss=uss, tree=tree))
        if not row.get("alive"):
            target.poll()
            return {"end_reason": "target_exited"}
        row.update(reader.read(tree.pids))
        if writer.schema is None:
            writer.schema = schema_for(row)
        writer.append(row)
        if samples is not None and writer.rows_written + writer.pending >= samples:
            return {"end_reason": "samples"}
        if time.monotonic() - last_flush >= flush_s:
            writer.flush()
            last_flush = time.monotonic()
        if duration_s is not None and ticker.next_deadline - ticker.t0 > duration_s + 1e-9:
            return {"end_reason": "duration"}
        lag_s = ticker.wait(stop_event)
        if stop_event is not None and stop_event.is_set():
            return {"end_reason": "stopped"}


def _finish(out: Path, target: Target, reader: GpuReader, writer: PartWriter, ticker: Ticker,
            end: dict[str, Any]) -> None:
    """Flush what is buffered, stop a started target, and complete the manifest."""
    try:
        writer.flush()
    finally:
        extra: dict[str, Any] = dict(end)
        if target.started and target.is_running():
            extra["stop"] = target.stop(timeout_s=5.0, grace_s=2.0).to_dict()
        info = target.poll()
        if info is not None and end.get("end_reason") == "target_exited":
            extra["exit"] = {"returncode": info.returncode, "signal": info.signal}
        extra.update(samples_written=writer.rows_written, parts_written=writer.parts_written,
                     max_lag_s=ticker.max_lag_s, skipped_ticks=ticker.skipped, gpu_notes=list(reader.notes))
        finish_manifest(out, **extra)

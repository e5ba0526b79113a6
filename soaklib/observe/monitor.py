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
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from soaklib.errors import ParameterError
from soaklib.observe.gpu import GpuReader
from soaklib.observe.recorder import Recorder
from soaklib.observe.sampler import Sampler
from soaklib.observe.sources import GpuSource, ProcessSource
from soaklib.parts import compact_parts
from soaklib.proc.target import Target
from soaklib.store import finish_manifest, start_manifest

KIND = "monitor"


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
        sampler = Sampler([ProcessSource(uss=uss), GpuSource(reader)], run_id=out.name)
        recorder = Recorder(sampler, out / "samples", interval_s=interval_s, flush_s=flush_s)

        def on_row(row: Mapping[str, Any]) -> str | None:
            return "target_exited" if not row.get("alive") or target.poll() is not None else None

        end: dict[str, Any] = {"end_reason": "error", "complete": False}
        try:
            end = recorder.run(target.pid, on_row, duration_s=duration_s, max_samples=samples,
                               stop_event=stop_event).to_dict()
        except KeyboardInterrupt:
            end = {**recorder.end("stopped").to_dict(), "end_reason": "interrupted", "interrupted": True}
            raise
        except BaseException as e:
            end = {**recorder.end("stopped").to_dict(), "end_reason": "error", "complete": False,
                   "error": f"{type(e).__name__}: {e}"}
            raise
        finally:
            _finish(out, target, reader, recorder, end)
            if own_gpu:
                reader.close()
    return out


def _finish(out: Path, target: Target, reader: GpuReader, recorder: Recorder, end: dict[str, Any]) -> None:
    """Stop a started target, compact the parts and complete the manifest."""
    extra: dict[str, Any] = dict(end)
    if target.started and target.is_running():
        extra["stop"] = target.stop(timeout_s=5.0, grace_s=2.0).to_dict()
    info = target.poll()
    if info is not None and end.get("end_reason") == "target_exited":
        extra["exit"] = {"returncode": info.returncode, "signal": info.signal}
    extra["gpu_notes"] = list(reader.notes)
    extra["sampler_notes"] = dict(recorder.sampler.notes)
    try:
        compact_parts(out / "samples")
    except OSError as e:
        extra["compaction_error"] = str(e)
    finish_manifest(out, **extra)

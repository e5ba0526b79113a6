"""The executors work can run on: ``local`` (this machine) or ``dask://HOST:PORT`` (a Dask
distributed scheduler and its workers, one worker per host, started with ``--name HOST``).

Only what soaklib needs from Dask lives here: parsing the executor's address, connecting
with a timeout, the workers by name (a host's name is its worker's name), and submitting a
function pinned to one worker. Dask is imported only when a ``dask://`` executor is used.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from soaklib.errors import EXIT_TARGET, ParameterError, SoakError

LOCAL = "local"
DASK_RE = re.compile(r"^dask://([A-Za-z0-9_.\-\[\]:]+):(\d{1,5})$")
CONNECT_TIMEOUT_S = 15.0


class ExecutorError(SoakError):
    """The executor cannot be reached or has no worker for a host (exit 3: fix the cluster)."""

    exit_code = EXIT_TARGET


@dataclass(frozen=True)
class ExecutorSpec:
    """``local`` or the scheduler's address (``tcp://HOST:PORT``)."""

    kind: str  # "local" | "dask"
    address: str | None = None

    def __str__(self) -> str:
        return LOCAL if self.kind == LOCAL else f"dask://{(self.address or '').removeprefix('tcp://')}"


def parse_executor(spec: str | None) -> ExecutorSpec:
    """``local`` (or None) → local; ``dask://HOST:PORT`` → the scheduler at tcp://HOST:PORT."""
    if spec is None or spec == LOCAL:
        return ExecutorSpec(LOCAL)
    m = DASK_RE.match(spec)
    if m is None or not 0 < int(m.group(2)) < 65536:
        raise ParameterError(f"--executor {spec!r} is invalid: expected 'local' or dask://HOST:PORT "
                             "(the Dask scheduler's address, e.g. dask://10.0.0.5:8786)", key="executor", value=spec)
    return ExecutorSpec("dask", f"tcp://{m.group(1)}:{m.group(2)}")


def connect(spec: ExecutorSpec, *, timeout_s: float = CONNECT_TIMEOUT_S) -> Any:
    """A ``distributed.Client`` of the scheduler (ExecutorError when it does not answer in time)."""
    if spec.kind != "dask" or spec.address is None:
        raise ParameterError("connect() needs a dask:// executor", key="executor", value=str(spec))
    from distributed import Client

    try:
        return Client(spec.address, timeout=f"{timeout_s}s", set_as_default=False)
    except (OSError, TimeoutError) as e:
        raise ExecutorError(f"the Dask scheduler at {spec.address} did not answer within {timeout_s:g} s "
                            f"({type(e).__name__}: {e}): start it (dask scheduler) or fix --executor") from None


@dataclass(frozen=True)
class WorkerInfo:
    """One Dask worker: its address, its name (the host it stands for) and its machine."""

    address: str
    name: str
    host: str
    nthreads: int
    resources: dict[str, float]


def workers(client: Any) -> dict[str, WorkerInfo]:
    """The scheduler's workers by name (a worker started without ``--name`` is named by address)."""
    info = client.scheduler_info(n_workers=-1)["workers"]
    out: dict[str, WorkerInfo] = {}
    for addr, w in info.items():
        name = str(w.get("name", addr))
        out[name] = WorkerInfo(addr, name, str(w.get("host", "")), int(w.get("nthreads", 1)),
                               dict(w.get("resources") or {}))
    return out


def submit_pinned(client: Any, worker: WorkerInfo, fn: Any, *args: Any, key: str, **kwargs: Any) -> Any:
    """Submit ``fn(*args, **kwargs)`` to run on ``worker`` only, once (no retry by Dask: a lost
    worker is the caller's finding, not a reason to run a soak twice)."""
    return client.submit(fn, *args, key=key, workers=[worker.address], allow_other_workers=False, pure=False,
                         retries=0, **kwargs)

"""NVML readings (pynvml, package ``nvidia-ml-py``): "unavailable" is a value, never a crash.

Degrades per metric, like gpustat: a metric the device does not support is null and the
others are kept; no driver gives a row of nulls with ``gpu_available`` False; a GPU lost
mid-soak gives null rows (no exception) and NVML is re-initialised at most every
``retry_s``. Each condition is described once, in the ``gpu_note`` of the reading where
it first appears, and kept in ``GpuReader.notes``.
"""
from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from typing import Any

COLUMNS = ("gpu_available", "gpu_count", "gpu_used_bytes", "gpu_total_bytes", "gpu_util_pct",
           "gpu_target_bytes", "gpu_note")
NOT_SUPPORTED = 3  # NVML_ERROR_NOT_SUPPORTED
NO_PERMISSION = 4  # NVML_ERROR_NO_PERMISSION
_DOWN = ("GPU lost", "NVML unavailable")


def _empty() -> dict[str, Any]:
    return {c: None for c in COLUMNS} | {"gpu_available": False}


def _load_pynvml() -> Any:
    import pynvml  # imported lazily: a missing driver must not break importing soaklib

    return pynvml


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class GpuReader:
    """Reads device and per-process GPU memory through NVML, lazily initialised.

    ``nvml`` is a module-like object (default: ``pynvml``) so tests can inject a fake.
    ``index`` restricts the device columns to one device (default: all devices, memory
    summed, utilisation averaged); the target's VRAM is always summed over all devices.
    """

    def __init__(self, nvml: Any = None, index: int | None = None, *, retry_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._nvml = nvml
        self.index = index
        self.retry_s = retry_s
        self._clock = clock
        self._ready = False
        self._next_try = 0.0
        self._noted: set[str] = set()
        self._pending: list[str] = []
        self.notes: list[str] = []

    # ------------------------------------------------------------------ notes

    def _note(self, text: str) -> None:
        if text not in self._noted:
            self._noted.add(text)
            self.notes.append(text)
            self._pending.append(text)

    def _take_notes(self) -> str | None:
        text = "; ".join(self._pending) or None
        self._pending = []
        return text

    # ------------------------------------------------------------------ error kinds

    def _is(self, err: BaseException, name: str, code: int) -> bool:
        cls = getattr(self._nvml, name, None)
        if isinstance(cls, type) and isinstance(err, cls):
            return True
        return getattr(err, "value", None) == code

    def _optional(self, err: BaseException) -> bool:
        """An error that only blanks one metric (not supported / not permitted)."""
        return self._is(err, "NVMLError_NotSupported", NOT_SUPPORTED) or self._is(
            err, "NVMLError_NoPermission", NO_PERMISSION)

    # ------------------------------------------------------------------ lifecycle

    def _init(self) -> bool:
        if self._ready:
            return True
        now = self._clock()
        if now < self._next_try:
            return False
        self._next_try = now + self.retry_s
        try:
            if self._nvml is None:
                self._nvml = _load_pynvml()
            self._nvml.nvmlInit()
        except Exception as e:  # any failure means "unavailable"
            self._note(f"NVML unavailable: {_text(e) or type(e).__name__}")
            return False
        self._ready = True
        down = {n for n in self._noted if n.startswith(_DOWN)}
        if down:  # recovered: a later outage is news again
            self._noted -= down
            self._note("NVML available again")
        return True

    def _lost(self, err: BaseException) -> None:
        self._noted.discard("NVML available again")
        self._note(f"GPU lost: {_text(err) or type(err).__name__}; retrying NVML every {self.retry_s:g} s")
        self._ready = False
        self._next_try = self._clock() + self.retry_s
        try:
            self._nvml.nvmlShutdown()
        except Exception:
            pass

    def close(self) -> None:
        """Shut NVML down (safe to call twice)."""
        if self._ready:
            self._ready = False
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass

    def __enter__(self) -> GpuReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reading

    def read(self, pids: Iterable[int] = ()) -> dict[str, Any]:
        """One reading: device memory and utilisation, and the VRAM held by ``pids``.

        Keys: ``gpu_available gpu_count gpu_used_bytes gpu_total_bytes gpu_util_pct
        gpu_target_bytes gpu_note``; never raises for NVML trouble.
        """
        row = _empty()
        if not self._init():
            row["gpu_note"] = self._take_notes()
            return row
        try:
            self._read_into(row, set(pids))
        except Exception as e:  # GPU lost, driver gone, anything: a null row
            self._lost(e)
            row = _empty()
        row["gpu_note"] = self._take_notes()
        return row

    def _metric(self, name: str, fn: Callable[[], Any]) -> tuple[bool, Any]:
        """Call ``fn``; (False, None) when the metric is unsupported; other errors propagate."""
        try:
            return True, fn()
        except Exception as e:
            if self._optional(e):
                self._note(f"{name} not supported: {_text(e)}")
                return False, None
            raise

    def _read_into(self, row: dict[str, Any], pids: set[int]) -> None:
        nv = self._nvml
        count = int(nv.nvmlDeviceGetCount())
        row["gpu_count"] = count
        if count == 0:
            self._note("NVML reports no GPU device")
            return
        handles = [nv.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        devices = [handles[self.index]] if self.index is not None and self.index < count else handles
        if self.index is not None and self.index >= count:
            self._note(f"GPU index {self.index} does not exist ({count} device(s)); reading all")
        used = total = 0
        mem_ok = True
        utils: list[float] = []
        util_ok = True
        for h in devices:
            ok, mem = self._metric("memory info", functools.partial(nv.nvmlDeviceGetMemoryInfo, h))
            if ok:
                used += int(mem.used)
                total += int(mem.total)
            mem_ok = mem_ok and ok
            ok, util = self._metric("utilization", functools.partial(nv.nvmlDeviceGetUtilizationRates, h))
            if ok:
                utils.append(float(util.gpu))
            util_ok = util_ok and ok
        row["gpu_used_bytes"] = used if mem_ok else None
        row["gpu_total_bytes"] = total if mem_ok else None
        row["gpu_util_pct"] = sum(utils) / len(utils) if util_ok and utils else None
        row["gpu_target_bytes"] = self._target_bytes(handles, pids) if pids else None
        row["gpu_available"] = True

    def _target_bytes(self, handles: list[Any], pids: set[int]) -> int | None:
        """Sum of ``usedGpuMemory`` of ``pids`` (compute + graphics, each (device, pid) once)."""
        nv = self._nvml
        per: dict[tuple[int, int], int | None] = {}
        for i, h in enumerate(handles):
            for kind in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
                fn = getattr(nv, kind, None)
                if fn is None:
                    continue
                ok, procs = self._metric("process list", functools.partial(fn, h))
                if not ok:
                    return None
                for p in procs or []:
                    if p.pid not in pids:
                        continue
                    mem = getattr(p, "usedGpuMemory", None)
                    key = (i, int(p.pid))
                    if mem is None:
                        per[key] = None
                    elif key not in per or (per[key] is not None and int(mem) > per[key]):  # type: ignore[operator]
                        per[key] = int(mem)
        if any(v is None for v in per.values()):
            self._note("per-process GPU memory is not available (usedGpuMemory missing)")
            return None
        return sum(v for v in per.values() if v is not None)


def gpu_inventory(nvml: Any = None) -> dict[str, Any]:
    """Driver version and devices (name, total memory) for a signoff's environment block;
    ``{"available": False, "reason": ...}`` without a usable GPU."""
    try:
        nv = nvml if nvml is not None else _load_pynvml()
        nv.nvmlInit()
    except Exception as e:
        return {"available": False, "reason": f"NVML unavailable: {_text(e) or type(e).__name__}"}
    try:
        devices = []
        for i in range(int(nv.nvmlDeviceGetCount())):
            h = nv.nvmlDeviceGetHandleByIndex(i)
            dev: dict[str, Any] = {"index": i, "name": _text(nv.nvmlDeviceGetName(h))}
            try:
                dev["memory_total_bytes"] = int(nv.nvmlDeviceGetMemoryInfo(h).total)
            except Exception:
                dev["memory_total_bytes"] = None
            devices.append(dev)
        try:
            driver = _text(nv.nvmlSystemGetDriverVersion())
        except Exception:
            driver = None
        if not devices:
            return {"available": False, "reason": "NVML reports no GPU device", "driver_version": driver}
        return {"available": True, "driver_version": driver, "count": len(devices), "devices": devices}
    except Exception as e:
        return {"available": False, "reason": f"NVML error: {_text(e) or type(e).__name__}"}
    finally:
        try:
            nv.nvmlShutdown()
        except Exception:
            pass

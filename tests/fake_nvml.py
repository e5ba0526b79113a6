"""Named fake-NVML scenarios (module-like objects) for GpuReader tests, raising pynvml's own errors.

Scenarios: ``healthy`` (two devices, a process list that includes ``TARGET_PID``),
``no_driver``, ``not_supported`` (utilisation and process lists unsupported),
``gpu_lost`` (healthy until ``lose()`` is called; ``recover()`` brings it back) and
``no_process_memory`` (usedGpuMemory None, as in some containers).
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pynvml

TARGET_PID = 4242
OTHER_PID = 777
GIB = 1024**3


class FakeNvml:
    """Enough of the pynvml surface for ``soaklib.observe.gpu``; counts init/shutdown calls."""

    NVMLError = pynvml.NVMLError
    NVMLError_NotSupported = pynvml.NVMLError_NotSupported
    NVMLError_NoPermission = pynvml.NVMLError_NoPermission
    NVMLError_GpuIsLost = pynvml.NVMLError_GpuIsLost
    NVMLError_DriverNotLoaded = pynvml.NVMLError_DriverNotLoaded

    def __init__(self, scenario: str) -> None:
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown fake NVML scenario {scenario!r}: {', '.join(SCENARIOS)}")
        self.scenario = scenario
        self.inits = 0
        self.shutdowns = 0
        self.lost = False
        self.devices = [
            {"name": "Fake H200", "used": 10 * GIB, "total": 140 * GIB, "util": 40,
             "compute": [(TARGET_PID, 3 * GIB), (OTHER_PID, 5 * GIB)], "graphics": [(TARGET_PID, 3 * GIB)]},
            {"name": "Fake H200", "used": 2 * GIB, "total": 140 * GIB, "util": 20,
             "compute": [(TARGET_PID, 1 * GIB)], "graphics": []},
        ]

    def lose(self) -> None:
        self.lost = True

    def recover(self) -> None:
        self.lost = False

    def _check(self) -> None:
        if self.lost:
            raise pynvml.NVMLError_GpuIsLost()

    def nvmlInit(self) -> None:
        self.inits += 1
        if self.scenario == "no_driver":
            raise pynvml.NVMLError_DriverNotLoaded()
        self._check()

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return "999.99"

    def nvmlDeviceGetCount(self) -> int:
        self._check()
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        self._check()
        return i

    def nvmlDeviceGetName(self, h: int) -> str:
        return self.devices[h]["name"]

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        self._check()
        d = self.devices[h]
        return SimpleNamespace(used=d["used"], total=d["total"], free=d["total"] - d["used"])

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        self._check()
        if self.scenario == "not_supported":
            raise pynvml.NVMLError_NotSupported()
        return SimpleNamespace(gpu=self.devices[h]["util"], memory=0)

    def _procs(self, h: int, kind: str) -> list[Any]:
        self._check()
        if self.scenario == "not_supported":
            raise pynvml.NVMLError_NotSupported()
        none = self.scenario == "no_process_memory"
        return [SimpleNamespace(pid=pid, usedGpuMemory=None if none else mem) for pid, mem in self.devices[h][kind]]

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[Any]:
        return self._procs(h, "compute")

    def nvmlDeviceGetGraphicsRunningProcesses(self, h: int) -> list[Any]:
        return self._procs(h, "graphics")


SCENARIOS = ("healthy", "no_driver", "not_supported", "gpu_lost", "no_process_memory")

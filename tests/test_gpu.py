"""GpuReader against named fake-NVML scenarios; one real-hardware test marked ``gpu``."""
from __future__ import annotations

import os

import pytest

from soaklib.observe.gpu import COLUMNS, GpuReader, gpu_inventory
from tests.fake_nvml import GIB, OTHER_PID, TARGET_PID, FakeNvml


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_healthy_reads_devices_and_target_vram() -> None:
    fake = FakeNvml("healthy")
    r = GpuReader(nvml=fake)
    row = r.read([TARGET_PID])
    assert set(row) == set(COLUMNS)
    assert row["gpu_available"] is True
    assert row["gpu_count"] == 2
    assert row["gpu_used_bytes"] == 12 * GIB
    assert row["gpu_total_bytes"] == 280 * GIB
    assert row["gpu_util_pct"] == pytest.approx(30.0)
    # device 0: compute and graphics list the same process once (3 GiB); device 1: 1 GiB
    assert row["gpu_target_bytes"] == 4 * GIB
    assert row["gpu_note"] is None
    assert r.read([TARGET_PID, OTHER_PID])["gpu_target_bytes"] == 9 * GIB
    assert r.read([123456])["gpu_target_bytes"] == 0  # a target holding no VRAM is a true 0
    assert r.read([])["gpu_target_bytes"] is None  # no target: unknown, not 0
    assert fake.inits == 1  # lazily initialised once
    r.close()
    r.close()
    assert fake.shutdowns == 1


def test_index_restricts_device_columns_but_not_target() -> None:
    row = GpuReader(nvml=FakeNvml("healthy"), index=1).read([TARGET_PID])
    assert row["gpu_used_bytes"] == 2 * GIB
    assert row["gpu_total_bytes"] == 140 * GIB
    assert row["gpu_util_pct"] == 20.0
    assert row["gpu_target_bytes"] == 4 * GIB


def test_no_driver_is_a_null_row_noted_once() -> None:
    clock = Clock()
    fake = FakeNvml("no_driver")
    r = GpuReader(nvml=fake, clock=clock)
    first = r.read([TARGET_PID])
    assert first["gpu_available"] is False
    assert all(first[c] is None for c in COLUMNS if c not in ("gpu_available", "gpu_note"))
    assert first["gpu_note"].startswith("NVML unavailable: ")
    second = r.read([TARGET_PID])
    assert second["gpu_available"] is False and second["gpu_note"] is None
    assert fake.inits == 1  # no retry before retry_s
    clock.t += 61
    r.read([TARGET_PID])
    assert fake.inits == 2
    assert len(r.notes) == 1
    r.close()
    assert fake.shutdowns == 0


def test_not_supported_blanks_only_that_metric() -> None:
    r = GpuReader(nvml=FakeNvml("not_supported"))
    row = r.read([TARGET_PID])
    assert row["gpu_available"] is True
    assert row["gpu_used_bytes"] == 12 * GIB and row["gpu_total_bytes"] == 280 * GIB
    assert row["gpu_util_pct"] is None
    assert row["gpu_target_bytes"] is None
    assert "utilization not supported" in row["gpu_note"]
    assert "process list not supported" in row["gpu_note"]
    assert r.read([TARGET_PID])["gpu_note"] is None  # recorded once


def test_missing_process_memory_is_null_not_zero() -> None:
    row = GpuReader(nvml=FakeNvml("no_process_memory")).read([TARGET_PID])
    assert row["gpu_available"] is True
    assert row["gpu_target_bytes"] is None
    assert "usedGpuMemory" in row["gpu_note"]


def test_gpu_lost_mid_soak_gives_null_rows_and_rate_limited_reinit() -> None:
    clock = Clock()
    fake = FakeNvml("gpu_lost")
    r = GpuReader(nvml=fake, clock=clock, retry_s=60)
    assert r.read([TARGET_PID])["gpu_available"] is True
    fake.lose()
    lost = r.read([TARGET_PID])
    assert lost["gpu_available"] is False
    assert all(lost[c] is None for c in COLUMNS if c not in ("gpu_available", "gpu_note"))
    assert lost["gpu_note"].startswith("GPU lost: GPU is lost")
    inits = fake.inits
    clock.t += 30
    assert r.read([TARGET_PID])["gpu_note"] is None
    assert fake.inits == inits  # no re-init before 60 s
    clock.t += 31
    r.read([TARGET_PID])  # re-init attempted, still lost
    assert fake.inits == inits + 1
    fake.recover()
    clock.t += 61
    back = r.read([TARGET_PID])
    assert back["gpu_available"] is True and back["gpu_used_bytes"] == 12 * GIB
    assert "NVML available again" in back["gpu_note"]
    fake.lose()
    assert r.read([TARGET_PID])["gpu_note"].startswith("GPU lost")  # a new outage is noted again


def test_unexpected_exception_never_escapes() -> None:
    fake = FakeNvml("healthy")
    r = GpuReader(nvml=fake)
    r.read([TARGET_PID])
    fake.nvmlDeviceGetCount = lambda: (_ for _ in ()).throw(RuntimeError("driver crashed"))  # type: ignore[method-assign]
    row = r.read([TARGET_PID])
    assert row["gpu_available"] is False and "driver crashed" in row["gpu_note"]


def test_inventory() -> None:
    inv = gpu_inventory(FakeNvml("healthy"))
    assert inv["available"] is True and inv["driver_version"] == "999.99" and inv["count"] == 2
    assert inv["devices"][0] == {"index": 0, "name": "Fake H200", "memory_total_bytes": 140 * GIB}
    off = gpu_inventory(FakeNvml("no_driver"))
    assert off["available"] is False and off["reason"].startswith("NVML unavailable")


def test_real_pynvml_without_gpu_degrades() -> None:
    """Whatever this machine has, the default reader answers a row and never raises."""
    r = GpuReader()
    row = r.read([os.getpid()])
    assert set(row) == set(COLUMNS)
    r.close()
    inv = gpu_inventory()
    assert inv["available"] in (True, False)


@pytest.mark.gpu
def test_real_device() -> None:
    inv = gpu_inventory()
    assert inv["available"], inv
    with GpuReader() as r:
        row = r.read([os.getpid()])
    assert row["gpu_available"] is True
    assert row["gpu_count"] >= 1
    assert 0 < row["gpu_used_bytes"] <= row["gpu_total_bytes"]
    assert row["gpu_util_pct"] is None or 0 <= row["gpu_util_pct"] <= 100
    assert row["gpu_target_bytes"] in (0, None)  # this test process holds no VRAM

"""The sequential FAIL rule (``soaklib.analysis.sequential``): a fast leak stops early, healthy runs never do."""
from __future__ import annotations

import numpy as np
import pytest

from soaklib.analysis.sequential import FailMonitor
from soaklib.errors import ParameterError
from tests.test_analysis_exhaustion import MIB, H, noisy  # the same AR(1) curves


def run(mon: FailMonitor, t: np.ndarray, v: np.ndarray, flush_s: float):
    looks = []
    for end in np.arange(flush_s, t[-1] + flush_s / 2, flush_s):
        keep = t <= end
        look = mon.look(t[keep], v[keep])
        if look is not None:
            looks.append(look)
            if look.stop:
                break
    return looks


def test_a_2_mib_per_s_leak_stops_within_a_few_flushes():
    t = np.arange(0.0, 1800.0, 1.0)  # 1 Hz, flushed every 10 s
    v = noisy(t, 300.0 + 2.0 * t, seed=1, phi=0.97)
    mon = FailMonitor(12.5 * MIB, 50.0 * MIB)  # no decision in the first 10 min (min_span_s)
    looks = run(mon, t, v, 10.0)
    assert looks[-1].stop and mon.stopped is looks[-1]
    assert looks[-1].k <= 3 and looks[-1].t_s <= 600.0 + 30.0
    assert looks[-1].text("tree RSS").startswith("tree RSS +7") and "stopping" in looks[-1].text("tree RSS")


@pytest.mark.parametrize("seed", range(4))
def test_healthy_runs_are_never_stopped(seed):
    t = np.arange(0.0, H + 1, 30.0)
    warm = 150.0 * np.minimum(1.0, t / 480.0)  # a cache filled in 8 min, before the first decision
    for v in (noisy(t, 500.0 + 0 * t, seed, phi=0.97, sd_mb=4.0), noisy(t, 500.0 + warm, seed)):
        mon = FailMonitor(12.5 * MIB, 50.0 * MIB)
        looks = run(mon, t, v, 120.0)
        assert looks and not any(lk.stop for lk in looks) and mon.stopped is None
    assert "so far" in looks[-1].text("RSS")


def test_alpha_spending_sums_to_alpha_and_bad_parameters():
    mon = FailMonitor(12.5, 50.0, alpha=0.01)
    assert sum(mon.alpha_at(k) for k in range(1, 100_000)) == pytest.approx(0.01, rel=1e-4)
    assert mon.look([0.0, 1.0], [1.0, 2.0]) is None  # under min_span_s: no look
    with pytest.raises(ParameterError):
        FailMonitor(12.5, 50.0, alpha=0.0)
    with pytest.raises(ParameterError):
        FailMonitor(60.0, 50.0)

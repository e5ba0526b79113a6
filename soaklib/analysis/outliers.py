"""Outliers among hosts: the robust z-score of one value per host (a memory slope, an FD trend).

Method (Iglewicz and Hoaglin's modified z-score): ``z = 0.6745 (x - median) / MAD`` with MAD
the median absolute deviation from the median; ``|z| > 3.5`` is an outlier. A host must also
differ from the median by at least ``min_diff`` (in the value's unit): on a quiet fleet the
spread is tiny, and a fraction of a MiB/h is no finding however many MADs it is. The scale
``MAD / 0.6745`` is therefore floored at ``min_diff / 3.5``, which also settles the case of more
than half the hosts sharing one value (MAD 0, typically flat slopes of 0): a host is then an
outlier when it differs from that value by more than ``min_diff``. Without a floor and with
MAD 0, a host off the median has an infinite z. Fewer than three finite values: no outliers
(nothing to stand out against). No I/O.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

Z_CUT = 3.5  # Iglewicz & Hoaglin's recommended cut for the modified z-score
MAD_SCALE = 0.6745  # the 0.75 quantile of the standard normal: MAD / 0.6745 estimates sigma


@dataclass(frozen=True)
class Outlier:
    """A host whose value stands out from the fleet's."""

    host: str
    metric: str
    value: float
    median: float
    z: float
    direction: str  # "high" or "low"

    def to_dict(self) -> dict[str, object]:
        return {"host": self.host, "metric": self.metric, "value": self.value, "median": self.median,
                "z": self.z, "direction": self.direction}


def robust_z(values: Mapping[str, float], *, min_scale: float = 0.0) -> dict[str, float]:
    """The modified z-score of each host's finite value with the scale ``max(MAD / 0.6745,
    min_scale)`` (see the module docstring); hosts with a non-finite value are left out. With a
    scale of 0 a host at the median has z 0 and any other an infinite z."""
    finite = {h: float(v) for h, v in values.items() if v is not None and math.isfinite(float(v))}
    if not finite:
        return {}
    x = np.array(list(finite.values()), dtype=float)
    med = float(np.median(x))
    scale = max(float(np.median(np.abs(x - med))) / MAD_SCALE, float(min_scale))
    if scale == 0:
        return {h: 0.0 if v == med else math.copysign(math.inf, v - med) for h, v in finite.items()}
    return {h: (v - med) / scale for h, v in finite.items()}


def outliers(values: Mapping[str, float], metric: str, *, z_cut: float = Z_CUT, min_diff: float = 0.0,
             high_only: bool = False) -> list[Outlier]:
    """Hosts with ``|z| > z_cut`` and ``|x - median| >= min_diff``, the largest ``|z|`` first.
    ``high_only`` keeps only hosts above the median (a leak, never a host that leaks less)."""
    finite = {h: float(v) for h, v in values.items() if v is not None and math.isfinite(float(v))}
    if len(finite) < 3:
        return []
    med = float(np.median(list(finite.values())))
    out = []
    for host, z in robust_z(finite, min_scale=min_diff / z_cut).items():
        x = finite[host]
        if abs(z) > z_cut and abs(x - med) >= min_diff and (z > 0 or not high_only):
            out.append(Outlier(host, metric, x, med, z, "high" if z > 0 else "low"))
    return sorted(out, key=lambda o: -abs(o.z))

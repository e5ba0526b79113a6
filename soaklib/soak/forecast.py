"""Time to exhaustion of a soak's resources, from its samples and the limits read when it started.

- memory (tree RSS, else RSS) against ``memory_limit_mb`` when set, else the target's cgroup
  limit, else the host's memory (``observations.limits``, :mod:`soaklib.proc.limits`);
- disk: the free space of the project's file system (``disk_free_bytes``) falling to 0;
- file descriptors (tree, else root) against the target's soft ``RLIMIT_NOFILE``.

Each is :func:`soaklib.analysis.exhaustion.time_to_exhaustion` (80% interval; no projection
unless the growth is conclusive). A series that was not sampled is left out.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from soaklib.analysis.exhaustion import time_to_exhaustion
from soaklib.analysis.units import MIB


def _col(samples: pd.DataFrame, *names: str) -> str | None:
    return next((n for n in names if n in samples and samples[n].notna().sum() >= 3), None)


def forecasts(alive: pd.DataFrame, samples: pd.DataFrame, limits: Mapping[str, Any] | None,
              params: Mapping[str, Any] | None, warmup_s: float = 0.0) -> list[dict[str, Any]]:
    """One JSON row per resource (``Exhaustion.to_json()``), in the order memory, disk, FDs."""
    limits, params = limits or {}, params or {}
    out: list[dict[str, Any]] = []
    mem = _col(alive, "tree_rss_bytes", "rss_bytes")
    if mem:
        given = params.get("memory_limit_mb")
        limit = float(given) * MIB if given else limits.get("memory_limit_bytes")
        source = "memory_limit_mb" if given else (limits.get("memory_limit_source") or "")
        label = "tree RSS" if mem == "tree_rss_bytes" else "RSS"
        out.append(time_to_exhaustion(label, alive["t_s"], alive[mem], limit, limit_source=source,
                                      min_warmup_s=warmup_s).to_json())
    if _col(samples, "disk_free_bytes"):
        used = -samples["disk_free_bytes"].to_numpy(dtype=float)  # free space falling to 0 = "used" rising to 0
        e = time_to_exhaustion("disk (free space)", samples["t_s"], used, 0.0, limit_source="free space").to_json()
        e["level"] = -e["level"] if e.get("level") is not None else None  # read back as free bytes
        e["limit"] = 0.0  # the free space at its end
        out.append(e)
    fds = _col(alive, "tree_num_fds", "num_fds")
    if fds:
        soft = limits.get("nofile_soft")
        out.append(time_to_exhaustion("FDs", alive["t_s"], alive[fds].to_numpy(dtype=float),
                                      float(soft) if soft else None, unit="FDs", limit_source="RLIMIT_NOFILE soft",
                                      min_warmup_s=warmup_s).to_json())
    return [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in e.items()} for e in out]

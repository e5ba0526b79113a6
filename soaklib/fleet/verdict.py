"""The verdict of a fleet: every host judged, the fleet as a whole, and the hosts that stand out.

Read with DuckDB (:mod:`soaklib.fleet.query`): one SQL pass gives each host's time-binned
medians (at most 500 bins per host), and each host's memory slope and FD trend are fitted on
those bins with the statistics of a single run (:func:`soaklib.analysis.growth.memory_growth`,
:func:`~soaklib.analysis.growth.fd_stability`: Theil–Sen and Kendall on binned medians).

Per host, the criteria rows are the host's own soak signoff (:func:`build_signoff` of the
host's run folder ``hosts/{host}/`` with its samples and events from the fleet's shared
folder) when the host ran a soak of the fleet; a host with samples and no soak folder of its
own (a sampler that only recorded) gets the growth rows of the soak type, judged on the bins.
A host of the fleet with no data is one FAIL row saying why (its soak could not start, its
worker was lost). The fleet FAILs when any host fails; hosts whose memory slope or FD slope is
an outlier against the rest (robust z-score, :mod:`soaklib.analysis.outliers`) are named
whether they pass or not.
"""
from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from soaklib.analysis.criteria import evaluate, verdict
from soaklib.analysis.growth import fd_stability, memory_growth
from soaklib.analysis.outliers import Outlier, outliers
from soaklib.analysis.units import finite_or_none as _num
from soaklib.fleet.query import RunSql, binned_medians, connect, sample_columns
from soaklib.parts import host_folders
from soaklib.runs import Run
from soaklib.soak import registry
from soaklib.soak.observers import growth_intervals
from soaklib.store import read_manifest

MIB = 2**20  # bytes per MiB, the unit of every *_mb name
HOSTS_DIR = "hosts"  # {run_dir}/hosts/{host}/: each host's soak folder (manifest, logs, observations)
FLEET_SCHEMA_VERSION = "1.0"
MEMORY_COLUMNS = ("tree_rss_bytes", "rss_bytes")
FD_COLUMNS = ("tree_num_fds", "num_fds")
#: the smallest difference from the fleet's median that can make an outlier, per metric
MIN_DIFF = {"memory_slope_mb_per_h": 1.0, "fd_slope_per_h": 1.0}
GROWTH_METRICS = ("memory_growth_mb", "memory_slope_mb_per_h", "fd_range", "fd_trend")


@dataclass
class HostVerdict:
    """One host of a fleet: its verdict, criteria rows and the slopes the outliers are found in."""

    host: str
    verdict: str
    criteria: list[dict[str, Any]]
    source: str  # "signoff" (the host's own soak), "bins" (growth rows on the fleet's bins), "missing"
    memory_slope_mb_per_h: float | None = None
    fd_slope_per_h: float | None = None
    n_samples: int = 0
    n_bins: int = 0
    reason: str | None = None
    signoff: Mapping[str, Any] | None = None  # the host's own signoff (a mapping of its JSON keys)

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "verdict": self.verdict, "source": self.source, "reason": self.reason,
                "memory_slope_mb_per_h": self.memory_slope_mb_per_h, "fd_slope_per_h": self.fd_slope_per_h,
                "n_samples": self.n_samples, "n_bins": self.n_bins, "criteria": self.criteria}


@dataclass
class FleetVerdict:
    """The fleet's verdict, its hosts, the outliers, the bins (for the figure) and the timings."""

    run_id: str
    run_dir: Path
    soak: str
    verdict: str
    hosts: list[HostVerdict]
    outliers: list[Outlier]
    bin_s: float
    bins: pd.DataFrame = field(default_factory=pd.DataFrame)
    timing_s: dict[str, float] = field(default_factory=dict)
    complete: bool = True

    def host(self, name: str) -> HostVerdict:
        return next(h for h in self.hosts if h.host == name)

    @property
    def outlier_hosts(self) -> list[str]:
        return list(dict.fromkeys(o.host for o in self.outliers))

    def to_dict(self) -> dict[str, Any]:
        """The fleet signoff (JSON-ready): the single-run keys plus ``fleet`` and ``hosts``."""
        rows = [dict(r, host=h.host) for h in self.hosts for r in h.criteria]
        return {
            "schema_version": FLEET_SCHEMA_VERSION, "run_id": self.run_id, "soak": self.soak,
            "verdict": self.verdict, "complete": self.complete, "criteria": rows,
            "fleet": {"n_hosts": len(self.hosts), "hosts_failed": [h.host for h in self.hosts if h.verdict != "PASS"],
                      "outliers": [o.to_dict() for o in self.outliers], "bin_s": self.bin_s,
                      "timing_s": self.timing_s,
                      "method": "per-host time-binned medians in DuckDB (<= 500 bins per host); Theil-Sen "
                                "slopes on the bins; outliers by robust z-score (0.6745 (x - median) / MAD, "
                                "the scale at least 1/3.5 of the unit, |z| > 3.5) on the per-host memory "
                                "(MiB/h) and FD (per hour) slopes"},
            "hosts": {h.host: h.to_dict() for h in self.hosts},
        }


def _first(cols: set[str], names: tuple[str, ...]) -> str | None:
    return next((c for c in names if c in cols), None)


def _growth_rows(soak: str, mem: dict[str, Any] | None, fds: dict[str, Any] | None,
                 duration_h: float) -> list[dict[str, Any]]:
    """The soak type's growth criteria judged on a host's bins (its soak ran elsewhere or not at all)."""
    slope = _num(mem["slope_mb_per_h"]) if mem else None
    observed = {"memory_slope_mb_per_h": slope,
                "memory_growth_mb": slope * duration_h if slope is not None else None,
                "fd_range": fds["fd_range"] if fds else None,
                "fd_trend": int(bool(fds["monotonic_increasing"])) if fds else None}
    intervals = growth_intervals(mem, duration_h)
    criteria = [c for c in registry.get(soak).criteria() if c.metric in GROWTH_METRICS]
    return [dict(r) for r in evaluate(criteria, observed, duration_h=duration_h or None, intervals=intervals)]


def _host_signoff(db: RunSql, run_dir: Path, host: str) -> Mapping[str, Any] | None:
    """The host's own soak signoff, from ``hosts/{host}/`` and its rows of the shared folder."""
    folder = run_dir / HOSTS_DIR / host
    manifest = read_manifest(folder)
    if not manifest:
        return None
    from soaklib.report.signoff import build_signoff  # the single-run signoff, unchanged

    samples = db.sql("SELECT * FROM samples WHERE host = ? ORDER BY t_s", [host])
    events = db.sql("SELECT * FROM events WHERE host = ? ORDER BY t_s", [host])
    run = Run(path=folder, run_id=str(manifest.get("run_id", host)), manifest=manifest, samples=samples,
              events=events, bad_parts=list(db.bad_parts))
    return build_signoff(run)


def _missing_row(reason: str) -> dict[str, Any]:
    return {"metric": "host_soak", "label": "the host's soak ran and wrote samples", "observed": reason,
            "unit": "", "pass_bound": "samples", "fail_bound": "no samples", "status": "FAIL", "note": reason,
            "triage": "see the host's reason; the other hosts' data are unaffected", "direction": "in"}


def is_fleet(run_dir: str | os.PathLike[str]) -> bool:
    """A fleet run: a ``fleet-*`` manifest, or samples of more than one host."""
    p = Path(run_dir)
    if p.suffix == ".json" and p.is_file():
        p = p.with_suffix("")
    return str(read_manifest(p).get("kind", "")).startswith("fleet-") or len(host_folders(p / "samples")) > 1


def fleet_verdict(run_dir: str | os.PathLike[str], *, soak: str | None = None, signoffs: bool = True,
                  max_bins: int = 500, warmup_s: float | None = None) -> FleetVerdict:
    """Judge every host of a run (see the module docstring); ``signoffs=False`` judges every
    host on the fleet's bins only (the growth rows), as for samples without soak folders."""
    p = Path(run_dir)
    if p.suffix == ".json" and p.is_file():
        p = p.with_suffix("")
    t0 = time.perf_counter()
    manifest = read_manifest(p)
    soak = soak or str(manifest.get("soak") or "a")
    expected = [str(h) for h in manifest.get("hosts") or []]
    status: dict[str, Any] = manifest.get("host_status") or {}
    params = manifest.get("parameters") or {}
    warm = float(warmup_s if warmup_s is not None else (params.get("warmup_s") or 0.0))
    with connect(p) as db:
        cols = set(sample_columns(db))
        mem_col, fd_col = _first(cols, MEMORY_COLUMNS), _first(cols, FD_COLUMNS)
        bins, bin_s = binned_medians(db, [c for c in (mem_col, fd_col) if c], max_bins=max_bins, warmup_s=warm)
        t_sql = time.perf_counter()
        fits: dict[str, tuple[dict[str, Any] | None, dict[str, Any] | None, int, float]] = {}
        for host, g in bins.groupby("host", sort=True):
            mem = memory_growth(g, mem_col) if mem_col else None
            fds = fd_stability(g, fd_col) if fd_col else None
            span_h = float(g["t_s"].max() - g["t_s"].min()) / 3600.0 if len(g) > 1 else 0.0
            fits[str(host)] = (mem, fds, int(g["n"].sum()), span_h)
        t_fit = time.perf_counter()
        hosts: list[HostVerdict] = []
        for host in sorted(set(fits) | set(expected)):
            if host not in fits:
                why = (status.get(host) or {}).get("reason") or "no samples from this host"
                hosts.append(HostVerdict(host, "FAIL", [_missing_row(why)], "missing", reason=why))
                continue
            mem, fds, n, span_h = fits[host]
            signoff = _host_signoff(db, p, host) if signoffs else None
            if signoff is not None:
                rows, source, result = list(signoff["criteria"]), "signoff", str(signoff["verdict"])
            else:
                rows, source = _growth_rows(soak, mem, fds, span_h), "bins"
                result = verdict(rows)
            why = (status.get(host) or {}).get("reason")
            if (status.get(host) or {}).get("status") == "FAIL" and why:
                rows = [*rows, _missing_row(why)]
                result = "FAIL"
            hosts.append(HostVerdict(
                host, result, rows, source,
                memory_slope_mb_per_h=_num(mem["slope_mb_per_h"]) if mem else None,
                fd_slope_per_h=_num(fds["slope_per_h"]) if fds else None,
                n_samples=n, n_bins=int((bins["host"] == host).sum()), reason=why, signoff=signoff))
        t_end = time.perf_counter()
    found = outliers({h.host: h.memory_slope_mb_per_h for h in hosts if h.memory_slope_mb_per_h is not None},
                     "memory_slope_mb_per_h", min_diff=MIN_DIFF["memory_slope_mb_per_h"], high_only=True)
    found += outliers({h.host: h.fd_slope_per_h for h in hosts if h.fd_slope_per_h is not None},
                      "fd_slope_per_h", min_diff=MIN_DIFF["fd_slope_per_h"], high_only=True)
    result = "FAIL" if not hosts or any(h.verdict != "PASS" for h in hosts) else "PASS"
    timing = {"duckdb_s": t_sql - t0, "fits_s": t_fit - t_sql, "signoffs_s": t_end - t_fit,
              "total_s": time.perf_counter() - t0}
    if mem_col and not bins.empty:
        bins = bins.assign(memory_mb=bins[mem_col] / MIB)
    return FleetVerdict(str(manifest.get("run_id", p.name)), p, soak, result, hosts, found, bin_s, bins, timing,
                        complete=bool(manifest.get("complete", True)))

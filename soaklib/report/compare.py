"""``soak compare BASE NEW``: the statistical diff of two runs of the same kind, a CI regression gate.

Two WATCHER soaks: the difference of the memory slopes (tree RSS, RSS, USS, VRAM) with a
MOVER interval from the two Theil–Sen intervals, the disk slope the same way, the FD,
thread and error-count changes, and the criteria rows whose status changed. Two
multi-provider lanes: per provider (and over all jobs) the p50 / p95 latency shifts of
successful jobs with percentile-bootstrap intervals, and the success-rate change with
Newcombe's interval. The statistics are :mod:`soaklib.analysis.compare`; the soak side is
computed with ``build_signoff`` (what ``soak analyze`` writes), the lane side from the
run's ``jobs`` table. BASE may also be a folder of runs: the latest run of NEW's kind in it.

``compare(base, new)`` returns a :class:`Comparison`; ``write_comparison`` writes
``compare-{base}-vs-{new}.json|.md|.png``. NEW is a regression on a metric named in
``fail_on`` when its difference is judged ``worse`` (:class:`RegressionRule`).
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from soaklib.analysis.compare import (
    Difference,
    Judgement,
    RegressionRule,
    bootstrap_shift,
    interval_difference,
    judge,
    plain_difference,
    rate_difference,
)
from soaklib.errors import ParameterError
from soaklib.runs import Run, load_run
from soaklib.store import MANIFEST, atomic_write_json, atomic_write_text, signoff_paths

MIB = 2**20
MIN_JOBS = 20  # successful jobs a side before a latency percentile shift is judged
#: the default rules: what counts as worse, and the smallest change that counts
DEFAULT_RULES: tuple[RegressionRule, ...] = (
    RegressionRule("memory_slope_mb_per_h", "higher", min_effect=10.0),
    RegressionRule("rss_slope_mb_per_h", "higher", min_effect=10.0),
    RegressionRule("uss_slope_mb_per_h", "higher", min_effect=10.0),
    RegressionRule("vram_slope_mb_per_h", "higher", min_effect=10.0),
    RegressionRule("disk_slope_mb_per_h", "higher", min_effect=10.0),
    RegressionRule("latency_ms_p50", "higher", min_relative=0.10, min_n=MIN_JOBS),
    RegressionRule("latency_ms_p95", "higher", min_relative=0.10, min_n=MIN_JOBS),
    RegressionRule("success_rate", "lower"),
)
SLOPES = (("memory_slope_mb_per_h", None), ("rss_slope_mb_per_h", "rss"), ("uss_slope_mb_per_h", "uss"),
          ("vram_slope_mb_per_h", "vram"))


@dataclass(frozen=True)
class RunRef:
    """Which run a side of the comparison is: id, folder, kind and its verdict."""

    run_id: str
    path: str
    kind: str
    verdict: str | None


@dataclass(frozen=True)
class StatusChange:
    """A criteria row whose status differs between BASE and NEW."""

    metric: str
    base_status: str | None
    new_status: str | None
    base_observed: Any
    new_observed: Any


@dataclass
class Comparison:
    """The diff of two runs; ``regressions`` are the ``fail_on`` metrics judged worse."""

    kind: str  # "soak" or "multi-provider"
    base: RunRef
    new: RunRef
    differences: list[Difference]
    judgements: list[Judgement]
    status_changes: list[StatusChange]
    fail_on: list[str]
    rules: list[RegressionRule]
    notes: list[str] = field(default_factory=list)
    series: dict[str, dict[str, pd.DataFrame]] = field(default_factory=dict, repr=False)  # for the figure

    @property
    def regressions(self) -> list[str]:
        """``fail_on`` metrics with a difference judged ``worse`` (each named once)."""
        worse = [d.metric for d, j in zip(self.differences, self.judgements) if j == "worse"]
        return [m for m in self.fail_on if m in worse]

    @property
    def exit_code(self) -> int:
        return 1 if self.regressions else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema_version": 1, "kind": self.kind, "base": vars(self.base), "new": vars(self.new),
            "differences": [d.as_dict() | {"judgement": j} for d, j in zip(self.differences, self.judgements)],
            "status_changes": [vars(c) for c in self.status_changes],
            "fail_on": self.fail_on, "regressions": self.regressions, "exit_code": self.exit_code,
            "rules": [vars(r) for r in self.rules], "notes": self.notes,
        }


# --------------------------------------------------------------------------- finding the runs


def _is_run(p: Path) -> bool:
    return (p / MANIFEST).exists() or (p / "jobs.parquet").exists() or signoff_paths(p)[0].exists()


def _family(kind: str) -> str:
    return "multi-provider" if kind == "multi-provider" else ("soak" if kind.startswith("watcher") else kind)


def resolve(path: str | os.PathLike[str] | Run, *, like: Run | None = None) -> Run:
    """A run, or the latest run in a folder of runs (of ``like``'s kind when given)."""
    if isinstance(path, Run):
        return path
    p = Path(path)
    if p.suffix == ".json" or _is_run(p):
        return load_run(p)
    if not p.is_dir():
        raise ParameterError(f"{str(p)!r} is neither a run folder nor a folder of runs", key="run", value=str(p))
    runs = [load_run(d) for d in sorted(p.iterdir()) if d.is_dir() and _is_run(d)]
    if like is not None:
        runs = [r for r in runs if r.kind == like.kind and r.path.resolve() != like.path.resolve()]
    if not runs:
        what = f" of kind {like.kind}" if like is not None else ""
        raise ParameterError(f"no run{what} in the baseline folder {str(p)!r}", key="base", value=str(p))
    return max(runs, key=lambda r: (str(r.manifest.get("started_at") or (r.signoff or {}).get("started_at") or ""),
                                    r.path.stat().st_mtime))


# --------------------------------------------------------------------------- soaks


def _triple(m: Mapping[str, Any] | None, key: str = "slope_mb_per_h") -> tuple[float, float, float]:
    stem = key.removesuffix("_mb_per_h")
    if not m:
        return (float("nan"),) * 3
    vals = (m.get(key), m.get(f"{stem}_low_mb_per_h"), m.get(f"{stem}_high_mb_per_h"))
    return tuple(float("nan") if v is None else float(v) for v in vals)  # type: ignore[return-value]


def _soak_diffs(a_b: Mapping[str, Any], a_n: Mapping[str, Any], conf: float) -> list[Difference]:
    out = []
    for metric, key in SLOPES:
        mb = a_b.get(key) if key else (a_b.get("tree_rss") or a_b.get("rss"))
        mn = a_n.get(key) if key else (a_n.get("tree_rss") or a_n.get("rss"))
        if mb or mn:
            out.append(interval_difference(metric, _triple(mb), _triple(mn), unit="MiB/h", confidence=conf))
    if a_b.get("disk") or a_n.get("disk"):
        out.append(interval_difference("disk_slope_mb_per_h", _triple(a_b.get("disk")), _triple(a_n.get("disk")),
                                       unit="MiB/h", confidence=conf))
        out.append(plain_difference("disk_growth_mb", (a_b.get("disk") or {}).get("growth_mb"),
                                    (a_n.get("disk") or {}).get("growth_mb"), unit="MiB"))
    for metric, key, sub, unit in (("fd_range", "fds", "fd_range", "FDs"), ("fd_max", "fds", "fd_max", "FDs"),
                                   ("threads_max", "threads", "fd_max", "threads"),
                                   ("log_errors", "logs", "errors", "lines"),
                                   ("tracebacks", "logs", "tracebacks", "tracebacks")):
        b, n = (a_b.get(key) or {}).get(sub), (a_n.get(key) or {}).get(sub)
        if b is not None or n is not None:
            out.append(plain_difference(metric, b, n, unit=unit))
    return out


def _status_changes(rows_b: Sequence[Mapping[str, Any]], rows_n: Sequence[Mapping[str, Any]]) -> list[StatusChange]:
    b = {r["metric"]: r for r in rows_b}
    n = {r["metric"]: r for r in rows_n}
    out = []
    for metric in [*b, *(m for m in n if m not in b)]:
        rb, rn = b.get(metric) or {}, n.get(metric) or {}
        if rb.get("status") != rn.get("status"):
            out.append(StatusChange(metric, rb.get("status"), rn.get("status"), rb.get("observed"), rn.get("observed")))
    return out


def _memory_series(run: Run) -> pd.DataFrame:
    s = run.samples
    col = next((c for c in ("tree_rss_bytes", "rss_bytes") if c in s and s[c].notna().any()), None)
    if s.empty or col is None or "t_s" not in s:
        return pd.DataFrame(columns=["t_s", "value"])
    t = s["t_s"].astype(float)
    return pd.DataFrame({"t_s": t - t.min(), "value": s[col].astype(float) / MIB})


# --------------------------------------------------------------------------- lanes


def _successful(run: Run) -> pd.DataFrame:
    jobs = run.jobs
    if jobs.empty or "provider" not in jobs:
        return pd.DataFrame(columns=["provider", "latency_ms", "success"])
    ok = jobs["success"].fillna(False).astype(bool) if "success" in jobs else pd.Series(False, index=jobs.index)
    return jobs.assign(success=ok)


def _lane_diffs(base: Run, new: Run, conf: float, n_boot: int) -> list[Difference]:
    jb, jn = _successful(base), _successful(new)
    out: list[Difference] = []
    providers = sorted(set(jb["provider"]) | set(jn["provider"]))
    for group in [*providers, "all"]:
        gb = jb if group == "all" else jb[jb["provider"] == group]
        gn = jn if group == "all" else jn[jn["provider"] == group]
        lb, ln = gb.loc[gb["success"], "latency_ms"], gn.loc[gn["success"], "latency_ms"]
        for q in (50, 95):
            d = bootstrap_shift(f"latency_ms_p{q}", lb, ln, q=q, n_boot=n_boot, confidence=conf)
            out.append(_grouped(d, group))
        rate = rate_difference("success_rate", int(gb["success"].sum()), len(gb), int(gn["success"].sum()), len(gn),
                               confidence=conf)
        out.append(_grouped(rate, group))
    return out


def _grouped(d: Difference, group: str) -> Difference:
    return dataclasses.replace(d, group=group)


def _ref(run: Run, signoff: Mapping[str, Any] | None) -> RunRef:
    return RunRef(run.run_id, str(run.path), run.kind, _verdict(run, signoff))


def _verdict(run: Run, signoff: Mapping[str, Any] | None) -> str | None:
    s: Mapping[str, Any] = signoff if signoff is not None else (run.signoff or {})
    if "verdict" in s:
        return str(s["verdict"])
    if "passed" in s:
        return "PASS" if s["passed"] else "FAIL"
    return None


# --------------------------------------------------------------------------- the comparison


def _rules(min_effect: dict[str, float] | None) -> list[RegressionRule]:
    rules = list(DEFAULT_RULES)
    for metric, value in (min_effect or {}).items():
        known = [r for r in rules if r.metric == metric]
        if not known:
            raise ParameterError(f"--min-effect {metric}: no such metric; known are {[r.metric for r in rules]}",
                                 key="min_effect", value=metric)
        rules = [dataclasses.replace(r, min_effect=float(value), min_relative=0.0) if r.metric == metric else r
                 for r in rules]
    return rules


def compare(
    base: str | os.PathLike[str] | Run, new: str | os.PathLike[str] | Run, *, fail_on: Sequence[str] = (),
    min_effect: dict[str, float] | None = None, confidence: float = 0.95, n_boot: int = 2000,
) -> Comparison:
    """Compare NEW against BASE (two soaks, or two multi-provider lanes); see the module docstring.

    ``fail_on`` names the metrics that make :attr:`Comparison.exit_code` 1 when NEW is
    significantly worse; ``min_effect`` overrides a rule's smallest change (metric → value
    in the metric's unit)."""
    new_run = resolve(new)
    base_run = resolve(base, like=new_run)
    kb, kn = _family(base_run.kind), _family(new_run.kind)
    if kb != kn or kn not in ("soak", "multi-provider"):
        raise ParameterError(f"cannot compare a {base_run.kind} run with a {new_run.kind} run: "
                             "compare two WATCHER soaks or two multi-provider runs", key="new", value=str(new_run.path))
    rules = _rules(min_effect)
    known = {r.metric for r in rules} | {"fd_range", "fd_max", "threads_max", "disk_growth_mb", "log_errors",
                                         "tracebacks"}
    unknown = [m for m in fail_on if m not in known]
    if unknown:
        raise ParameterError(f"--fail-on {','.join(unknown)}: unknown metric; known are {sorted(known)}",
                             key="fail_on", value=",".join(unknown))
    notes: list[str] = []
    sb: Mapping[str, Any]
    sn: Mapping[str, Any]
    if kn == "soak":
        from soaklib.report.signoff import build_signoff

        sb, sn = build_signoff(base_run), build_signoff(new_run)
        diffs = _soak_diffs(sb.get("analysis") or {}, sn.get("analysis") or {}, confidence)
        changes = _status_changes(sb.get("criteria") or [], sn.get("criteria") or [])
        if base_run.kind != new_run.kind:
            notes.append(f"different soak types: {base_run.kind} and {new_run.kind}")
        series = {"memory": {"base": _memory_series(base_run), "new": _memory_series(new_run)}}
        if not base_run.complete or not new_run.complete:
            notes.append("an incomplete run is compared as far as its samples go")
    else:
        sb, sn = base_run.signoff or {}, new_run.signoff or {}
        diffs = _lane_diffs(base_run, new_run, confidence, n_boot)
        changes = _status_changes(sb.get("criteria") or [], sn.get("criteria") or [])
        series = {"latency": {"base": _successful(base_run), "new": _successful(new_run)}}
        notes.append("latency percentiles cover successful jobs only, as in the lane's evidence")
        if any(j == "too_few" for j in (judge(d, rules) for d in diffs)):
            notes.append(f"a latency shift is judged only with at least {MIN_JOBS} successful jobs a side; "
                         "below that it is reported with its interval (run more rounds or jobs per provider)")
    return Comparison(kn, _ref(base_run, sb), _ref(new_run, sn), diffs, [judge(d, rules) for d in diffs], changes,
                      list(fail_on), rules, notes, series)


def write_comparison(comparison: Comparison, output_dir: str | os.PathLike[str], *, figure: bool = True
                     ) -> dict[str, Path]:
    """``compare-{base}-vs-{new}.json|.md`` (+ ``.png``, the overlay figure) in ``output_dir``, atomically."""
    from soaklib.report.compare_render import overlay_figure, to_markdown

    stem = Path(output_dir) / f"compare-{comparison.base.run_id}-vs-{comparison.new.run_id}"
    paths: dict[str, Path] = {}
    data = comparison.as_dict()
    if figure:
        from soaklib.report.plots import save_figure

        fig = overlay_figure(comparison)
        if fig is not None:
            paths["png"] = save_figure(fig, stem.with_suffix(".png"))
            data["figure"] = paths["png"].name
    paths["json"] = atomic_write_json(stem.with_suffix(".json"), data)
    paths["md"] = atomic_write_text(stem.with_suffix(".md"), to_markdown(comparison, figure=data.get("figure")))
    return paths

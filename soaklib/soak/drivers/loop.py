"""Soak C, the sustained autonomous loop: synthetic draws in, full cycles and convergence out.

After the protocol check the driver turns the project into the plan's test mode (sections
2.2 and 6): it bootstraps a synthetic history when there is none
(``injection.bootstrap_draws``), sets ``test_mode``, ``synthetic_injection.enabled`` and
``interval_seconds`` in ``watcher_policies.json``, and injects a draw every
``injection.interval_s``. Each tick it reads the decision log (cycles, dispatches,
fallbacks), the queue (stuck requests) and the JSON probes (default: the hit rate in the
telemetry); at the end it judges draws ingested against injected (± 2), policy candidates,
telemetry and the convergence trend (``soaklib.analysis.convergence_trend``).

The operator's files are copied into ``{run_dir}/operator_backup/`` before anything
changes and restored byte for byte after the target stopped — also after Ctrl-C, a crash
of the target or a failed check — unless ``keep_changes``. The soak's own versions are
kept in ``operator_backup/final/``. Per-tick values go to ``{run_dir}/loop.parquet``.
"""
from __future__ import annotations

import functools
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from soaklib.analysis import convergence_trend
from soaklib.errors import ParameterError
from soaklib.observe.readers import StatCache, check_probe, count_files, json_probe
from soaklib.prng import draw_values
from soaklib.store import write_table
from soaklib.watcher import draws as injector
from soaklib.watcher.check import ProtocolCheck, timeout_for
from soaklib.watcher.decisions import Decision, DecisionStream
from soaklib.watcher.draws import bootstrap_history, inject_draws
from soaklib.watcher.operator_files import POLICIES_FILE, AfterSoak, OperatorFiles, enable_test_mode, history_values
from soaklib.watcher.protocol import Profile

if TYPE_CHECKING:
    from soaklib.soak.context import SoakContext

BACKUP_DIR = "operator_backup"
LOOP_TABLE = "loop.parquet"
DEFAULT_PROBES: dict[str, dict[str, Any]] = {
    "hit_rate": {"file": "telemetry/learning_health_latest.json", "path": "hit_rate"}}
DEFAULT_TARGETS = {"hit_rate": 1.0}
MIN_STUCK_S = 10.0


# --------------------------------------------------------------------------- decision log


class LoopCounters:
    """Cycles and dispatches from decision lines appended during the soak (probe lines apart).

    ``cycles``: distinct ``run_id`` of completed dispatch lines (a completed line without a
    ``run_id`` counts as a cycle of its own); request records are not dispatches.
    """

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.run_ids: set[str] = set()
        self.anonymous_cycles = 0
        self.selfplay = 0
        self.learning = 0
        self.heuristic = 0  # decision-log markers (profile plan)
        self.heuristic_steps = 0  # step lines with parse_method heuristic (watcher-v2)
        self.bad_lines = 0
        self.lines = 0

    @property
    def cycles(self) -> int:
        return len(self.run_ids) + self.anonymous_cycles

    def update(self, d: Decision) -> None:
        """Count one decision-log line."""
        self.lines += 1
        if d.kind == "bad":
            self.bad_lines += 1
            return
        if d.probe:
            return
        if d.kind == "heuristic_fallback":
            self.heuristic += 1
        self.heuristic_steps += d.heuristic_step
        if d.kind != "dispatch" or d.dispatch_type is None:
            return
        logical = self.profile.dispatch_kind(d.dispatch_type)
        if logical is None or d.status in ("UNKNOWN_TYPE", "INVALID"):
            return
        if logical == "selfplay":
            self.selfplay += 1
        elif logical == "learning_loop":
            self.learning += 1
        if d.status == "COMPLETED":
            if d.run_id is not None:
                self.run_ids.add(d.run_id)
            else:
                self.anonymous_cycles += 1


def _profile_path(ctx: SoakContext, name: str) -> Path:
    """The profile's ``name`` path (e.g. ``"policy_dir"``): the loop soak reads every one it asks for."""
    path = ctx.profile.path(ctx.project_dir, name)
    if path is None:
        raise ParameterError(f"profile {ctx.profile.name!r} has no {name}: the loop soak needs it", key=name)
    return path


def convergence_points(loop: pd.DataFrame, column: str) -> tuple[list[float], list[float]]:
    """One point per cycle (the last value read while that many cycles were counted), cycles >= 1."""
    if loop.empty or column not in loop or "cycles" not in loop:
        return [], []
    d = loop[["cycles", column]].dropna()
    last = d[d["cycles"] >= 1].groupby("cycles", sort=True)[column].last()
    return [float(x) for x in last.index], [float(y) for y in last.to_numpy()]


def theil_sen_intercept(x: Sequence[float], y: Sequence[float], slope: float | None) -> float | None:
    """The Theil–Sen intercept ``median(y - slope * x)`` (for drawing the fitted trend)."""
    if not x or slope is None or not math.isfinite(slope):
        return None
    return float(np.median(np.asarray(y, dtype=float) - slope * np.asarray(x, dtype=float)))


# --------------------------------------------------------------------------- the driver


class LoopSoak:
    """The soak-C driver (``soak watcher c``); see the module docstring."""

    soak = "c"

    def __init__(self, *, check_protocol: bool = True, convergence_targets: Mapping[str, float] | None = None,
                 stuck_after_s: float | None = None) -> None:
        self.check_protocol = check_protocol
        self.targets = dict(DEFAULT_TARGETS if convergence_targets is None else convergence_targets)
        self.stuck_after_s = stuck_after_s
        self.files: OperatorFiles | None = None
        self.counters: LoopCounters | None = None
        self.protocol: dict[str, Any] | None = None
        self.probes: dict[str, dict[str, Any]] = {}
        self.rows: list[dict[str, Any]] = []
        self.injected = 0
        self.injection_errors: list[str] = []
        self.start: dict[str, Any] = {}
        self.notes: list[str] = []
        self.stopped = False
        self._after: AfterSoak | None = None
        self._stream: DecisionStream | None = None
        self._cache = StatCache()
        self._pending_since: dict[str, float] = {}
        self._t_inject0 = 0.0
        self._slots = 0
        self._last_write = 0.0

    # ------------------------------------------------------------------ setup

    def setup(self, ctx: SoakContext) -> None:
        p, profile = ctx.params, ctx.profile
        self.probes = dict(p.probes or DEFAULT_PROBES)
        for name, spec in self.probes.items():
            check_probe(name, spec)
        names = [profile.history_file, injector.HISTORY_FILE, POLICIES_FILE, profile.new_draw_flag, injector.FLAG_FILE]
        self.files = OperatorFiles(ctx.project_dir, Path(ctx.run_dir) / BACKUP_DIR, names,
                                   fresh=p.project_dir is None, keep_changes=p.keep_changes)
        self.files.backup()  # before anything changes
        self._after = AfterSoak(ctx.target)
        self._after.add("restore operator files", self._restore)
        self.counters = LoopCounters(profile)
        log = profile.path(ctx.project_dir, "decision_log")
        assert log is not None
        self._stream = DecisionStream(log, profile, from_end=True)
        try:
            if self.check_protocol:
                ctx.echo("soak c: protocol check (one probe request)")
                check = ProtocolCheck(ctx.project_dir, profile, timeout_s=timeout_for(ctx.reference, p.sim))
                result = check.run(stop_event=ctx.stop_event, alive=ctx.target.is_running)
                if result is None:
                    self.stopped = True
                    return
                self.protocol = result.to_dict()
                ctx.event("protocol_check", **self.protocol,
                          message=f"protocol check passed: {check.name} → {result.status} in {result.elapsed_s:.1f} s")
            self._prepare(ctx)
        except BaseException:
            self._after.run()
            raise
        self._t_inject0 = time.monotonic()

    def _prepare(self, ctx: SoakContext) -> None:
        inj, profile = ctx.params.injection, ctx.profile
        assert self.files is not None
        with self.files.lock:
            if not self.files.path(profile.history_file).exists():
                bootstrap_history(ctx.project_dir, inj.bootstrap_draws, seed=inj.seed, mod=inj.mod, prng=inj.prng)
                ctx.event("history_bootstrapped", draws=inj.bootstrap_draws, seed=inj.seed,
                          message=f"bootstrapped a synthetic history of {inj.bootstrap_draws} draws")
            policies = enable_test_mode(self.files.path(POLICIES_FILE), inj.interval_s, inj.seed)
        ctx.event("test_mode_enabled", **policies, message=f"{POLICIES_FILE}: test_mode and synthetic injection on")
        if policies["true_seed"] != inj.seed:
            self.notes.append(f"{POLICIES_FILE} names true_seed {policies['true_seed']} but the soak injects seed "
                              f"{inj.seed}: the daemon may converge to neither")
        values = history_values(self.files.path(profile.history_file)) or []
        fits = values[:3] == draw_values(inj.seed, min(3, len(values)), mod=inj.mod, prng=inj.prng)
        if not fits:
            self.notes.append(f"the history does not start with the draws of seed {inj.seed}: it is not this "
                              "seed's synthetic history, so convergence toward the seed is not expected")
        telemetry = self._telemetry(ctx)
        self.start = {"history_draws": len(values), "history_matches_seed": fits,
                      "policy_candidates": count_files(_profile_path(ctx, "policy_dir")),
                      "telemetry_models": telemetry.get("total_models"), "policies": policies}

    # ------------------------------------------------------------------ each tick

    def _telemetry(self, ctx: SoakContext) -> dict[str, Any]:
        path = ctx.profile.path(ctx.project_dir, "telemetry_file")
        if path is None:
            return {}
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError, TypeError):
            return {}
        return data if isinstance(data, dict) else {}

    def _inject(self, ctx: SoakContext) -> None:
        inj = ctx.params.injection
        due = int((time.monotonic() - self._t_inject0) // inj.interval_s) + 1  # slot 0 at the start
        if due <= self._slots or self.files is None:
            return
        count, self._slots = due - self._slots, due
        with self.files.lock:
            if self.files.restored:
                return
            try:
                new = inject_draws(ctx.project_dir, count, seed=inj.seed, mod=inj.mod, prng=inj.prng)
            except Exception as e:  # recorded and judged, the soak goes on
                self.injection_errors.append(f"{type(e).__name__}: {e}")
                ctx.event("injection_failed", message=f"draw injection failed: {e}")
                return
        index = int(self.start.get("history_draws") or 0) + self.injected
        self.injected += len(new)
        ctx.event("draw_injected", count=len(new), index=index, value=new[0]["value"], total=self.injected,
                  message=f"draw {new[0]['value']} injected at position {index} ({self.injected} so far)")

    def _stuck_scan(self, ctx: SoakContext, now_s: float) -> list[str]:
        folder = ctx.profile.path(ctx.project_dir, "requests_dir")
        try:
            with os.scandir(folder) as it:
                pending = {e.name for e in it if e.name.endswith(".json") and not e.name.startswith(".")
                           and e.is_file(follow_symlinks=False)}
        except OSError:
            pending = set()
        self._pending_since = {n: self._pending_since.get(n, now_s) for n in pending}
        limit = self.stuck_after_s if self.stuck_after_s is not None else max(MIN_STUCK_S, 3 * ctx.params.sampling.interval_s)
        return sorted(n for n, since in self._pending_since.items() if now_s - since >= limit)

    def _read(self, ctx: SoakContext) -> None:
        assert self._stream is not None and self.counters is not None
        for d in self._stream.poll():
            self.counters.update(d)

    def tick(self, ctx: SoakContext, row: dict[str, Any]) -> bool:
        if self.stopped or self.counters is None:
            return True
        self._inject(ctx)
        self._read(ctx)
        t_s = ctx.elapsed_s()
        stuck = self._stuck_scan(ctx, t_s)
        c = self.counters
        rec: dict[str, Any] = {"t_s": t_s, "cycles": c.cycles, "draws_injected": self.injected,
                               "history_draws": row.get("draws"), "selfplay": c.selfplay, "learning": c.learning,
                               "requests_stuck": len(stuck)}
        for name, spec in self.probes.items():
            path = Path(spec["file"])
            path = path if path.is_absolute() else Path(ctx.project_dir) / path
            rec[f"probe_{name}"] = self._cache.get(
                path, name, functools.partial(json_probe, dotted_path=spec.get("path"), reduce=spec.get("reduce", "value")))
        self.rows.append(rec)
        if time.monotonic() - self._last_write >= ctx.params.sampling.flush_s:
            self._write_loop(ctx)
        return False

    def _write_loop(self, ctx: SoakContext) -> pd.DataFrame:
        frame = pd.DataFrame(self.rows)
        if not frame.empty:
            write_table(Path(ctx.run_dir) / LOOP_TABLE, frame)
        self._last_write = time.monotonic()
        return frame

    # ------------------------------------------------------------------ the end

    def _restore(self) -> None:
        if self.files is not None:
            self.files.restore()

    def finish(self, ctx: SoakContext) -> dict[str, Any]:
        out: dict[str, Any] = {"protocol_check": self.protocol, "notes": self.notes}
        if self.counters is None or self.files is None or self.stopped:
            self.close(ctx)
            out["notes"] = self.notes + ["the soak stopped before the loop started"]
            return out
        self._read(ctx)
        stuck = self._stuck_scan(ctx, ctx.elapsed_s())
        frame = self._write_loop(ctx)
        if ctx.target.started and ctx.target.is_running():
            stop = ctx.target.stop(timeout_s=min(10.0, ctx.params.target.halt.timeout_s), grace_s=2.0)
            ctx.event("target_stopped", **stop.to_dict(), message="target stopped before restoring operator files")
        elif not ctx.target.started:
            self.notes.append("the attached daemon still runs: it may hold the soak's test-mode settings in memory "
                              "until it is restarted")
        telemetry = self._telemetry(ctx)
        with self.files.lock:
            values = history_values(self.files.soak_version(ctx.profile.history_file))
        if values is None:
            self.notes.append("the final draw history could not be read")
            values = []
        out.update(self._observe(ctx, values, telemetry, frame, stuck))
        self.close(ctx)
        report = self.files.report or {}
        out["operator_files"] = report
        ctx.event("operator_files_restored" if report.get("ok") else "operator_files_restore_failed",
                  files=report.get("files"), message="operator files: " + "; ".join(
                      f"{k} {v}" for k, v in (report.get("files") or {}).items()))
        return out

    def _observe(self, ctx: SoakContext, values: list[int], telemetry: dict[str, Any], frame: pd.DataFrame,
                 stuck: list[str]) -> dict[str, Any]:
        inj, profile, c = ctx.params.injection, ctx.profile, self.counters
        assert c is not None
        start_len = int(self.start.get("history_draws") or 0)
        added = len(values) - start_len
        expected = draw_values(inj.seed, max(0, self.injected), start=start_len, mod=inj.mod, prng=inj.prng)
        got = values[start_len:]
        sequence_errors = sum(a != b for a, b in zip(got, expected)) + abs(len(got) - len(expected))
        seen = telemetry.get("draws_seen")
        lag = len(values) - int(seen) if isinstance(seen, (int, float)) and not isinstance(seen, bool) else None
        ingested = added - max(0, lag) if lag is not None else added
        samples = ctx.samples()
        heuristic = None
        if "heuristic_fallback" in samples and samples["heuristic_fallback"].notna().any():
            heuristic = int(samples["heuristic_fallback"].max())
        elif profile.heuristic_in_decisions:
            heuristic = c.heuristic
        policy_now = count_files(_profile_path(ctx, "policy_dir"))
        models_start = self.start.get("telemetry_models") or 0
        models_end = telemetry.get("total_models")
        valid_col = samples["telemetry_valid"].dropna() if "telemetry_valid" in samples else pd.Series(dtype=bool)
        telemetry_ok = bool(telemetry) and bool(valid_col.astype(bool).all()) and \
            isinstance(models_end, (int, float)) and models_end > models_start
        convergence: dict[str, Any] | None = None
        probe = next(iter(self.probes), None)
        if probe is not None:
            x, y = convergence_points(frame, f"probe_{probe}")
            convergence = convergence_trend(x, y, target=self.targets.get(probe))
            convergence.update(metric=probe, x="cycle", points=[[a, b] for a, b in zip(x, y)],
                               intercept=theil_sen_intercept(x, y, convergence["slope"]))
        return {
            "cycles": c.cycles,
            "draws_injected": self.injected,
            "draws_added": added,
            "draws_ingested": ingested,
            "draws_ingested_delta": max(abs(ingested - self.injected), sequence_errors),
            "draws_sequence_errors": sequence_errors,
            "daemon_lag_draws": lag,
            "selfplay_dispatches": c.selfplay,
            "learning_dispatches": c.learning,
            "heuristic_fallbacks": heuristic,
            "heuristic_steps": c.heuristic_steps,
            "policy_candidates": policy_now - int(self.start.get("policy_candidates") or 0),
            "telemetry_valid": telemetry_ok,
            "telemetry_models_start": models_start,
            "telemetry_models_end": models_end,
            "queue_stuck": len(stuck),
            "stuck_requests": stuck,
            "decision_bad_lines": c.bad_lines,
            "injection_errors": self.injection_errors,
            "convergence": convergence,
            "start": self.start,
        }

    def close(self, ctx: SoakContext | None = None) -> None:
        """Restore the operator's files now (idempotent; also runs when the soak ends otherwise)."""
        if self._after is not None:
            self._after.run()

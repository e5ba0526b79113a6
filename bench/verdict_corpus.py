"""The memory verdict measured on labelled curves: false FAIL, conclusive PASS and FAIL recall per class.

A seeded corpus of synthetic memory curves (MiB, AR(1) noise) in ten classes, five healthy
and five leaking, at 30 min, 1 h, 2 h and 4 h with 30 s sampling, and a 24 h subset at
1 Hz. Each curve is judged, side by side in the same run, by:

- ``soaklib``: ``soaklib.analysis.leak.leak_fit`` (data-driven warm-up / onset / step,
  sawtooth binning, effective-sample-size interval), as the signoff's memory rows use it;
- ``fixed 5%``: the previous verdict (``memory_growth``: Theil–Sen on binned medians after a
  warm-up of 5% of the run, at most 600 s, judged at both ends of its 95% interval);
- ``last − first``: the soak plan's rule, last − first sample against 50 / 200 MB per 4 h
  scaled to the run;
- ``lsq slope``: a whole-run least-squares slope (mprof's ``--slope``), its point value
  against 12.5 / 50 MiB/h.

Truth is defined against the plan's bounds (PASS ≤ 12.5 MiB/h, FAIL > 50 MiB/h) with an
indifference zone: healthy curves grow at most 6 MiB/h in their steady state, leaks at
least 100 MiB/h (uniform 100–300 MiB/h). A healthy curve judged FAIL is a false FAIL; a
leak judged FAIL is a hit. Noise: AR(1) with φ uniform 0.8–0.97 per 30 s (φ^(1/30) per
second at 1 Hz: the same correlation time) and a marginal SD uniform 1–4 MiB.

    .venv/bin/python bench/verdict_corpus.py [--quick] [--per-class 200] [--markdown bench/RESULTS.md]
"""
from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import signal

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import Report, parser, table
from soaklib.analysis.growth import memory_growth
from soaklib.analysis.leak import leak_fit
from soaklib.analysis.sequential import FailMonitor

MIB = 2**20
PASS_MB_H, FAIL_MB_H = 12.5, 50.0
SEED = 20261202
HEALTHY = ("flat", "warm-up then flat", "GC sawtooth", "one-time step", "slow growth < pass")
LEAKS = ("linear leak", "late-onset leak", "leak under sawtooth", "leak after warm-up", "staircase")
OVER_PASS = "growth just over the pass bound"  # 15–25 MiB/h: a PASS here is the PASS claim's error
Curve = tuple[np.ndarray, np.ndarray, dict[str, float]]  # t_s, MiB, planted facts (seconds)


def ar1(n: int, phi: float, sd: float, rng: np.random.Generator) -> np.ndarray:
    w = rng.normal(0.0, sd * math.sqrt(1 - phi * phi), n)
    w[0] = rng.normal(0.0, sd)  # start in the stationary distribution
    return signal.lfilter([1.0], [1.0, -phi], w)


def warmup_curve(t: np.ndarray, end_s: float, amp: float, rng: np.random.Generator) -> np.ndarray:
    """A cache filling: a linear ramp or a saturating exponential (99% at ``end_s``), then flat."""
    if rng.random() < 0.5:
        return amp * np.minimum(1.0, t / end_s)
    return amp * (1 - np.exp(-math.log(100.0) * t / end_s))


def sawtooth(t: np.ndarray, period_s: float, amp: float, rng: np.random.Generator) -> np.ndarray:
    phase = rng.random() * period_s
    return amp * (((t + phase) % period_s) / period_s)


def make(cls: str, length_s: float, dt_s: float, rng: np.random.Generator) -> Curve:
    t = np.arange(0.0, length_s + dt_s / 2, dt_s)
    phi30 = rng.uniform(0.8, 0.97)
    noise = ar1(t.size, phi30 ** (dt_s / 30.0), rng.uniform(1.0, 4.0), rng)
    base = rng.uniform(100.0, 2000.0)
    rate = rng.uniform(100.0, 300.0) / 3600.0  # MiB/s, leaks
    facts: dict[str, float] = {}
    if cls == "flat":
        y = np.zeros_like(t)
    elif cls in ("warm-up then flat", "leak after warm-up"):
        end = min(rng.uniform(180.0, 1200.0), 0.6 * length_s)
        y = warmup_curve(t, end, rng.uniform(20.0, 200.0), rng)
        facts["warmup_end_s"] = end
        if cls == "leak after warm-up":
            y = y + rate * t
    elif cls in ("GC sawtooth", "leak under sawtooth"):
        y = sawtooth(t, rng.uniform(120.0, 600.0), rng.uniform(10.0, 40.0), rng)
        if cls == "leak under sawtooth":
            y = y + rate * t
    elif cls == "one-time step":
        at = rng.uniform(0.15, 0.85) * length_s
        y = np.where(t >= at, rng.uniform(10.0, 80.0), 0.0)
        facts["step_s"] = at
    elif cls in ("slow growth < pass", OVER_PASS):
        facts["rate_mb_h"] = rng.uniform(0.0, 6.0) if cls != OVER_PASS else rng.uniform(15.0, 25.0)
        y = facts["rate_mb_h"] / 3600.0 * t
    elif cls == "linear leak":
        y = rate * t
    elif cls == "late-onset leak":
        onset = rng.uniform(0.3, 0.7) * length_s
        y = rate * np.maximum(0.0, t - onset)
        facts["onset_s"] = onset
    elif cls == "staircase":
        period = rng.uniform(120.0, 360.0)
        y = rate * period * np.floor((t + rng.random() * period) / period)
    else:
        raise ValueError(cls)
    if cls in ("flat", "warm-up then flat", "GC sawtooth", "one-time step"):
        facts["rate_mb_h"] = 0.0
    elif cls in LEAKS:
        facts["rate_mb_h"] = rate * 3600.0
    return t, base + y + noise, facts


# --------------------------------------------------------------------------- the four verdicts


def status(lo: float, hi: float) -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "WARN"
    return "PASS" if hi <= PASS_MB_H else ("FAIL" if lo > FAIL_MB_H else "WARN")


def v_soaklib(t: np.ndarray, y: np.ndarray, out: dict[str, float]) -> str:
    fit = leak_fit(t, y * MIB)
    out["low"], out["high"] = fit.low_per_h / MIB, fit.high_per_h / MIB
    out["warmup_end_s"] = fit.warmup_end_s if fit.warmup_end_s is not None else math.nan
    out["onset_s"] = fit.onset_s if fit.onset_s is not None else math.nan
    return fit.status(PASS_MB_H * MIB, FAIL_MB_H * MIB)


def v_fixed(t: np.ndarray, y: np.ndarray, out: dict[str, float]) -> str:
    span = float(t[-1] - t[0])
    m = memory_growth(pd.DataFrame({"t_s": t, "rss_bytes": y * MIB}), warmup_s=min(600.0, 0.05 * span))
    out["low"], out["high"] = m["slope_low_mb_per_h"], m["slope_high_mb_per_h"]
    return status(m["slope_low_mb_per_h"], m["slope_high_mb_per_h"])


def v_plan(t: np.ndarray, y: np.ndarray, out: dict[str, float]) -> str:
    scale = (t[-1] - t[0]) / (4 * 3600.0)
    g = float(y[-1] - y[0])
    return "PASS" if g <= 50.0 * scale else ("FAIL" if g > 200.0 * scale else "WARN")


def v_lsq(t: np.ndarray, y: np.ndarray, out: dict[str, float]) -> str:
    s = float(np.polyfit(t, y, 1)[0]) * 3600.0
    return "PASS" if s <= PASS_MB_H else ("FAIL" if s > FAIL_MB_H else "WARN")


METHODS: dict[str, Callable[[np.ndarray, np.ndarray, dict[str, float]], str]] = {
    "soaklib": v_soaklib, "fixed 5%": v_fixed, "last − first": v_plan, "lsq slope": v_lsq}


def run_corpus(lengths: list[tuple[str, float, float, int]], seed: int) -> pd.DataFrame:
    rows = []
    for li, (label, length_s, dt_s, per_class) in enumerate(lengths):
        for ci, cls in enumerate(HEALTHY + LEAKS):
            rng = np.random.default_rng([seed, li, ci])
            for k in range(per_class):
                t, y, facts = make(cls, length_s, dt_s, rng)
                row: dict[str, object] = {"length": label, "length_s": length_s, "class": cls,
                                          "leak": cls in LEAKS, "k": k}
                for name, fn in METHODS.items():
                    found: dict[str, float] = {}
                    t_start = time.process_time()
                    row[name] = fn(t, y, found)
                    row[f"{name} ms"] = (time.process_time() - t_start) * 1e3
                    if name == "soaklib":
                        row["found_warmup_s"] = found["warmup_end_s"]
                        row["found_onset_s"] = found["onset_s"]
                    if name in ("soaklib", "fixed 5%"):
                        rate = facts.get("rate_mb_h", math.nan)
                        row[f"covers {name}"] = bool(found["low"] <= rate <= found["high"])
                row["planted_warmup_s"] = facts.get("warmup_end_s", math.nan)
                row["planted_onset_s"] = facts.get("onset_s", math.nan)
                rows.append(row)
    return pd.DataFrame(rows)


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def per_class_table(df: pd.DataFrame, label: str) -> str:
    d = df[df["length"] == label]
    out = []
    for cls in HEALTHY + LEAKS:
        g = d[d["class"] == cls]
        leak = cls in LEAKS
        cells = [cls, "leak" if leak else "healthy", str(len(g))]
        for name in METHODS:
            fail = (g[name] == "FAIL").mean()
            ok = (g[name] == "PASS").mean()
            cells.append(f"**{pct(fail)}**" if leak else f"{pct(fail)} / {pct(ok)}")
        out.append(cells)
    head = ["class", "truth", "n"] + [f"{m}: recall" if False else m for m in METHODS]
    return (f"**{label}** — healthy: false FAIL / conclusive PASS; leaks: FAIL recall (bold)\n\n"
            + table(head, out))


def acceptance_table(df: pd.DataFrame, labels: list[str]) -> str:
    rows = []
    for label in labels:
        d = df[df["length"] == label]
        h, lk = d[~d["leak"]], d[d["leak"]]
        worst_ff = h.groupby("class")["soaklib"].apply(lambda s: (s == "FAIL").mean())
        worst_rec = lk.groupby("class")["soaklib"].apply(lambda s: (s == "FAIL").mean())
        pass_all = (h["soaklib"] == "PASS").mean()
        worst_pass = h.groupby("class")["soaklib"].apply(lambda s: (s == "PASS").mean())
        hours = float(d["length_s"].iloc[0]) / 3600.0
        rec_goal = 0.99 if hours >= 1 else 0.95
        pass_goal = 0.95 if hours >= 2 else (0.80 if hours >= 1 else None)
        rows.append([
            label,
            f"{pct(worst_ff.max())} ({worst_ff.idxmax()}) {'✓' if worst_ff.max() <= 0.01 else '✗'}",
            f"{pct(worst_rec.min())} ({worst_rec.idxmin()}) {'✓' if worst_rec.min() >= rec_goal else '✗'} "
            f"(goal {pct(rec_goal)})",
            f"{pct(pass_all)}; worst {pct(worst_pass.min())} ({worst_pass.idxmin()})"
            + (f" {'✓' if pass_all >= pass_goal else '✗'} (goal {pct(pass_goal)})" if pass_goal else ""),
        ])
    return table(["length", "false FAIL, worst healthy class (goal ≤ 1%)", "FAIL recall, worst leak class",
                  "conclusive PASS, all healthy"], rows)


def locate_table(df: pd.DataFrame, labels: list[str]) -> str:
    rows = []
    for label in labels:
        d = df[df["length"] == label]
        L = float(d["length_s"].iloc[0])
        w = d[d["class"] == "warm-up then flat"]
        o = d[d["class"] == "late-onset leak"]
        werr = (w["found_warmup_s"] - w["planted_warmup_s"]).abs() / w["planted_warmup_s"]
        oerr = (o["found_onset_s"] - o["planted_onset_s"]).abs() / L
        rows.append([label, pct(w["found_warmup_s"].notna().mean()), pct(werr.median()) if werr.notna().any() else "–",
                     pct(o["found_onset_s"].notna().mean()),
                     pct(oerr.median()) if oerr.notna().any() else "–",
                     pct((oerr <= 0.10).mean())])
    return table(["length", "warm-up found", "warm-up end error, median (of its length)",
                  "onset found", "onset error, median (of the run)", "onset within ± 10% of the run"], rows)


COVERAGE_CLASSES = ("flat", "slow growth < pass", "GC sawtooth", "linear leak", "leak under sawtooth",
                    "late-onset leak", "leak after warm-up")


def coverage_table(df: pd.DataFrame, labels: list[str]) -> str:
    def cell(label: str, c: str) -> str:
        g = df[(df["length"] == label) & (df["class"] == c)]
        return f"{pct(g['covers soaklib'].mean())} ({pct(g['covers fixed 5%'].mean())})"

    rows = [[label] + [cell(label, c) for c in COVERAGE_CLASSES] for label in labels]
    return table(["length", *COVERAGE_CLASSES], rows)


def false_pass_table(lengths: list[tuple[str, float, float, int]], seed: int) -> str:
    """PASS on curves growing 15–25 MiB/h (above the pass bound, below the fail bound): the PASS claim's error."""
    rows = []
    for li, (label, length_s, dt_s, per_class) in enumerate(lengths):
        rng = np.random.default_rng([seed, li, 77])
        got: dict[str, list[str]] = {m: [] for m in METHODS}
        for _ in range(per_class):
            t, y, _facts = make(OVER_PASS, length_s, dt_s, rng)
            for name, fn in METHODS.items():
                got[name].append(fn(t, y, {}))
        rows.append([label, str(per_class)] + [pct(g.count("PASS") / len(g)) for g in got.values()])
    return table(["length", "n", *(f"{m}: PASS" for m in METHODS)], rows)


def cost_table(df: pd.DataFrame, labels: list[str]) -> str:
    rows = [[label] + [f"{df[df['length'] == label][f'{m} ms'].median():.2f}" for m in METHODS] for label in labels]
    return table(["length", *(f"{m} ms/curve" for m in METHODS)], rows)


def sequential(per_class: int, length_s: float, flush_s: float, min_spans: tuple[float, ...], seed: int
               ) -> pd.DataFrame:
    """stop_on_fail's rule at every flush of each curve: stopped or not, and when."""
    rows = []
    for ci, cls in enumerate(HEALTHY + LEAKS):
        rng = np.random.default_rng([seed, 99, ci])
        for _ in range(per_class):
            t, y, _facts = make(cls, length_s, 30.0, rng)
            row: dict[str, object] = {"class": cls, "leak": cls in LEAKS}
            for span in min_spans:
                mon = FailMonitor(PASS_MB_H * MIB, FAIL_MB_H * MIB, min_span_s=span)
                stop_s = math.nan
                for end in np.arange(flush_s, length_s + flush_s / 2, flush_s):
                    keep = t <= end
                    look = mon.look(t[keep], y[keep] * MIB)
                    if look is not None and look.stop:
                        stop_s = float(end)
                        break
                row[f"stop_s@{span:g}"] = stop_s
            rows.append(row)
    return pd.DataFrame(rows)


def flat_stops(n: int, length_s: float, flush_s: float, seed: int) -> int:
    """How many of ``n`` flat curves stop_on_fail's rule ends early (decisions from its default 10 min)."""
    rng = np.random.default_rng([seed, 7])
    stops = 0
    for _ in range(n):
        t, y, _facts = make("flat", length_s, 30.0, rng)
        mon = FailMonitor(PASS_MB_H * MIB, FAIL_MB_H * MIB)
        for end in np.arange(flush_s, length_s + flush_s / 2, flush_s):
            look = mon.look(t[t <= end], y[t <= end] * MIB)
            if look is not None and look.stop:
                stops += 1
                break
    return stops


def sequential_table(df: pd.DataFrame, min_spans: tuple[float, ...], length_s: float) -> str:
    rows = []
    for cls in HEALTHY + LEAKS:
        g = df[df["class"] == cls]
        cells = [cls, "leak" if cls in LEAKS else "healthy", str(len(g))]
        for span in min_spans:
            s = g[f"stop_s@{span:g}"]
            stopped = s.notna()
            if cls in LEAKS:
                cells.append(f"{stopped.sum()} stopped, median at {s.median() / 60:.1f} min" if stopped.any()
                             else "0 stopped")
            else:
                cells.append(f"**{stopped.sum()} false stops**" if stopped.any() else "0 false stops")
        rows.append(cells)
    heads = [f"decisions from {span / 60:g} min" for span in min_spans]
    return table(["class", "truth", "runs", *heads], rows)


# --------------------------------------------------------------------------- curves of real processes

#: Python daemons with planted behaviours, sampled at SAMPLE_S; one sample stands for 30 s of a soak
#: (TIME_SCALE), so their rates read in corpus units (MiB per corpus hour)
SAMPLE_S, TIME_SCALE = 0.1, 300.0
REAL = {
    "real: cache warms then flat": ("warm", False),
    "real: allocate and free in cycles": ("cycles", False),
    "real: leaks": ("leak", True),
}
_DAEMON = """
import sys, time
mode, end = sys.argv[1], time.monotonic() + float(sys.argv[2])
keep, t0 = [], time.monotonic()
while time.monotonic() < end:
    el = time.monotonic() - t0
    if mode == "warm" and el < 4.0:
        keep.append(bytearray(2 * 2**20))  # a cache filled: +100 MiB over 4 s (20 corpus min), then nothing
    elif mode == "cycles":
        keep.append(bytearray(2**20))  # +1 MiB per 0.1 s, all freed every 2 s (a GC sawtooth of 10 corpus min)
        if len(keep) >= 20:
            keep.clear()
    elif mode == "leak":
        keep.append(bytearray(2**20))  # +1 MiB per 0.1 s: 120 MiB per corpus hour, never freed
    time.sleep(0.1 if mode != "warm" or el >= 4.0 else 0.08)
"""


def record_real(seconds: float) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Start the three daemons at once, sample each one's RSS every SAMPLE_S with psutil, stop them."""
    import subprocess

    import psutil

    procs = {name: subprocess.Popen([sys.executable, "-c", _DAEMON, mode, str(seconds)])
             for name, (mode, _) in REAL.items()}
    series: dict[str, list[tuple[float, float]]] = {name: [] for name in REAL}
    try:
        t0 = time.monotonic()
        handles = {name: psutil.Process(p.pid) for name, p in procs.items()}
        tick = t0
        while time.monotonic() - t0 < seconds:
            for name, h in handles.items():
                try:
                    series[name].append((time.monotonic() - t0, h.memory_info().rss / MIB))
                except psutil.Error:
                    pass
            tick += SAMPLE_S
            time.sleep(max(0.0, tick - time.monotonic()))
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
    return [(name, np.array([a for a, _ in v]) * TIME_SCALE, np.array([b for _, b in v])) for name, v in series.items()]


def reference_flat_stops(runs: int, seconds: float, parallel: int = 8) -> tuple[int, int]:
    """stop_on_fail's rule on the reference daemon in its flat mode: (false stops, runs), each run its own process.

    RSS every 0.05 s for ``seconds`` after a 1 s start, one sample read as 30 s (decisions from 10 min: 20
    samples; a look every 2 samples, the 60 s flush)."""
    import subprocess
    import tempfile

    import psutil

    stops = done = 0
    scale = 30.0 / 0.05
    while done < runs:
        batch = min(parallel, runs - done)
        with tempfile.TemporaryDirectory() as tmp:
            procs = []
            for i in range(batch):
                d = Path(tmp) / f"p{i}"
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "soaklib.sim.watcher", "--project-dir", str(d), "--daemon", "--profile",
                     "watcher-v2", "--halt-file", str(d / "halt"), "--poll-s", "0.1"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            try:
                time.sleep(1.0)
                handles = [psutil.Process(p.pid) for p in procs]
                series: list[list[tuple[float, float]]] = [[] for _ in procs]
                t0 = tick = time.monotonic()
                while time.monotonic() - t0 < seconds:
                    for k, h in enumerate(handles):
                        series[k].append(((time.monotonic() - t0) * scale, float(h.memory_info().rss)))
                    tick += 0.05
                    time.sleep(max(0.0, tick - time.monotonic()))
            finally:
                for p in procs:
                    p.terminate()
                for p in procs:
                    try:
                        p.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait(timeout=10)
        for ser in series:
            t = np.array([a for a, _ in ser])
            v = np.array([b for _, b in ser])
            mon = FailMonitor(PASS_MB_H * MIB, FAIL_MB_H * MIB)
            for end in range(2, t.size + 1, 2):
                look = mon.look(t[:end], v[:end])
                if look is not None and look.stop:
                    stops += 1
                    break
        done += batch
    return stops, done


def real_table(reps: int, seconds: float) -> str:
    counts: dict[str, dict[str, list[str]]] = {name: {m: [] for m in METHODS} for name in REAL}
    for _ in range(reps):
        for name, t, y in record_real(seconds):
            for m, fn in METHODS.items():
                counts[name][m].append(fn(t, y, {}))
    rows = []
    for name, (_, leak) in REAL.items():
        cells = [name, "leak" if leak else "healthy", str(reps)]
        for m in METHODS:
            got = counts[name][m]
            cells.append(", ".join(f"{k} {got.count(k)}" for k in ("PASS", "WARN", "FAIL") if got.count(k)))
        rows.append(cells)
    return table(["process", "truth", "runs", *METHODS], rows)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--per-class", type=int, default=200, help="curves per class and length (30 s sampling)")
    p.add_argument("--per-class-24h", type=int, default=20, help="curves per class of the 24 h subset at 1 Hz")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--per-class-stop", type=int, default=40, help="curves per class for stop_on_fail's rule (2 h)")
    p.add_argument("--flat-stop", type=int, default=300, help="flat curves for the count of stop_on_fail's false stops")
    p.add_argument("--reference-stop", type=int, default=200, help="reference-daemon runs for the same count")
    args = p.parse_args()
    n, n24 = (8, 2) if args.quick else (args.per_class, args.per_class_24h)
    lengths = [("30 min", 1800.0, 30.0, n), ("1 h", 3600.0, 30.0, n), ("2 h", 7200.0, 30.0, n),
               ("4 h", 14400.0, 30.0, n)]
    if n24:
        lengths.append(("24 h at 1 Hz", 86400.0, 1.0, n24))
    rep = Report("Memory verdict on a labelled corpus (bench/verdict_corpus.py)", args.quick)
    wall = time.perf_counter()
    df = run_corpus(lengths, args.seed)
    labels = [x[0] for x in lengths]
    rep.add(f"{len(df)} curves, {len(HEALTHY) + len(LEAKS)} classes, seed {args.seed}; healthy ≤ 6 MiB/h, "
            "leaks 100–300 MiB/h; AR(1) noise φ 0.8–0.97 per 30 s, SD 1–4 MiB; "
            f"verdict bounds PASS ≤ {PASS_MB_H} MiB/h, FAIL > {FAIL_MB_H} MiB/h; "
            f"{time.perf_counter() - wall:.0f} s wall")
    rep.add("Acceptance figures of the soaklib verdict\n\n" + acceptance_table(df, labels))
    for label in labels:
        rep.add(per_class_table(df, label))
    rep.add("Warm-up and onset located by the soaklib verdict\n\n" + locate_table(df, labels))
    rep.add("Coverage of the 95% interval: curves whose interval holds the planted steady-state rate, soaklib "
            "(in brackets: the fixed 5% Theil–Sen interval)\n\n" + coverage_table(df, labels))
    rep.add("False PASS: curves growing 15–25 MiB/h (AR(1) noise as above), judged PASS (goal for soaklib: at "
            "most 5%, the level of its one-sided PASS test)\n\n" + false_pass_table(lengths, args.seed))
    n_stop = 2 if args.quick else args.per_class_stop
    spans = (600.0, 1200.0)
    wall = time.perf_counter()
    seq = sequential(n_stop, 7200.0, 60.0, spans, args.seed)
    rep.add(f"stop_on_fail's sequential rule (α = 0.01 spent over the looks) at every 60 s flush of 2 h curves, "
            f"decisions from 10 min (the default) and from 20 min (the corpus' longest warm-up); "
            f"{time.perf_counter() - wall:.0f} s\n\n" + sequential_table(seq, spans, 7200.0))
    n_flat = 4 if args.quick else args.flat_stop
    wall = time.perf_counter()
    flat = flat_stops(n_flat, 7200.0, 60.0, args.seed)
    rep.add(f"stop_on_fail on {n_flat} flat 2 h curves (AR(1) noise as above, decisions from 10 min, a look at every "
            f"60 s flush): **{flat} false stops** ({time.perf_counter() - wall:.0f} s)")
    n_ref, ref_s = (2, 2.0) if args.quick else (args.reference_stop, 6.0)
    wall = time.perf_counter()
    ref_stops, ref_runs = reference_flat_stops(n_ref, ref_s)
    rep.add(f"stop_on_fail on {ref_runs} runs of the reference daemon in its flat mode (each its own process; RSS "
            f"every 0.05 s for {ref_s:g} s read as {ref_s * 600 / 3600:.1f} h at 30 s, a look every 60 s, decisions "
            f"from 10 min): **{ref_stops} false stops** ({time.perf_counter() - wall:.0f} s)")
    reps, seconds = (1, 6.0) if args.quick else (3, 30.0)
    rep.add(f"Curves recorded from real Python processes with planted behaviours (RSS every {SAMPLE_S:g} s for "
            f"{seconds:g} s, one sample read as 30 s: {seconds * TIME_SCALE / 3600:.1f} h of soak), verdicts per run\n\n"
            + real_table(reps, seconds))
    rep.add("CPU per curve (median)\n\n" + cost_table(df, labels))
    rep.write(args.markdown)


if __name__ == "__main__":
    main()

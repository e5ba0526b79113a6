"""The analyst's page and view at scale: 1 hour, 1 day and 7 days of samples at 1 Hz.

For each size a synthetic soak A run (``analysis_scale.make_run``: the sampler's schema, a
planted leak, an LLM outage) is analysed by the watcher_soak notebook under papermill
(load mode), exported by ``soak report`` to one self-contained HTML page, and opened in
headless Chromium (the flags of ``tests/browser.py``, a fresh profile each time): the
render time is from navigation until every image has loaded and explore's figure has
drawn its points: the first open in a fresh browser (plotly.js compiled cold) and a reload
in the same browser (median of 3 browsers). ``explore`` itself is timed in this process on
the same run: building the view, a zoom into one hour (the visible range redrawn from
all samples at MinMaxLTTB density), a zoom back out, and a warm-up change (the memory
rows recomputed); medians of 5.

    .venv/bin/python bench/report_scale.py [--quick] [--markdown bench/RESULTS.md]
"""
from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, Report, parser, table
from analysis_scale import make_run

sys.path.insert(0, str(ROOT))
MIB = 2**20
NOTEBOOK = ROOT / "notebooks" / "watcher_soak.ipynb"
SIZES = {"1 h": 3600, "1 day": 86_400, "7 days": 7 * 86_400}


def median_s(fn, n: int) -> tuple[float, float, float]:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times), max(times)


def render_times(html: Path, loads: int) -> tuple[float, float, list[str]] | None:
    """Median seconds until the page has drawn: first open in a fresh browser profile, and a
    reload in the same browser (None without chromium); with the console errors seen."""
    from tests.browser import CHROMIUM, DRIVER, chromium_driver, open_page

    if not (CHROMIUM and DRIVER):
        return None
    cold, warm, errors = [], [], []
    for _ in range(loads):
        gen = chromium_driver()
        driver = next(gen)
        try:
            for times in (cold, warm):
                page = open_page(driver, html, expect_figures=1)
                if not page.figure_points or not all(page.figure_points) or not all(w > 0 for w, _ in page.images):
                    raise RuntimeError(f"{html.name}: a figure or an image did not draw")
                times.append(page.render_s)
                errors += page.console_errors
        finally:
            gen.close()
    return statistics.median(cold), statistics.median(warm), errors


def explore_times(run_dir: Path, repeat: int) -> dict[str, tuple[float, float, float]]:
    from soaklib import explore, load_run

    run = load_run(run_dir)
    out = {"build": median_s(lambda: explore(run), max(1, repeat // 2))}
    e = explore(run)
    mid = e.span_s / 2
    out["zoom 1 h"] = median_s(lambda: e.zoom(mid, mid + min(3600.0, e.span_s / 4)), repeat)
    out["zoom out"] = median_s(lambda: e.zoom(None, None), repeat)
    out["warm-up"] = median_s(lambda: e.set_warmup(e.warmup_s + 1.0), repeat)
    return out


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    args = p.parse_args()
    sizes = {"10 min": 600} if args.quick else SIZES
    loads, repeat = (1, 2) if args.quick else (3, 5)
    rep = Report("The analyst's page and view at scale", args.quick)
    work = Path(tempfile.mkdtemp(prefix="soak-bench-report-"))
    rows, view_rows, errors = [], [], []
    try:
        for label, n in sizes.items():
            run_dir = make_run(work, n)
            nb = run_dir.parent / f"{run_dir.name}.ipynb"
            t = time.monotonic()
            subprocess.run([sys.executable, "-m", "papermill", "--log-level", "WARNING", "-k", "python3",
                            str(NOTEBOOK), str(nb), "-p", "run_dir", str(run_dir), "-p", "fail_on_gate", "False"],
                           cwd=ROOT, check=True, capture_output=True, timeout=1800)
            nb_s = time.monotonic() - t
            t = time.monotonic()
            subprocess.run([str(Path(sys.executable).parent / "soak"), "report", str(nb)], cwd=ROOT, check=True,
                           capture_output=True, timeout=600)
            export_s = time.monotonic() - t
            html = nb.with_suffix(".html")
            rendered = render_times(html, loads)
            if rendered:
                errors += rendered[2]
            rows.append([label, f"{n:,}", f"{html.stat().st_size / MIB:.1f}", f"{nb.stat().st_size / MIB:.1f}",
                         f"{nb_s:.1f}", f"{export_s:.1f}", *((f"{rendered[0]:.2f}", f"{rendered[1]:.2f}") if rendered
                                                            else ("no chromium", "–"))])
            ex = explore_times(run_dir, repeat)
            view_rows.append([label, *(f"{ex[k][0] * 1000:.0f} ({ex[k][1] * 1000:.0f}–{ex[k][2] * 1000:.0f})"
                                       for k in ("build", "zoom 1 h", "zoom out", "warm-up"))])
            print(f"  {label}: html {html.stat().st_size / MIB:.1f} MiB", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rep.add("HTML page per run length (1 Hz samples; render: headless Chromium, median of "
            f"{loads} loads; console errors seen: {len(errors)})\n\n" + table(
                ["run", "samples", "HTML MiB", "executed .ipynb MiB", "notebook s", "export s", "first open s",
                 "reload s"], rows))
    rep.add("explore in this process, ms, median (min–max) of "
            f"{repeat}: explore redraw after a zoom\n\n" + table(
                ["run", "build", "zoom 1 h", "zoom out", "warm-up change"], view_rows))
    rep.write(args.markdown)


if __name__ == "__main__":
    main()

"""Parquet store: samples per second ``PartWriter`` sustains with a flush every 1 s and 60 s.

Rows are the sampler's (its schema, realistic values, as ``Sampler.sample`` returns them).

- Cost of one part: append ``k`` rows and flush them (``pa.Table.from_pylist``, parquet to a
  temporary name, rename), for k from 1 to 60,000; a least-squares fit
  ``time = a + b·k`` (a: per file, b: per row). Arriving at R samples/s with a flush every F
  seconds makes parts of k = R·F rows, so the store keeps up while ``a + b·R·F ≤ F``: it
  sustains ``R = (F − a) / (b·F)``.
- Bytes per sample on disk, and the time to load a run back (``read_parts``), for an hour
  of samples at 1 s flushed every 1 s (3,600 parts), every 60 s (60 parts) and as one part.
- Memory held per buffered row (a 60 s flush holds R·60 rows).

    .venv/bin/python bench/store_throughput.py [--quick] [--markdown bench/RESULTS.md]
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from _common import ROOT, Report, Stat, num, parser, table
from analysis_scale import synthetic_samples

sys.path.insert(0, str(ROOT))
import numpy as np
import pyarrow.dataset as ds

from soaklib.parts import PartWriter, read_parts
from soaklib.soak.sampling import sample_schema


def rows_of(n: int) -> list[dict]:
    return synthetic_samples(0, n, "bench-store", np.random.default_rng(1)).to_pylist()


def part_cost_s(rows: list[dict], k: int, folder: Path, repeats: int) -> Stat:
    """Wall seconds to append ``k`` rows and flush them as one part (median of repeats)."""
    out = Stat()
    for i in range(repeats):
        w = PartWriter(folder / f"k{k}-{i}", schema=sample_schema())
        t = time.perf_counter()
        for r in rows[:k]:
            w.append(r)
        w.flush()
        out.values.append(time.perf_counter() - t)
    return out


def an_hour(rows: list[dict], flush_every: int | None, folder: Path) -> dict:
    """An hour of 1 s samples flushed every ``flush_every`` rows (None: one part); size and load time."""
    w = PartWriter(folder, schema=sample_schema())
    t = time.perf_counter()
    for i, r in enumerate(rows, 1):
        w.append(r)
        if flush_every and i % flush_every == 0:
            w.flush()
    w.flush()
    write_s = time.perf_counter() - t
    size = sum(p.stat().st_size for p in folder.iterdir())
    t = time.perf_counter()
    frame = read_parts(folder)
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    one_read = ds.dataset(sorted(str(p) for p in folder.iterdir()), format="parquet").to_table().to_pandas()
    dataset_s = time.perf_counter() - t
    assert len(frame) == len(one_read) == len(rows)
    return {"parts": w.parts_written, "bytes_per_sample": size / len(rows), "write_s": write_s, "load_s": load_s,
            "dataset_s": dataset_s}


def buffered_bytes_per_row(rows: list[dict]) -> float:
    w = PartWriter(tempfile.mkdtemp(prefix="soak-bench-store-mem-"), schema=sample_schema())
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for r in rows:
        w.append(r)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    shutil.rmtree(w.folder, ignore_errors=True)
    return held / len(rows)


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    q = args.quick
    ks = [1, 60] if q else [1, 10, 60, 600, 6000, 60000]
    repeats = 1 if q else 5
    hour = 60 if q else 3600
    rep = Report("Parquet store: throughput and size", q)
    rows = rows_of(max(max(ks), hour))
    work = Path(tempfile.mkdtemp(prefix="soak-bench-store-"))
    try:
        costs = {k: part_cost_s(rows, k, work, repeats) for k in ks}
        x = np.array(ks, dtype=float)
        y = np.array([costs[k].median for k in ks])
        b, a = np.polyfit(x, y, 1, w=1 / y)  # relative errors: the 1-row part matters as much as the big one
        cost_rows = [[num(k), f"{costs[k].median * 1000:.2f} ({costs[k].lo * 1000:.2f}–{costs[k].hi * 1000:.2f})",
                      f"{costs[k].median / k * 1e6:.1f}", num(k / costs[k].median, 0)] for k in ks]
        rep.add(table(["rows per part", "ms to append + flush (min–max)", "µs per row", "rows/s at this part size"],
                      cost_rows))
        sustained = {f: (f - a) / (b * f) for f in (1.0, 60.0)}
        per_row_mem = buffered_bytes_per_row(rows[:5000])
        rep.add(f"Fit time = a + b·k: a = {a * 1000:.2f} ms per part file, b = {b * 1e6:.1f} µs per row. "
                f"Sustained (flat out, parts of R·F rows): flush every 1 s → {num(sustained[1.0], 0)} samples/s; "
                f"flush every 60 s → {num(sustained[60.0], 0)} samples/s, but buffering "
                f"{num(sustained[60.0] * 60, 0)} rows takes {num(sustained[60.0] * 60 * per_row_mem / 2**20, 0)} MB "
                f"({num(per_row_mem, 0)} bytes per buffered row). At one sample a second the store costs "
                f"{(a + b) * 1e6:.0f} µs per sample with a flush every 1 s and {(a / 60 + b) * 1e6:.0f} µs with a "
                f"flush every 60 s.")
        sizes = []
        for label, every in ((f"flush every 1 s ({hour} parts)", 1), (f"flush every 60 s ({hour // 60} parts)", 60),
                             ("one part", None)):
            r = an_hour(rows[:hour], every, work / f"hour-{every}")
            sizes.append([label, num(r["bytes_per_sample"], 0), f"{r['write_s']:.2f}", f"{r['load_s']:.2f}",
                          f"{r['load_s'] / r['parts'] * 1000:.1f}", f"{r['dataset_s']:.2f}"])
        rep.add(table([f"{hour} samples at 1 s", "bytes per sample on disk", "write s", "load s (read_parts)",
                       "load ms per part", "load s (one pyarrow.dataset read)"], sizes))
        rep.add("A sample is one row of the sampler's 45 columns. Small parts cost a file each on disk (parquet "
                "footer and schema) and a file open and decode each at load time; `read_parts` also converts "
                "each part to pandas before concatenating, where one `pyarrow.dataset` read converts once.")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rep.write(args.markdown)


if __name__ == "__main__":
    main()

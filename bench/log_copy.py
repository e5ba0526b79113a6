"""The target's output: a bounded copy through a pipe against the file the target writes itself.

A child writes N MiB of log lines (quiet INFO lines, or every line an ERROR) as fast as it
can. Side by side, repeated round-robin:

- **file**: the child's stdout is ``target.log`` (the first layout); one ``LogScanner`` reads
  it incrementally until it has seen every byte (the sampler's way, 16 MiB per read).
- **copy**: the child's stdout is a pipe into ``LogCopy`` (``sampling.target_log_max_mb``
  limit), whose thread hands each block of lines to ``LogScanner.feed``.

Reported: wall time until every line is counted, the harness's CPU per MiB, throughput,
the file left on disk, and that both counted every error line.

    .venv/bin/python bench/log_copy.py [--quick] [--markdown bench/RESULTS.md]
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, Report, Stat, num, parser, ratio, table

sys.path.insert(0, str(ROOT))
from soaklib.observe.readers import LogScanner
from soaklib.params import SamplingParams
from soaklib.proc.logcopy import LogCopy

MIB = 2**20
LINES = {"quiet": "2026-01-01 00:00:00 [INFO] cycle 1234 done in 0.52 s, queue 0\n",
         "errors": "2026-01-01 00:00:00 [ERROR] request 1234 failed: timeout\n"}


def writer(line: str, mib: int) -> list[str]:
    block = 4096
    n = mib * MIB // (len(line) * block)
    return [sys.executable, "-c", f"import sys\nb = {line!r} * {block}\nfor _ in range({n}): sys.stdout.write(b)\n"]


def scanner() -> LogScanner:
    s = SamplingParams()
    return LogScanner([], s.error_regex, s.traceback_regex)


def by_file(folder: Path, argv: list[str]) -> tuple[float, float, int, int]:
    log = folder / "target.log"
    sc = LogScanner([log], SamplingParams().error_regex, SamplingParams().traceback_regex, from_end=False)
    t, c = time.perf_counter(), time.process_time()
    with open(log, "wb") as out:
        p = subprocess.Popen(argv, stdout=out)
    while p.poll() is None:
        sc.scan()
        time.sleep(0.01)
    sc.scan(drain=True)
    return time.perf_counter() - t, time.process_time() - c, sc.errors, log.stat().st_size


def by_copy(folder: Path, argv: list[str], max_mb: int) -> tuple[float, float, int, int]:
    sc = scanner()
    copy = LogCopy(folder / "target.log", max_mb * MIB)
    copy.attach(sc.feed)
    t, c = time.perf_counter(), time.process_time()
    p = subprocess.Popen(argv, stdout=copy.fileno())
    copy.start()
    p.wait()
    st = copy.close(60)
    return time.perf_counter() - t, time.process_time() - c, sc.errors, st.bytes_kept


def main() -> None:
    args = parser(__doc__.split("\n")[0]).parse_args()
    q = args.quick
    mib, repeats, max_mb = (4, 1, 1) if q else (200, 3, 64)
    rep = Report("The target's output: bounded copy through a pipe vs the file itself", q)
    rows = []
    for kind, line in LINES.items():
        argv = writer(line, mib)
        expect = 0 if kind == "quiet" else (mib * MIB // (len(line) * 4096)) * 4096
        res: dict[str, list[tuple[float, float, int, int]]] = {"file": [], "copy": []}
        for _ in range(repeats):
            for how in ("file", "copy"):
                with tempfile.TemporaryDirectory() as d:
                    res[how].append(by_file(Path(d), argv) if how == "file" else by_copy(Path(d), argv, max_mb))
        cpu = {h: Stat([r[1] * 1000 / mib for r in v]) for h, v in res.items()}
        wall = {h: Stat([r[0] for r in v]) for h, v in res.items()}
        for how in ("file", "copy"):
            v = res[how]
            rows.append([kind, how, f"{mib} MiB", wall[how].fmt(2, " s"), num(mib / wall[how].median, 0) + " MiB/s",
                         cpu[how].fmt(1), f"{v[-1][3] / MIB:.1f} MiB",
                         "exact" if all(r[2] == expect for r in v) else f"{v[-1][2]:,} of {expect:,}"])
        rows.append([kind, "copy ÷ file", "", ratio(wall["copy"].median, wall["file"].median), "",
                     ratio(cpu["copy"].median, cpu["file"].median), "", ""])
    rep.add(table(["log", "how", "written", "wall (median, min–max)", "throughput", "harness CPU ms per MiB",
                   "on disk after", "error lines counted"], rows))
    rep.add(f"Median (min–max) of {repeats} repeat(s), run round-robin. The copy's limit is {max_mb} MiB "
            "(`sampling.target_log_max_mb`); the file is the whole output. Both count with the default "
            "`sampling.error_regex`, `(?i)\\b(error|exception)\\b`.")
    rep.write(args.markdown)


if __name__ == "__main__":
    main()

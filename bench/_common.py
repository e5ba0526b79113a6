"""Shared helpers of the benchmarks: machine description, statistics, tables, Markdown output.

Each benchmark prints Markdown tables (readable in a terminal, pasteable into
``bench/RESULTS.md``) and, with ``--markdown FILE``, appends its section there with the
machine, the date and the command. Not imported by soaklib or its tests.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("psutil", "pandas", "pyarrow", "numpy", "scipy", "matplotlib", "papermill", "psrecord")


def parser(description: str) -> argparse.ArgumentParser:
    """The flags every benchmark has: ``--quick`` (tiny sizes) and ``--markdown FILE``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks that the script runs (seconds)")
    p.add_argument("--markdown", metavar="FILE", help="append the results as a Markdown section to FILE")
    return p


# --------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / (1 << 20)
    except OSError:
        pass
    return None


def _commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=False)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "soaklib", "bench"],
                               capture_output=True, text=True, timeout=10, check=False)
        return out.stdout.strip() + ("+local changes" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> dict[str, str]:
    """What the numbers were measured on: CPU, cores, RAM, OS, Python, package versions, commit."""
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    ram = _ram_gib()
    return {
        "cpu": f"{_cpu_model()}, {os.cpu_count()} cores",
        "ram": f"{ram:.1f} GiB" if ram else "unknown",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "packages": ", ".join(versions),
        "commit": _commit(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


# --------------------------------------------------------------------------- measuring


def cpu_s() -> float:
    """CPU seconds (user + system) of this process and of its reaped children."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def children_cpu_s() -> float:
    """CPU seconds (user + system) of the reaped children of this process."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return kids.ru_utime + kids.ru_stime


def per_call_us(fn: Callable[[], Any], n: int, warmup: int = 10) -> float:
    """CPU microseconds (``time.process_time``) per call of ``fn`` over ``n`` calls after a warm-up."""
    for _ in range(warmup):
        fn()
    start = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - start) / n * 1e6


@dataclass
class Stat:
    """Median and range of repeated measurements."""

    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def lo(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def hi(self) -> float:
        return max(self.values) if self.values else float("nan")

    def fmt(self, digits: int = 1, unit: str = "") -> str:
        """``median (min–max)``."""
        if not self.values:
            return "–"
        m, lo, hi = (num(x, digits) for x in (self.median, self.lo, self.hi))
        return f"{m}{unit} ({lo}–{hi})" if len(self.values) > 1 else f"{m}{unit}"


def num(x: float | int | None, digits: int = 1) -> str:
    """A number for a table: thousands separated, ``digits`` decimals below 1000."""
    if x is None or (isinstance(x, float) and x != x):
        return "–"
    if isinstance(x, int) or abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}f}"


def ratio(a: float, b: float) -> str:
    """``a / b`` as ``123×`` (one decimal below 10)."""
    if not b or a != a or b != b:
        return "–"
    r = a / b
    return f"{r:.1f}×" if r < 10 else f"{r:,.0f}×"


# --------------------------------------------------------------------------- output


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table with padded columns (readable as plain text too)."""
    body = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "| " + " | ".join("-" * w for w in widths) + " |", *map(line, body)])


class Report:
    """Collects a benchmark's text; prints it as it goes and can append it as a Markdown section."""

    def __init__(self, title: str, quick: bool) -> None:
        self.title, self.quick = title, quick
        self.parts: list[str] = []
        self.command = " ".join(shlex.quote(a) for a in [".venv/bin/python", *(_rel(a) for a in sys.argv)])
        self.machine = machine()

    def add(self, text: str) -> None:
        self.parts.append(text)
        print(text + "\n", flush=True)

    def markdown(self) -> str:
        m = self.machine
        head = [
            f"## {self.title}{' (quick)' if self.quick else ''}",
            "",
            f"- command: `{self.command}`",
            f"- date: {m['date']}; commit {m['commit']}",
            f"- machine: {m['cpu']}, {m['ram']} RAM, {m['os']}, Python {m['python']}",
            f"- packages: {m['packages']}",
            "",
            "",
        ]
        return "\n".join(head) + "\n\n".join(self.parts) + "\n"

    def write(self, path: str | None) -> None:
        if path:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write("\n" + self.markdown())
            print(f"appended to {path}")


def _rel(arg: str) -> str:
    try:
        return str(Path(arg).resolve().relative_to(ROOT)) if Path(arg).exists() else arg
    except ValueError:
        return arg

"""Incremental readers of what the target writes: growing logs, folders, JSON files.

A growing file is read from byte offsets (each byte once, rotation- and truncation-safe,
starting where the file ended when the soak began), so reading costs what was appended,
never the size of the file. JSON files are re-parsed only when their stat changes. A missing
or half-written file is "no value yet", never an exception.
"""
from __future__ import annotations

import fnmatch
import functools
import json
import math
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from soaklib.errors import ParameterError
from soaklib.redact import redact

MAX_READ_BYTES = 16 << 20  # per reader per call: a burst is read over several ticks
MAX_LINE_BYTES = 1 << 20  # a longer unterminated line is emitted as is
REDUCES = ("value", "len", "sum", "mean", "max", "min")

# --------------------------------------------------------------------------- growing files


class IncrementalReader:
    """Complete new lines of a growing file, each byte read once; no file handle kept.

    Starts at the size the file had when the reader was made (``from_end``), so only what
    is appended during the soak is seen. A new inode (rotation) or a smaller size
    (truncation) restarts at 0 of the new file; a missing file yields no lines.
    """

    def __init__(self, path: str | os.PathLike[str], *, from_end: bool = True) -> None:
        self.path = Path(path)
        self.offset = 0
        self.bytes_read = 0
        self.rotations = 0
        self._ident: tuple[int, int] | None = None
        self._partial = b""
        if from_end:
            try:
                st = os.stat(self.path)
                self.offset, self._ident = st.st_size, (st.st_dev, st.st_ino)
            except OSError:
                pass

    def read_lines(self, *, final: bool = False) -> list[str]:
        """New complete lines since the last call (a partial last line waits for its newline;
        ``final``: the writer is gone, so the partial line is a line too)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return self._final() if final else []
        ident = (st.st_dev, st.st_ino)
        if (self._ident is not None and ident != self._ident) or st.st_size < self.offset:
            self.offset, self._partial = 0, b""
            self.rotations += 1
        self._ident = ident
        if st.st_size == self.offset:
            return self._final() if final else []
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read(min(st.st_size - self.offset, MAX_READ_BYTES))
        except OSError:
            return []
        self.offset += len(data)
        self.bytes_read += len(data)
        chunks = (self._partial + data).split(b"\n")
        self._partial = chunks.pop()
        if len(self._partial) > MAX_LINE_BYTES:
            chunks.append(self._partial)
            self._partial = b""
        return [c.rstrip(b"\r").decode("utf-8", errors="replace") for c in chunks]

    def _final(self) -> list[str]:
        line, self._partial = self._partial, b""
        return [line.rstrip(b"\r").decode("utf-8", errors="replace")] if line else []


class LogScanner:
    """Cumulative error / traceback (/ heuristic-fallback) line counts over the target's logs."""

    def __init__(
        self,
        paths: Iterable[str | os.PathLike[str]],
        error_regex: str,
        traceback_regex: str,
        *,
        heuristic_regex: str | None = None,
        from_end: bool = True,
        keep_first: int = 5,
    ) -> None:
        self.readers = [IncrementalReader(p, from_end=from_end) for p in paths]
        self._error = re.compile(error_regex)
        self._traceback = re.compile(traceback_regex)
        self._heuristic = re.compile(heuristic_regex) if heuristic_regex else None
        self._error_pre, self._traceback_pre, self._heuristic_pre = (
            _chunk_prefilter(p) for p in (self._error, self._traceback, self._heuristic))
        self.errors = 0
        self.tracebacks = 0
        self.heuristics = 0
        self.keep_first = keep_first
        self.first_errors: list[str] = []
        self.bytes_fed = 0  # bytes handed to ``feed`` (a copy of the target's output)
        self._lock = threading.Lock()  # ``feed`` runs on the copy's thread
        self._fed_first: list[str] = []

    @property
    def bytes_read(self) -> int:
        return sum(r.bytes_read for r in self.readers) + self.bytes_fed

    def feed(self, text: str, n_bytes: int) -> None:
        """Count the complete lines (one text, ``\n``-separated) handed over by a copy of the
        target's output (any thread); split into lines only when a pattern matches."""
        with self._lock:
            if text:
                self._fed_first += self._count(None, text)
            self.bytes_fed += n_bytes

    def scan(self, *, drain: bool = False) -> list[str]:
        """Read what was appended; returns the error lines newly kept in ``first_errors``.

        Each regex first searches the whole new chunk (line-anchored): only a regex that
        matches somewhere is then run line by line, so a quiet log costs one search per
        regex per sample, not one per line. ``drain``: the writers are gone, so read to the
        end of every file (not at most ``MAX_READ_BYTES``), partial last lines included.
        """
        with self._lock:
            new_first, self._fed_first = self._fed_first, []
            for reader in self.readers:
                while True:
                    lines = reader.read_lines(final=drain)
                    new_first += self._count(lines)
                    if not (drain and lines):
                        break
        return new_first

    def _count(self, lines: list[str] | None, text: str | None = None) -> list[str]:
        new_first: list[str] = []
        if lines or text:
            chunk = text if text is not None else "\n".join(lines or [])
            error, tb, heur = (
                pattern if pattern is not None and (pre is None or pre.search(chunk)) else None
                for pattern, pre in ((self._error, self._error_pre), (self._traceback, self._traceback_pre),
                                     (self._heuristic, self._heuristic_pre))
            )
            if error is None and tb is None and heur is None:
                return new_first
            if lines is None:
                lines = chunk.splitlines()
            for line in lines:
                is_error = bool(error is not None and error.search(line))
                is_tb = bool(tb is not None and tb.search(line))
                self.errors += is_error
                self.tracebacks += is_tb
                if heur is not None and heur.search(line):
                    self.heuristics += 1
                if (is_error or is_tb) and len(self.first_errors) < self.keep_first:
                    kept = (redact(line.strip()) or "")[:500]
                    self.first_errors.append(kept)
                    new_first.append(kept)
        return new_first


def _chunk_prefilter(pattern: re.Pattern[str] | None) -> re.Pattern[str] | None:
    """The pattern made line-anchored for a search over many lines at once; None when that
    could miss a per-line match (``\\A`` / ``\\Z`` anchors), so every line is searched."""
    if pattern is None or "\\A" in pattern.pattern or "\\Z" in pattern.pattern:
        return None
    return re.compile(pattern.pattern, pattern.flags | re.MULTILINE)


# --------------------------------------------------------------------------- folders and JSON


def dir_bytes(paths: Iterable[str | os.PathLike[str]]) -> int:
    """Bytes of the files under ``paths`` (recursive, no symlinks followed, each inode once).

    One ``stat`` per file (directory entries tell files from folders); vanished entries and
    unreadable folders are skipped.
    """
    seen: set[tuple[int, int]] = set()
    total = 0
    folders: list[str] = []

    def add(st: os.stat_result) -> None:
        nonlocal total
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size

    for p in paths:
        try:
            st = os.stat(p, follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            folders.append(os.fspath(p))
        elif stat.S_ISREG(st.st_mode):
            add(st)
    while folders:
        try:
            with os.scandir(folders.pop()) as it:
                for e in it:
                    try:
                        if e.is_dir(follow_symlinks=False):
                            folders.append(e.path)
                        elif e.is_file(follow_symlinks=False):
                            add(e.stat(follow_symlinks=False))
                    except OSError:
                        continue
        except OSError:
            continue
    return total


@functools.lru_cache(maxsize=64)
def _name_matcher(pattern: str) -> Callable[[str], Any]:
    return re.compile(fnmatch.translate(pattern)).match


def count_files(folder: str | os.PathLike[str], pattern: str = "*") -> int:
    """Visible files in ``folder`` whose names match ``pattern`` (0 when it does not exist)."""
    match = _name_matcher(pattern)
    try:
        with os.scandir(folder) as it:
            return sum(
                1 for e in it
                if not e.name.startswith(".") and match(e.name) and e.is_file(follow_symlinks=False)
            )
    except OSError:
        return 0


def check_probe(name: str, spec: Mapping[str, Any]) -> None:
    """Refuse a probe spec ``{file, path, reduce}`` with a missing file or unknown reduce."""
    if not isinstance(spec, Mapping) or not isinstance(spec.get("file"), str):
        raise ParameterError(f"probes.{name} needs a 'file' (string)", key=f"probes.{name}", value=spec)
    unknown = sorted(set(spec) - {"file", "path", "reduce"})
    if unknown:
        raise ParameterError(f"probes.{name} has unknown key {unknown[0]!r}: allowed are file, path, reduce", key=f"probes.{name}")
    if spec.get("reduce", "value") not in REDUCES:
        raise ParameterError(
            f"probes.{name}.reduce = {spec.get('reduce')!r} is invalid: allowed are {', '.join(REDUCES)}",
            key=f"probes.{name}.reduce",
            value=spec.get("reduce"),
        )


def _number(x: Any) -> float | None:
    if isinstance(x, bool):
        return float(x)
    if isinstance(x, (int, float)) and math.isfinite(x):
        return float(x)
    return None


def reduce_value(value: Any, dotted_path: str | None = None, reduce: str = "value") -> float | None:
    """Walk ``a.b.0.c`` into parsed JSON and reduce it to a number; None when it does not fit."""
    for part in (dotted_path or "").split("."):
        if not part:
            continue
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list) and part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    if reduce == "value":
        return _number(value)
    if reduce == "len":
        return float(len(value)) if isinstance(value, (list, dict, str)) else None
    items = value.values() if isinstance(value, Mapping) else value if isinstance(value, list) else []
    nums = [n for n in (_number(x) for x in items) if n is not None]
    if not nums:
        return None
    if reduce == "sum":
        return float(sum(nums))
    if reduce == "mean":
        return sum(nums) / len(nums)
    return float(max(nums) if reduce == "max" else min(nums))


def json_probe(path: str | os.PathLike[str], dotted_path: str | None = None, reduce: str = "value") -> float | None:
    """A number read from a JSON file; a missing, half-written or odd file gives None."""
    if reduce not in REDUCES:
        raise ParameterError(f"reduce {reduce!r} is invalid: allowed are {', '.join(REDUCES)}", key="reduce", value=reduce)
    try:
        with open(path, "rb") as fh:
            value = json.loads(fh.read())
    except (OSError, ValueError):
        return None
    return reduce_value(value, dotted_path, reduce)


class StatCache:
    """Recompute a value from a path only when its (inode, size, mtime_ns) changed.

    ``max_age_s`` also recomputes a value older than that: a folder's mtime has the
    kernel's coarse clock, so two changes within one tick could otherwise go unseen.
    """

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], tuple[tuple[int, int, int] | None, Any, float]] = {}

    def get(self, path: str | os.PathLike[str], key: str, compute: Callable[[Path], Any],
            max_age_s: float | None = None) -> Any:
        name = os.fspath(path)
        try:
            st = os.stat(name)
            ident: tuple[int, int, int] | None = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            ident = None
        slot = (name, key)
        hit = self._cache.get(slot)
        now = time.monotonic()
        if (hit is not None and hit[0] == ident and ident is not None
                and (max_age_s is None or now - hit[2] < max_age_s)):
            return hit[1]
        value = compute(Path(path)) if ident is not None else None
        self._cache[slot] = (ident, value, now)
        return value

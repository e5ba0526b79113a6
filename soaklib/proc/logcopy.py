"""The target's output through a pipe into a bounded copy, every line handed on once.

A started target's stdout and stderr go to a pipe; a thread copies what arrives into the
log file (``target.log``) and hands every complete line to a consumer (the error and
traceback counters), so the counts cover everything the target wrote, however much of the
copy is later dropped. The copy is bounded: when it passes ``max_bytes`` it is rewritten
(temporary file, then rename) as its head (the first quarter of the limit, kept for good),
one marker line saying how many bytes were dropped there, and the latest tail (the last
half of the limit), each cut at a line boundary. The copy is the only writer of the file,
so nothing the counters saw is lost to a race.

A line longer than ``max_line_bytes`` without a newline is handed on in pieces of that
size; whatever is left without a newline when the target's side closes is handed on as a
last line. A full disk stops the copy, never the reading: the target never blocks on its
output because the harness's disk is full.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CHUNK_BYTES = 1 << 20
MAX_LINE_BYTES = 1 << 20
Consumer = Callable[[str, int], None]  # (complete lines as one text, bytes they came from)


@dataclass(frozen=True)
class CopyStats:
    """What the copy of a target's output saw and kept (JSON-ready via ``vars``)."""

    bytes_total: int  # everything the target wrote
    bytes_kept: int  # the copy's size (marker included)
    bytes_dropped: int  # rotated out of the middle
    rotations: int
    first_rotation_s: float | None  # seconds after the copy started
    write_error: str | None  # why the copy stopped (disk full), None when it did not
    closed: bool  # the target's side closed (every writer exited) before ``close`` gave up


class LogCopy:
    """See the module docstring; ``fileno()`` is the write end to hand to ``Popen``."""

    def __init__(self, path: str | os.PathLike[str], max_bytes: int, *,
                 max_line_bytes: int = MAX_LINE_BYTES) -> None:
        if max_bytes < 4096:
            raise ValueError(f"max_bytes={max_bytes} is below 4096")
        self.path = Path(path)
        self.max_bytes = int(max_bytes)
        self.max_line_bytes = max_line_bytes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: object | None = open(self.path, "ab")  # noqa: SIM115 - closed by the copy thread
        self.size = self.path.stat().st_size
        self._read_fd, self._write_fd = os.pipe()
        self._lock = threading.Lock()
        self._consumer: Consumer | None = None
        self._backlog: list[tuple[str, int]] = []
        self._partial = b""
        self._head_len: int | None = None
        self._marker_len = 0
        self._t0 = time.monotonic()
        self.bytes_total = 0
        self.bytes_dropped = 0
        self.rotations = 0
        self.first_rotation_s: float | None = None
        self.write_error: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"logcopy:{self.path.name}", daemon=True)

    def fileno(self) -> int:
        return self._write_fd

    def start(self) -> None:
        """Start copying; call after the child has the write end (the parent's copy is closed here)."""
        os.close(self._write_fd)
        self._write_fd = -1
        self._thread.start()

    def abandon(self) -> None:
        """The child never started: close both ends."""
        for fd in (self._write_fd, self._read_fd):
            if fd >= 0:
                os.close(fd)
        self._write_fd = self._read_fd = -1
        self._close_file()

    def attach(self, consumer: Consumer) -> None:
        """Hand every line to ``consumer`` from now on, the lines seen so far first."""
        with self._lock:
            for text, n in self._backlog:
                consumer(text, n)
            self._backlog = []
            self._consumer = consumer

    # ------------------------------------------------------------------ the copy thread

    def _emit(self, text: str, n: int) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer(text, n)
            else:
                self._backlog.append((text, n))

    def _lines(self, data: bytes, final: bool) -> None:
        """Hand on the complete lines of ``data`` as one text (decoded once; the consumer
        splits it only where a pattern matches)."""
        buf = self._partial + data
        cut = buf.rfind(b"\n") + 1
        complete, self._partial = buf[:cut], buf[cut:]
        pieces = [complete] if complete else []
        while len(self._partial) > self.max_line_bytes:
            pieces.append(self._partial[:self.max_line_bytes] + b"\n")
            self._partial = self._partial[self.max_line_bytes:]
        if final and self._partial:
            pieces.append(self._partial + b"\n")
            self._partial = b""
        if pieces or data:
            self._emit(b"".join(pieces).decode("utf-8", errors="replace"), len(data))

    def _run(self) -> None:
        try:
            while True:
                try:
                    data = os.read(self._read_fd, CHUNK_BYTES)
                except InterruptedError:
                    continue
                except OSError:
                    data = b""
                self.bytes_total += len(data)
                self._lines(data, final=not data)
                if not data:
                    break
                self._write(data)
        finally:
            os.close(self._read_fd)
            self._read_fd = -1
            self._close_file()
            self._done.set()

    def _write(self, data: bytes) -> None:
        fh = self._fh
        if fh is None:
            self.bytes_dropped += len(data)
            return
        try:
            fh.write(data)  # type: ignore[attr-defined]
            fh.flush()  # type: ignore[attr-defined]
            self.size += len(data)
            if self.size > self.max_bytes:
                self._rotate()
        except OSError as e:
            self.write_error = f"{type(e).__name__}: {e}"
            self.bytes_dropped += len(data)
            self._close_file()

    def _rotate(self) -> None:
        """Rewrite the file as head + marker + latest tail (see the module docstring)."""
        fh = self._fh
        assert fh is not None
        fh.close()  # type: ignore[attr-defined]
        self._fh = None
        with open(self.path, "rb") as src:
            if self._head_len is None:
                head = src.read(self.max_bytes // 4)
                cut = head.rfind(b"\n")
                self._head_len = cut + 1 if cut >= 0 else len(head)
            src.seek(0)
            head = src.read(self._head_len)
            keep = self.max_bytes // 2
            src.seek(max(self._head_len, self.size - keep))
            tail = src.read()
        start = tail.find(b"\n") + 1 if len(tail) >= keep else 0
        tail = tail[start:]
        dropped_now = self.size - self._head_len - self._marker_len - len(tail)
        self.bytes_dropped += dropped_now
        self.rotations += 1
        at_s = time.monotonic() - self._t0
        if self.first_rotation_s is None:
            self.first_rotation_s = at_s
        marker = (f"[soaklib] {self.bytes_dropped} bytes of the target's output dropped here to keep this copy "
                  f"under {self.max_bytes} bytes (rotation {self.rotations}, the last at +{at_s:.1f} s); "
                  "the error and traceback counts include them\n").encode()
        tmp = self.path.with_name(f".{self.path.name}.rotate.tmp")
        try:
            with open(tmp, "wb") as dst:
                dst.write(head)
                dst.write(marker)
                dst.write(tail)
            os.replace(tmp, self.path)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        self._marker_len = len(marker)
        self.size = len(head) + len(marker) + len(tail)
        self._fh = open(self.path, "ab")  # noqa: SIM115 - closed by the copy thread

    def _close_file(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            try:
                fh.close()  # type: ignore[attr-defined]
            except OSError as e:
                self.write_error = self.write_error or f"{type(e).__name__}: {e}"

    # ------------------------------------------------------------------ the end

    def close(self, timeout_s: float = 5.0) -> CopyStats:
        """Wait until every writer has closed its end (the target's last words are in), up
        to ``timeout_s``; a process that still holds the pipe open is left to the copy thread."""
        if self._thread.is_alive() or self._thread.ident is None:
            if self._thread.ident is None:
                self.abandon()
                self._done.set()
            self._done.wait(timeout_s)
        return self.stats()

    def stats(self) -> CopyStats:
        return CopyStats(self.bytes_total, self.size, self.bytes_dropped, self.rotations, self.first_rotation_s,
                         self.write_error, self._done.is_set())

"""The one recorder loop: sample on absolute deadlines, hand each row on, flush part files.

Used by every soak and by ``soak monitor``. Each tick samples the target's tree, buffers
the row, asks the caller's ``on_row`` hook whether to stop (a soak's driver, a target that
exited), flushes a part file every ``flush_s``, then waits for the next deadline of the
drift-free schedule (the lag goes into the next row). The last sample is taken at
``duration_s`` exactly. Whatever ends the loop (the end, a hook, a stop event, Ctrl-C, an
error), the buffered rows are flushed: a recording killed at any moment keeps every sample
up to its last flush.

A full disk (``ENOSPC`` / ``EDQUOT`` from a flush) ends the loop with
:class:`~soaklib.errors.DiskFullError`: the parts already written stay as they are, the rows
that could not be written are counted (``unflushed``), and no further write is tried.
After the target has exited, :meth:`Recorder.last_words` takes one more sample with every
source reading to the end of what the target left (its log lines while stopping).
"""
from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from soaklib.errors import DiskFullError
from soaklib.observe.sampler import Sampler
from soaklib.observe.schedule import Ticker
from soaklib.parts import PartWriter, read_parts

#: Why a recording ended.
END_REASONS = ("duration", "samples", "stopped", "hook", "target_exited", "disk_full", "stop_on_fail")
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class RecordingEnd:
    """How a recording ended, and what it wrote."""

    reason: str  # one of END_REASONS
    samples: int
    parts: int
    max_lag_s: float
    skipped_ticks: int
    unflushed: int = 0  # samples taken and never written (a full disk)

    def to_dict(self) -> dict[str, Any]:
        return {"end_reason": self.reason, "samples_written": self.samples, "parts_written": self.parts,
                "max_lag_s": self.max_lag_s, "skipped_ticks": self.skipped_ticks,
                "samples_unflushed": self.unflushed}


class Recorder:
    """Samples ``sampler`` into ``folder`` (part files); see the module docstring.

    ``on_flush`` runs after each flush (a soak rewrites its events there).
    """

    def __init__(self, sampler: Sampler, folder: str | Path, *, interval_s: float, flush_s: float,
                 t0: float | None = None, on_flush: Callable[[], None] | None = None) -> None:
        self.sampler = sampler
        self.folder = Path(folder)
        self.writer = PartWriter(self.folder, schema=sampler.schema)
        self.ticker = Ticker(interval_s, sampler.t0 if t0 is None else t0)
        self.flush_s = flush_s
        self.on_flush = on_flush
        self._pending: list[dict[str, Any]] = []
        self.rows = 0
        self.last_flushed_t_s: float | None = None  # run time of the last sample on disk
        self.disk_full: DiskFullError | None = None

    @property
    def unflushed(self) -> int:
        """Samples taken and not on disk (after a full disk: lost)."""
        return len(self._pending) + self.writer.pending

    def flush(self) -> None:
        """Write the buffered rows as a part file (and run ``on_flush``); a full disk raises
        ``DiskFullError`` and every later flush is a no-op."""
        if self.disk_full is not None:
            return
        try:
            if self._pending:
                last_t = self._pending[-1].get("t_s")
                self.writer.extend(self._pending)
                self._pending = []
                self.writer.flush()
                self.last_flushed_t_s = last_t
            if self.on_flush is not None:
                self.on_flush()
        except OSError as e:
            if e.errno not in DISK_FULL_ERRNOS:
                raise
            when = f"{self.last_flushed_t_s:.1f} s" if self.last_flushed_t_s is not None else "none yet"
            last_s = round(self.last_flushed_t_s, 1) if self.last_flushed_t_s is not None else None
            self.disk_full = DiskFullError(
                f"the disk under {self.folder} is full ({os.strerror(e.errno or errno.ENOSPC)}): sampling stopped; "
                f"the last sample on disk is at {when}, {self.unflushed} sample(s) could not be written",
                path=str(self.folder), last_flushed_s=last_s, unflushed_samples=self.unflushed)
            raise self.disk_full from None

    def last_words(self, root_pid: int | None) -> dict[str, Any] | None:
        """One more sample after the target exited, every source reading to the end (flushed).

        None when the disk is full (nothing more can be written).
        """
        if self.disk_full is not None:
            return None
        row = self.sampler.sample(root_pid, 0.0, final=True)
        self._pending.append(row)
        self.rows += 1
        self.flush()
        return row

    def frame(self) -> pd.DataFrame:
        """Every sample so far: the flushed part files plus the rows not yet flushed."""
        flushed = read_parts(self.folder)
        if not self._pending:
            return flushed
        pending: pd.DataFrame = pa.Table.from_pylist(self._pending, schema=self.sampler.schema).to_pandas()
        return pending if flushed.empty else pd.concat([flushed, pending], ignore_index=True)

    def end(self, reason: str) -> RecordingEnd:
        return RecordingEnd("disk_full" if self.disk_full is not None else reason, self.writer.rows_written,
                            self.writer.parts_written, self.ticker.max_lag_s, self.ticker.skipped, self.unflushed)

    def run(self, root_pid: int | None, on_row: Callable[[dict[str, Any]], str | None] | None = None, *,
            duration_s: float | None = None, max_samples: int | None = None,
            stop_event: threading.Event | None = None) -> RecordingEnd:
        """Record until the duration, ``max_samples``, ``stop_event`` or the hook ends it.

        ``on_row(row)`` returns None to go on, or the reason to stop (e.g. ``target_exited``).
        """
        stop_event = stop_event or threading.Event()
        t0 = self.ticker.t0
        last_flush = time.monotonic()
        lag_s = 0.0
        final = False
        reason = "stopped"
        try:
            while True:
                row = self.sampler.sample(root_pid, lag_s)
                self._pending.append(row)
                self.rows += 1
                verdict = on_row(row) if on_row is not None else None
                if verdict is not None:
                    reason = verdict
                    break
                if max_samples is not None and self.rows >= max_samples:
                    reason = "samples"
                    break
                if final:
                    reason = "duration"
                    break
                if stop_event.is_set():
                    break
                if time.monotonic() - last_flush >= self.flush_s:
                    self.flush()
                    last_flush = time.monotonic()
                if duration_s is not None and self.ticker.next_deadline - t0 >= duration_s - 1e-6:
                    final = True  # one last sample at duration_s
                    stop_event.wait(max(0.0, t0 + duration_s - time.monotonic()))
                    lag_s = max(0.0, time.monotonic() - (t0 + duration_s))
                else:
                    lag_s = self.ticker.wait(stop_event)  # set: one more sample, then stop
        finally:
            if self.disk_full is None:
                self.flush()
        return self.end(reason)

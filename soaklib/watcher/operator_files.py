"""The operator's files that soak C changes, and cleanups that run however a soak ends.

Soak C turns the daemon's project into the plan's test mode (sections 2.2 and 6): it
rewrites ``lottery_history.json`` and sets ``test_mode``, ``synthetic_injection.enabled``
and ``interval_seconds`` in ``watcher_policies.json``. :class:`OperatorFiles` copies those
files away before anything changes and puts them back byte for byte afterwards;
:class:`AfterSoak` makes sure that happens also after Ctrl-C, a crash of the target or an
error (the harness calls a driver's ``finish`` only on a normal end).
"""
from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from soaklib.errors import ParameterError
from soaklib.store import atomic_write_json, atomic_write_text, utc_now

POLICIES_FILE = "watcher_policies.json"


def _sha256(path: Path) -> str | None:
    try:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    except FileNotFoundError:
        return None


def history_values(path: str | os.PathLike[str]) -> list[int] | None:
    """The ``value`` of every draw in a history file; None when missing or unreadable."""
    try:
        draws = json.loads(Path(path).read_text(encoding="utf-8"))["draws"]
        return [int(d["value"]) for d in draws]
    except (OSError, ValueError, KeyError, TypeError):
        return None


class OperatorFiles:
    """Backup and byte-for-byte restore of the operator's files that a soak changes.

    ``backup`` copies each existing file (with its mode and times) into ``backup_dir`` and
    records its SHA-256 in ``backup_dir/manifest.json``. ``restore`` puts every changed file
    back (temporary file + rename, then verified by hash), keeping the soak's version in
    ``backup_dir/final/``; a file the soak created is moved there, except in a ``fresh``
    project folder that the soak itself made. Idempotent and thread-safe.
    """

    def __init__(self, project_dir: str | os.PathLike[str], backup_dir: str | os.PathLike[str],
                 names: Sequence[str], *, fresh: bool = False, keep_changes: bool = False) -> None:
        self.project_dir = Path(project_dir)
        self.backup_dir = Path(backup_dir)
        self.names = list(dict.fromkeys(names))
        self.fresh = fresh
        self.keep_changes = keep_changes
        self.lock = threading.RLock()
        self.manifest: dict[str, dict[str, Any]] = {}
        self.report: dict[str, Any] | None = None

    def path(self, name: str) -> Path:
        return self.project_dir / name

    def backup(self) -> dict[str, dict[str, Any]]:
        """Copy the existing files away before anything changes; returns the manifest."""
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        for name in self.names:
            src = self.path(name)
            entry: dict[str, Any] = {"existed": src.is_file(), "sha256": None, "bytes": None}
            if entry["existed"]:
                dst = self.backup_dir / name
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
                entry.update(sha256=_sha256(dst), bytes=dst.stat().st_size)
                if entry["sha256"] != _sha256(src):
                    raise OSError(f"{src} changed while it was being backed up: run the soak again")
            self.manifest[name] = entry
        atomic_write_json(self.backup_dir / "manifest.json", {
            "project_dir": str(self.project_dir), "backed_up_at": utc_now(), "fresh_project": self.fresh,
            "files": self.manifest})
        return self.manifest

    @property
    def restored(self) -> bool:
        return self.report is not None

    def soak_version(self, name: str) -> Path:
        """Where the soak's final version of ``name`` is now (moved aside once restored)."""
        kept = self.backup_dir / "final" / name
        with self.lock:
            return kept if self.restored and kept.exists() else self.path(name)

    def restore(self) -> dict[str, Any]:
        """Put the operator's files back as they were (unless ``keep_changes``); a report by file."""
        with self.lock:
            if self.report is not None:
                return self.report
            files: dict[str, str] = {}
            errors: list[str] = []
            for name, entry in self.manifest.items():
                try:
                    files[name] = self._restore_one(name, entry)
                except OSError as e:
                    errors.append(f"{name}: {e}")
                    files[name] = f"NOT RESTORED ({e}); the original is in {self.backup_dir / name}"
            self.report = {"restored_at": utc_now().isoformat(), "keep_changes": self.keep_changes,
                           "files": files, "errors": errors, "ok": not errors}
            atomic_write_json(self.backup_dir / "restore.json", self.report)
            return self.report

    def _restore_one(self, name: str, entry: Mapping[str, Any]) -> str:
        cur = self.path(name)
        final = self.backup_dir / "final" / name
        now_sha = _sha256(cur)
        if self.keep_changes:
            return "kept as the soak left it (keep_changes)" if now_sha != entry["sha256"] else "unchanged"
        if entry["existed"]:
            if now_sha == entry["sha256"]:
                return "unchanged"
            if now_sha is not None:
                final.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(cur, final)
            src = self.backup_dir / name
            tmp = cur.with_name(f".{cur.name}.restore.tmp")
            shutil.copy2(src, tmp)
            os.replace(tmp, cur)
            if _sha256(cur) != entry["sha256"]:
                raise OSError(f"{cur} does not match its backup after the restore")
            return "restored byte for byte"
        if now_sha is None:
            return "absent, as before"
        if self.fresh:
            return "created by the soak in its fresh project folder (kept)"
        final.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(cur), str(final))
        return f"created by the soak: moved to {final}"


def enable_test_mode(path: str | os.PathLike[str], interval_s: float, seed: int) -> dict[str, Any]:
    """Set ``test_mode``, ``synthetic_injection.enabled`` and ``interval_seconds`` (plan 2.2, 6).

    ``true_seed`` is added only when the file has none. Returns the values before and the
    file's ``true_seed``. A file that is not a JSON object raises ``ParameterError``.
    """
    p = Path(path)
    data: Any = {}
    if p.exists():
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ParameterError(f"{p} is not valid JSON ({e}): fix it before soak C changes it", key="project_dir",
                                 value=str(p)) from None
        if not isinstance(data, dict):
            raise ParameterError(f"{p} is not a JSON object: fix it before soak C changes it", key="project_dir",
                                 value=str(p))
    si = data.get("synthetic_injection")
    before = {"test_mode": data.get("test_mode"), "enabled": si.get("enabled") if isinstance(si, dict) else None,
              "interval_seconds": si.get("interval_seconds") if isinstance(si, dict) else None}
    if not isinstance(si, dict):
        si = data["synthetic_injection"] = {}
    data["test_mode"] = True
    si["enabled"] = True
    si["interval_seconds"] = int(interval_s) if float(interval_s).is_integer() else float(interval_s)
    si.setdefault("true_seed", seed)
    atomic_write_text(p, json.dumps(data, indent=2) + "\n")
    return {"before": before, "true_seed": si["true_seed"]}



# --------------------------------------------------------------------------- cleanup however the soak ends


class AfterSoak:
    """Runs cleanups once, after the soak, whichever way the soak ends.

    The harness calls a driver's ``finish`` only on a normal end; after Ctrl-C or an error
    it stops the target and returns. So cleanups (restoring operator files, stopping a
    batch pass) run on the first of: :meth:`run` (from ``finish`` / ``close``), the started
    target seen gone (a watcher thread), or interpreter exit. Idempotent and thread-safe.
    """

    def __init__(self, target: Any | None = None, *, poll_s: float = 0.05) -> None:
        self._fns: list[tuple[str, Callable[[], None]]] = []
        self._lock = threading.Lock()
        self._ran = False
        self._stop = threading.Event()
        self.errors: list[str] = []
        atexit.register(self.run)
        if target is not None and getattr(target, "started", False):
            self._thread = threading.Thread(target=self._watch, args=(target, poll_s), name="soak-after", daemon=True)
            self._thread.start()

    def add(self, name: str, fn: Callable[[], None]) -> None:
        """Register a cleanup (run in registration order)."""
        with self._lock:
            self._fns.append((name, fn))

    @property
    def ran(self) -> bool:
        return self._ran

    def _watch(self, target: Any, poll_s: float) -> None:
        while not self._stop.wait(poll_s):
            try:
                running = target.is_running()
            except Exception:
                running = False
            if not running:
                self.run()
                return

    def run(self) -> list[str]:
        """Run every cleanup now (once); returns the errors as text."""
        with self._lock:
            if self._ran:
                return self.errors
            self._ran = True
            self._stop.set()
            for name, fn in self._fns:
                try:
                    fn()
                except Exception as e:
                    self.errors.append(f"{name}: {type(e).__name__}: {e}")
                except BaseException:  # Ctrl-C inside a cleanup: run them again at exit
                    self._ran = False
                    raise
        atexit.unregister(self.run)
        return self.errors

"""The WATCHER daemon's side of Chapter 13 approvals (``--approvals``): ``pending_approval.json``.

As the real daemon's ``_poll_pending_approval`` does each cycle: a file with ``status:
pending`` and a non-empty ``steps_to_run`` is marked ``processing_by_watcher`` at once (no
double execution), then, in test mode with ``auto_approve_in_test_mode`` (read from
``watcher_policies.json`` each time), the steps run and the approval is archived to
``watcher_requests/archive/pending_approval_<request_id>_<YYYYmmdd_HHMMSS>.json`` with status
``completed_by_watcher`` (``failed_by_watcher`` when the steps raise) and the original removed;
otherwise a human is told once per request id and the file goes back to ``pending``.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from soaklib.sim.watcher.protocol import atomic_write_json

log = logging.getLogger("soaklib.sim.watcher")

APPROVAL_FILE = "pending_approval.json"
POLICIES_FILE = "watcher_policies.json"
ARCHIVE_DIR = Path("watcher_requests") / "archive"
ARCHIVE_PREFIX = "pending_approval_"


class Approvals:
    """Polls ``pending_approval.json`` in a project folder; ``run_steps(steps)`` does the work."""

    def __init__(self, project_dir: Path, run_steps: Callable[[list[int]], None]) -> None:
        self.dir = project_dir
        self.run_steps = run_steps
        self.notified: set[str] = set()
        self.archived = 0

    def _policies(self) -> dict[str, Any]:
        try:
            data = json.loads((self.dir / POLICIES_FILE).read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError) as e:
            log.warning("[WATCHER][APPROVAL] Could not read policies: %s", e)
            return {}

    def poll(self) -> bool:
        """One look at the approval file; True when an approval was acted on."""
        path = self.dir / APPROVAL_FILE
        if not path.exists():
            return False
        try:
            request = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            log.warning("[WATCHER][APPROVAL] Malformed pending_approval.json: %s — skipping", e)
            return False
        if not isinstance(request, dict) or request.get("status") != "pending":
            return False
        steps = request.get("steps_to_run")
        request_id = str(request.get("request_id", "unknown"))
        if not isinstance(steps, list) or not steps:
            log.warning("[WATCHER][APPROVAL] Invalid steps_to_run in %s — skipping", request_id)
            return False
        log.info("[WATCHER][APPROVAL] Detected pending approval: %s (action=%s, steps=%s)",
                 request_id, request.get("action_required"), steps)
        request["status"] = "processing_by_watcher"
        atomic_write_json(path, request)
        p = self._policies()
        if p.get("test_mode") is True and p.get("auto_approve_in_test_mode") is True:
            log.info("[WATCHER][APPROVAL] APPROVED_BY_WATCHER (test_mode auto): %s", request_id)
            try:
                self.run_steps([int(s) for s in steps])
                status = "completed_by_watcher"
            except Exception as e:
                log.error("[WATCHER][APPROVAL] Pipeline failed: %s", e)
                status = "failed_by_watcher"
            self._archive(request, path, status)
            return True
        request["status"] = "pending"
        atomic_write_json(path, request)
        if request_id in self.notified:
            return False
        log.info("[WATCHER][APPROVAL] Production mode — human approval required: %s", request_id)
        self.notified.add(request_id)
        return True

    def _archive(self, request: dict[str, Any], path: Path, status: str) -> None:
        now = datetime.now(timezone.utc)
        request.update(status=status, approved_at=now.isoformat(), approved_by="watcher_daemon")
        name = f"{ARCHIVE_PREFIX}{request.get('request_id', 'unknown')}_{now.strftime('%Y%m%d_%H%M%S')}.json"
        dest = self.dir / ARCHIVE_DIR / name
        n = 1
        while dest.exists():  # two approvals archived in the same second keep both files
            dest = dest.with_name(f"{name[:-5]}.{n}.json")
            n += 1
        atomic_write_json(dest, request)
        path.unlink(missing_ok=True)
        self.archived += 1
        log.info("[WATCHER][APPROVAL] Archived to %s, original removed", dest.relative_to(self.dir))

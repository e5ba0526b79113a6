"""The reference WATCHER daemon's side of the file protocol (DESIGN.md section 6).

Request files in ``watcher_requests/*.json`` are handled in filename order: parsed,
checked, evaluated by the LLM (heuristic default when it does not answer), dispatched
(simulated work), logged to ``watcher_decisions.jsonl`` and archived. Two profiles:
``watcher-v2`` (the daemon as built) and ``plan`` (the soak plan's description).
Fault knobs that concern requests (duplicates, misrouting, unknown types) live here.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

log = logging.getLogger("soaklib.sim.watcher")

PROFILES = ("watcher-v2", "plan")
V2_TYPES = ("selfplay_retrain", "learning_loop", "pipeline_rerun")
PLAN_TYPES = ("selfplay", "learning_loop")
STATUSES = ("COMPLETED", "FAILED", "REJECTED", "REJECTED_BY_LLM", "DRY_RUN_OK", "INVALID", "UNKNOWN_TYPE")
PROCEED_ACTIONS = ("proceed", "approve", "accept", "dispatch")
REQUESTS_DIR = "watcher_requests"
DECISIONS_FILE = "watcher_decisions.jsonl"
MAX_EPISODES = 50
DEFAULT_EPISODES = 2
DEFAULT_SCOPE = "steps_3_5_6"
SELFPLAY_S_PER_EPISODE = 0.02
LEARNING_LOOP_S = 0.1
PIPELINE_RERUN_S = 0.05
HEURISTIC = ("proceed", 0.5)


def utc_iso() -> str:
    """The current UTC time as ISO-8601 text (recorded data only)."""
    return datetime.now(timezone.utc).isoformat()


def utc_compact() -> str:
    """``YYYYmmdd_HHMMSS`` in UTC: archive names and ``run_id``."""
    return datetime.now(timezone.utc).strftime("%Y%m%d_%H%M%S")


def atomic_write_text(path: Path, text: str) -> None:
    """Write text through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write indented JSON atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


@dataclass
class Evaluation:
    """The LLM's verdict on a dispatch, or the heuristic default when it did not answer."""

    action: str
    confidence: float
    parse_method: str  # "llm" | "heuristic"
    error: str | None = None

    @property
    def proceed(self) -> bool:
        return self.action.lower() in PROCEED_ACTIONS


class LlmClient:
    """``POST {url}/completion`` with a timeout; never raises (falls back to the heuristic)."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxies

    def evaluate(self, prompt: str) -> Evaluation:
        body = json.dumps({"prompt": prompt, "n_predict": 64, "temperature": 0.0}).encode("utf-8")
        req = urllib.request.Request(f"{self.url}/completion", data=body, headers={"Content-Type": "application/json"})
        try:
            with self._opener.open(req, timeout=self.timeout_s) as resp:
                payload = json.loads(resp.read(1 << 20))
            decision = json.loads(payload["content"])
            action = str(decision["action"])
            confidence = float(decision.get("confidence", 0.0))
        except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError) as exc:
            error = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
            log.warning(
                "HTTP LLM evaluation failed (%s: %s); using heuristic default (action=%s, confidence=%.2f)",
                self.url, error, *HEURISTIC,
            )
            return Evaluation(HEURISTIC[0], HEURISTIC[1], "heuristic", error)
        return Evaluation(action, confidence, "llm")


class DecisionLog:
    """Appends one JSON object per line to ``watcher_decisions.jsonl`` (opened per write, flushed)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines_written = 0

    def append(self, line: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, default=str) + "\n")
            fh.flush()
        self.lines_written += 1


@dataclass
class RequestFaults:
    """Request-handling fault knobs of the reference daemon."""

    duplicate_every: int = 0  # every Nth dispatched request is dispatched twice
    misroute: bool = False  # learning_loop requests dispatched as selfplay
    unknown_types: bool = False  # the daemon knows none of the request types


@dataclass
class Request:
    """One parsed request, independent of the profile's field names."""

    kind: str  # "selfplay" | "learning_loop" | "pipeline_rerun"
    request_type: str  # as written in the file
    source: str
    sequence_number: Any = None
    episodes: int = DEFAULT_EPISODES
    scope: str = DEFAULT_SCOPE
    path: str | None = None
    dry_run: bool = False


class RequestHandler:
    """Processes request files and dispatches work for one project folder and profile."""

    def __init__(
        self,
        project_dir: Path,
        profile: str,
        llm: LlmClient,
        faults: RequestFaults | None = None,
        *,
        work: Callable[[float], None] = time.sleep,
    ) -> None:
        if profile not in PROFILES:
            raise ValueError(f"profile {profile!r} is unknown: expected one of {', '.join(PROFILES)}")
        self.project_dir = project_dir
        self.profile = profile
        self.llm = llm
        self.faults = faults or RequestFaults()
        self.work = work
        self.requests_dir = project_dir / REQUESTS_DIR
        self.archive_dir = self.requests_dir / "archive"
        self.decisions = DecisionLog(project_dir / DECISIONS_FILE)
        self.requests_processed = 0
        self.dispatched = 0
        self.errors = 0

    # ------------------------------------------------------------------ queue

    def pending(self) -> list[Path]:
        """Pending request files in filename order (dot files and folders skipped)."""
        try:
            entries = list(self.requests_dir.iterdir())
        except FileNotFoundError:
            return []
        return sorted((p for p in entries if p.suffix == ".json" and not p.name.startswith(".") and p.is_file()),
                      key=lambda p: p.name)

    def process_all(self, run_id: str, should_stop: Callable[[], bool] = lambda: False) -> int:
        """Process every pending request now (stopping early only when asked); returns how many."""
        done = 0
        for path in self.pending():
            if should_stop():
                break
            self.process(path, run_id)
            done += 1
        return done

    def process(self, path: Path, run_id: str) -> str:
        """Handle one request file end to end; returns its archive status."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("request_type"), str):
                raise ValueError("expected a JSON object with a string request_type")
        except FileNotFoundError:
            return "GONE"
        except (OSError, ValueError) as exc:
            log.warning("invalid request %s: %s", path.name, exc)
            return self._archive(path, "INVALID")
        request = self._parse(data, path)
        status = self._handle(request, data, run_id)
        if self.faults.duplicate_every and status == "COMPLETED":
            self.dispatched += 1
            if self.dispatched % self.faults.duplicate_every == 0:
                self._handle(request, data, run_id)
        return self._archive(path, status)

    def _parse(self, data: dict[str, Any], path: Path) -> Request:
        rtype = data["request_type"]
        raw_params = data.get("parameters")
        params: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
        fields = params if self.profile == "plan" else data
        known = PLAN_TYPES if self.profile == "plan" else V2_TYPES
        kind = "unknown"
        if rtype in known and not self.faults.unknown_types:
            kind = {"selfplay_retrain": "selfplay"}.get(rtype, rtype)
        return Request(
            kind=kind,
            request_type=rtype,
            source=str(data.get("source", "unknown")),
            sequence_number=data.get("sequence_number"),
            episodes=fields.get("episodes", DEFAULT_EPISODES),
            scope=str(fields.get("scope", DEFAULT_SCOPE)),
            path=str(path),
            dry_run=bool(data.get("dry_run", False)),
        )

    def _handle(self, req: Request, data: dict[str, Any], run_id: str) -> str:
        if req.kind == "unknown":
            log.warning("request %s: unknown request_type %r", Path(req.path or "").name, req.request_type)
            self._line(req, run_id, f"ch13_request_{req.request_type}", "UNKNOWN_TYPE",
                       reason=f"unknown request_type {req.request_type!r}")
            return "UNKNOWN_TYPE"
        if req.kind == "selfplay":
            ep = req.episodes
            if isinstance(ep, bool) or not isinstance(ep, int) or not 1 <= ep <= MAX_EPISODES:
                log.warning("request %s: episodes=%r outside 1..%d: rejected", Path(req.path or "").name, ep, MAX_EPISODES)
                self._line(req, run_id, self._ch13(req), "REJECTED", reason=f"episodes {ep!r} outside 1..{MAX_EPISODES}")
                return "REJECTED"
        if req.dry_run:
            self._line(req, run_id, self._ch13(req), "DRY_RUN_OK")
            return "DRY_RUN_OK"
        kind = "selfplay" if (req.kind == "learning_loop" and self.faults.misroute) else req.kind
        try:
            return self.dispatch(kind, req, run_id)
        except Exception as exc:  # a failed dispatch is recorded, the daemon goes on
            self.errors += 1
            log.exception("dispatch of %s failed", req.request_type)
            self._line(req, run_id, self._ch13(req), "FAILED", reason=str(exc))
            return "FAILED"

    # ------------------------------------------------------------------ dispatch

    def dispatch(self, kind: str, req: Request, run_id: str) -> str:
        """Evaluate with the LLM, do the (simulated) work, write the decision lines."""
        evaluation = self.evaluate(kind, req, run_id)
        if not evaluation.proceed:
            self._line(req, run_id, self._ch13(req), "REJECTED_BY_LLM", reason=f"LLM action {evaluation.action!r}")
            return "REJECTED_BY_LLM"
        if kind == "selfplay":
            self.work(req.episodes * SELFPLAY_S_PER_EPISODE)
        elif kind == "learning_loop":
            self.work(LEARNING_LOOP_S)
        else:
            self.work(PIPELINE_RERUN_S)
        if self.profile == "plan":
            self._line(req, run_id, kind, "COMPLETED")
        else:
            if kind in ("selfplay", "learning_loop"):
                self._line(req, run_id, kind, "COMPLETED")
            self._line(req, run_id, self._ch13(req), "COMPLETED")
        return "COMPLETED"

    def evaluate(self, kind: str, req: Request, run_id: str) -> Evaluation:
        prompt = (f"WATCHER evaluation: dispatch {kind} (request {req.request_type}, source {req.source}, "
                  f"episodes {req.episodes}, scope {req.scope}). Answer JSON {{action, confidence}}.")
        ev = self.llm.evaluate(prompt)
        if self.profile == "plan":
            if ev.parse_method == "heuristic":
                self.decisions.append({
                    "event": "heuristic_fallback", "timestamp": utc_iso(), "sequence_number": req.sequence_number,
                    "source": req.source, "request_type": req.request_type, "reason": ev.error,
                })
        else:
            self.decisions.append({
                "step": 13, "step_name": f"ch13_evaluate_{kind}", "action": ev.action,
                "confidence": ev.confidence, "success": True, "parse_method": ev.parse_method,
                "timestamp": utc_iso(), "run_id": run_id,
            })
        return ev

    def _ch13(self, req: Request) -> str:
        return f"ch13_request_{req.request_type}"

    def _line(self, req: Request, run_id: str, dispatch_type: str, status: str, **extra: Any) -> None:
        if self.profile == "plan":
            line: dict[str, Any] = {"timestamp": utc_iso(), "sequence_number": req.sequence_number, "source": req.source,
                    "request_type": req.request_type, "status": status,
                    "dispatch_type": dispatch_type if not dispatch_type.startswith("ch13_") else None}
            line.update(extra)
        else:
            details: dict[str, Any] = {"request_path": req.path, "source": req.source, "request_type": req.request_type}
            if req.kind == "selfplay":
                details["episodes"] = req.episodes
            elif req.kind == "learning_loop":
                details["scope"] = req.scope
            details.update(extra)
            line = {"timestamp": utc_iso(), "run_id": run_id, "dispatch_type": dispatch_type,
                    "status": status, "details": details}
        self.decisions.append(line)

    # ------------------------------------------------------------------ archive

    def _archive(self, path: Path, status: str) -> str:
        self.archive_dir.mkdir(parents=True, exist_ok=True)
        name = path.name if self.profile == "plan" else f"{status}_{utc_compact()}_{path.name}"
        target = self.archive_dir / name
        n = 1
        while target.exists():  # the same name processed twice: never overwrite an archive
            target = self.archive_dir / f"{Path(name).stem}.{n}{Path(name).suffix}"
            n += 1
        try:
            os.replace(path, target)
        except FileNotFoundError:
            return "GONE"
        self.requests_processed += 1
        log.info("request %s → %s (%s)", path.name, target.name, status)
        return status

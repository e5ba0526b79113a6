"""One exception hierarchy for the toolkit; each class owns the exit code the CLI uses.

Every error's message says what happened, to what, and what to do next. The structured
facts behind it are typed keyword fields of the class (``ParameterError.key``,
``TargetError.pid``, ...): ``str()`` renders the message and any field the message does not
already quote, and the errors pickle with their fields (they cross process boundaries, e.g.
from a worker of a pool).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_TARGET = 3
EXIT_PREFLIGHT = 21
EXIT_DISK_FULL = 28  # errno ENOSPC
EXIT_INTERRUPTED = 130


class SoakError(Exception):
    """Base of every error soaklib raises on purpose.

    ``exit_code`` is the code the ``soak`` command exits with when this error reaches it;
    ``run_dir`` is the run folder the error happened in, when one exists (what was written
    there up to the error is still valid evidence).
    """

    exit_code: ClassVar[int] = EXIT_FAIL
    _fields: ClassVar[tuple[str, ...]] = ("run_dir",)

    def __init__(self, message: str, *, run_dir: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.run_dir = run_dir

    def fields(self) -> dict[str, Any]:
        """The error's structured fields that are set (name → value)."""
        return {n: getattr(self, n) for n in self._fields if getattr(self, n, None) not in (None, (), {}, "")}

    def __str__(self) -> str:
        extra = [f"{n}={v!r}" for n, v in self.fields().items()
                 if n not in ("details", "findings") and str(v) not in self.message and repr(v) not in self.message]
        return self.message + (f" [{', '.join(extra)}]" if extra else "")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, dict(self.__dict__)))


def _rebuild(cls: type[SoakError], message: str, state: dict[str, Any]) -> SoakError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class ParameterError(SoakError, ValueError):
    """A parameter, flag or file given by the user is invalid (exit 2)."""

    exit_code = EXIT_USAGE
    _fields = ("key", "value", "run_dir")

    def __init__(self, message: str, *, key: str | None = None, value: object = None,
                 run_dir: str | None = None) -> None:
        super().__init__(message, run_dir=run_dir)
        self.key = key
        self.value = value


class PreflightError(SoakError):
    """A provider's preflight failed before any job ran (exit 21); the lane still writes its
    evidence, and ``gate_error`` of that evidence is this error (the notebook raises it)."""

    exit_code = EXIT_PREFLIGHT
    _fields = ("providers", "run_dir")

    def __init__(self, message: str, *, providers: tuple[str, ...] = (), run_dir: str | None = None) -> None:
        super().__init__(message, run_dir=run_dir)
        self.providers = tuple(providers)


class TargetError(SoakError):
    """The daemon under test could not be started, found or checked (exit 3)."""

    exit_code = EXIT_TARGET
    _fields = ("pid", "executable", "path", "cwd", "match", "candidates", "returncode", "findings", "run_dir")

    def __init__(self, message: str, *, pid: int | None = None, executable: str | None = None,
                 path: str | None = None, cwd: str | None = None, match: str | None = None,
                 candidates: tuple[int, ...] = (), returncode: int | None = None,
                 findings: tuple[Mapping[str, Any], ...] = (), run_dir: str | None = None) -> None:
        super().__init__(message, run_dir=run_dir)
        self.pid = pid
        self.executable = executable
        self.path = path
        self.cwd = cwd
        self.match = match
        self.candidates = tuple(candidates)
        self.returncode = returncode
        self.findings = tuple(findings)


class ProtocolError(SoakError):
    """The daemon does not speak the configured WATCHER protocol profile (exit 1).

    ``what`` names the failure (``UNKNOWN_TYPE``, ``INVALID``, ``no_lines``, ``timeout``,
    ``misrouted``, ``entries``); ``details`` holds what else the check saw.
    """

    exit_code = EXIT_FAIL
    _fields = ("what", "request", "profile", "status", "elapsed_s", "archive", "details", "run_dir")

    def __init__(self, message: str, *, what: str | None = None, request: str | None = None,
                 profile: str | None = None, status: str | None = None, elapsed_s: float | None = None,
                 archive: str | None = None, details: Mapping[str, Any] | None = None,
                 run_dir: str | None = None) -> None:
        super().__init__(message, run_dir=run_dir)
        self.what = what
        self.request = request
        self.profile = profile
        self.status = status
        self.elapsed_s = elapsed_s
        self.archive = archive
        self.details = dict(details or {})


class GateFailed(SoakError):
    """A run finished and its gate or verdict is FAIL (exit 1); raised by notebooks."""

    exit_code = EXIT_FAIL
    _fields = ("run_id", "failing", "run_dir")

    def __init__(self, message: str, *, run_id: str | None = None, failing: tuple[str, ...] = (),
                 run_dir: str | None = None) -> None:
        super().__init__(message, run_dir=run_dir)
        self.run_id = run_id
        self.failing = tuple(failing)


class DiskFullError(SoakError):
    """The disk under the run folder filled during a run (exit 28, errno ENOSPC).

    Sampling stopped and the target was stopped as on Ctrl-C; every part file flushed
    before it is intact. ``last_flushed_s`` is the run time of the last sample on disk,
    ``unflushed_samples`` how many could not be written; after freeing space,
    ``soak analyze RUN_DIR`` writes the partial signoff.
    """

    exit_code = EXIT_DISK_FULL
    _fields = ("path", "last_flushed_s", "unflushed_samples", "run_dir")

    def __init__(self, message: str, *, path: str | None = None, last_flushed_s: float | None = None,
                 unflushed_samples: int = 0, run_dir: str | None = None) -> None:
        super().__init__(message, run_dir=run_dir)
        self.path = path
        self.last_flushed_s = last_flushed_s
        self.unflushed_samples = unflushed_samples

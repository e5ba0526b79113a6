"""One exception hierarchy for the toolkit; the CLI maps each class to an exit code."""
from __future__ import annotations


class SoakError(Exception):
    """Base of every error soaklib raises on purpose.

    The message says what happened, to what, and what to do next. ``exit_code`` is the
    code the ``soak`` command exits with when this error reaches it.
    """

    exit_code = 1

    def __init__(self, message: str, **fields: object) -> None:
        super().__init__(message)
        self.fields = fields

    def __getattr__(self, name: str) -> object:
        fields = self.__dict__.get("fields", {})
        if name in fields:
            return fields[name]
        raise AttributeError(name)


class ParameterError(SoakError, ValueError):
    """A parameter, flag or file given by the user is invalid (exit 2)."""

    exit_code = 2


class PreflightError(SoakError):
    """A provider's preflight failed before any job ran (exit 21)."""

    exit_code = 21


class RunnerError(SoakError):
    """The dx-runner command surface failed or answered something unparseable."""

    exit_code = 1


class TargetError(SoakError):
    """The daemon under test could not be started, found or checked (exit 3)."""

    exit_code = 3


class ProtocolError(SoakError):
    """The daemon does not speak the configured WATCHER protocol profile (exit 1)."""

    exit_code = 1


class GateFailed(SoakError):
    """A run finished and its gate or verdict is FAIL (exit 1); raised by notebooks."""

    exit_code = 1

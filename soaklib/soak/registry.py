"""The registry of soak types: the only place a soak is named.

Each :class:`SoakType` says everything the toolkit needs to know of a soak: its letter and
title, its driver, its pass criteria, how its observed values are computed from a run
folder, its length in the plan and the wording of its line in the combined signoff. The
CLI's choices, parameter validation, the harness, the signoff and the combined verdict all
ask the registry; an unknown soak is an error that names the known ones, never a fallback.

The built-in soaks A, B and C register themselves from :mod:`soaklib.soak.builtin` on first
use. A new soak type registers with :func:`register` (a test can do it from its own file).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from soaklib.errors import ParameterError

if TYPE_CHECKING:
    from soaklib.analysis.criteria import Criterion
    from soaklib.runs import Run
    from soaklib.soak.context import Driver

#: Observed values of a run, by metric id, for the criteria (``observe(run, analysis)``). It is called
#: with the dict of ``soaklib.soak.observers.analyze``, so an observer may take that dict, any
#: ``Mapping`` or ``dict | None`` (as the built-in ones do).
Observer = Callable[["Run", dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class SoakType:
    """One kind of soak (see the module docstring)."""

    letter: str  # "a": the CLI's `soak watcher a`, the signoff's `soak`, the run id's prefix
    title: str  # "Daemon endurance"
    driver: Callable[[], Driver]  # makes a fresh driver for one run
    criteria: Callable[[], list[Criterion]]  # the pass criteria (the plan's table as data)
    observe: Observer  # observed values by metric id, from the run folder (and its analysis)
    plan_length_s: tuple[float, float | None]  # the plan's length: shortest, longest (None: "or more")
    plan_length_text: str  # "2–4 h"
    #: the values of its line in the combined signoff's changelog, from the observed values
    #: (``["12/12 requests processed", "0 errors"]``); ``made_on`` is "60 s of … on …"
    summary: Callable[[Mapping[str, Any], str], list[str]] = field(default=lambda observed, made_on: [made_on])
    #: figures of its own beside the resource figures, by name (``queue``, ``convergence``, ``loop``)
    figures: tuple[str, ...] = ()
    #: one of the soaks the combined signoff needs for PRODUCTION-READY
    in_combined: bool = True


_REGISTRY: dict[str, SoakType] = {}
_BUILTIN_MODULE = "soaklib.soak.builtin"
_loaded = False


def register(soak_type: SoakType, *, replace: bool = False) -> SoakType:
    """Add a soak type; a letter already taken is refused unless ``replace``."""
    if not soak_type.letter.isalnum() or soak_type.letter != soak_type.letter.lower():
        raise ParameterError(f"soak type letter {soak_type.letter!r} is invalid: expected a lower-case name",
                             key="soak", value=soak_type.letter)
    if soak_type.letter in _REGISTRY and not replace:
        raise ParameterError(f"soak {soak_type.letter!r} is already registered ({_REGISTRY[soak_type.letter].title})",
                             key="soak", value=soak_type.letter)
    _REGISTRY[soak_type.letter] = soak_type
    return soak_type


def register_builtin_first() -> None:
    """Load the built-in soaks before a new one is added (keeps a, b, c first)."""
    _load_builtin()


def unregister(letter: str) -> None:
    """Remove a soak type (tests that register one remove it again)."""
    _REGISTRY.pop(letter, None)


def _load_builtin() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        importlib.import_module(_BUILTIN_MODULE)


def letters() -> tuple[str, ...]:
    """The registered soaks, in order (``a``, ``b``, ``c``, then any added)."""
    _load_builtin()
    return tuple(_REGISTRY)


def get(letter: str | None) -> SoakType:
    """The soak type ``letter``; a ``ParameterError`` naming the known soaks otherwise."""
    _load_builtin()
    if letter is None or letter not in _REGISTRY:
        raise ParameterError(f"soak {letter!r} is unknown: known soaks are {', '.join(_REGISTRY)}",
                             key="soak", value=letter)
    return _REGISTRY[letter]

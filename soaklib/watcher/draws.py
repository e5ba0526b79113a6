"""Synthetic draw injection with a known PRNG and seed (soak plan sections 2.2 and 6).

The history ``lottery_history.json`` is ``{"draws": [record, ...]}`` with records in the
plan's bootstrap schema: ``date session draw value draw_source true_seed``. Record ``i``
is fully determined by its index: value ``i`` of the PRNG, date 2024-01-01 plus ``i // 2``
days, session midday for even ``i`` and evening for odd ``i``. Injection continues the
sequence at the history's length (never replaying position 0), rewrites the history
atomically (temporary file in the same folder + rename) so a reader never sees a
truncated file, and only then writes ``new_draw.flag`` for the daemon.
"""
from __future__ import annotations

import json
import os
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from soaklib.errors import ParameterError, TargetError
from soaklib.prng import PRNGS, digits, draw_values
from soaklib.store import atomic_write_text, utc_now

HISTORY_FILE = "lottery_history.json"
FLAG_FILE = "new_draw.flag"
FIRST_DATE = date(2024, 1, 1)
SOURCE_BOOTSTRAP = "synthetic_bootstrap"
SOURCE_INJECTION = "synthetic_injection"


def history_path(project_dir: str | os.PathLike[str]) -> Path:
    """Where the draw history of a project lives."""
    return Path(project_dir) / HISTORY_FILE


def draw_record(index: int, value: int, *, seed: int, source: str) -> dict[str, Any]:
    """The history record of draw number ``index`` (0-based) with the given value."""
    session = "midday" if index % 2 == 0 else "evening"
    return {
        "date": (FIRST_DATE + timedelta(days=index // 2)).isoformat(),
        "session": session,
        "draw": digits(value),
        "value": value,
        "draw_source": source,
        "true_seed": seed,
    }


def _history_text(draws: list[dict[str, Any]]) -> str:
    """``{"draws": [...]}`` with one record per line: readable, diffable, and fast to write
    (the C encoder; an indented dump of a 5,000-draw history costs ~20x more)."""
    if not draws:
        return '{"draws": []}\n'
    return '{"draws": [\n' + ",\n".join(json.dumps(d) for d in draws) + "\n]}\n"


def read_history(project_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The draws of a project's history ([] when the file does not exist).

    A file that is not ``{"draws": [...]}`` JSON raises TargetError naming the file and
    what to do, instead of being silently replaced.
    """
    path = history_path(project_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise TargetError(f"cannot read draw history {path}: {exc}; fix or remove the file", path=str(path)) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TargetError(
            f"draw history {path} is not valid JSON ({exc.msg} at line {exc.lineno}): "
            "restore it from a backup, or move it aside to bootstrap a fresh history",
            path=str(path),
        ) from exc
    draws = data.get("draws") if isinstance(data, dict) else None
    if not isinstance(draws, list):
        raise TargetError(
            f'draw history {path} has no "draws" list: expected {{"draws": [...]}}; '
            "restore it from a backup, or move it aside to bootstrap a fresh history",
            path=str(path),
        )
    return draws


def history_length(project_dir: str | os.PathLike[str]) -> int:
    """Number of draws in a project's history (0 when there is none)."""
    return len(read_history(project_dir))


def _check(n: int, mod: int, prng: str, what: str) -> None:
    if prng not in PRNGS:
        raise ParameterError(
            f"injection.prng = {prng!r} is unknown: expected one of {', '.join(sorted(PRNGS))}",
            key="injection.prng",
            value=prng,
        )
    if not isinstance(mod, int) or mod < 1:
        raise ParameterError(f"injection.mod = {mod!r} is invalid: expected an integer >= 1", key="injection.mod", value=mod)
    if not isinstance(n, int) or n < 1:
        raise ParameterError(f"{what} = {n!r} is invalid: expected an integer >= 1", key=what, value=n)


def bootstrap_history(
    project_dir: str | os.PathLike[str], n: int, *, seed: int, mod: int = 1000, prng: str = "java_lcg"
) -> int:
    """Write a fresh history of ``n`` synthetic draws; returns ``n``.

    Refuses (ParameterError) when the project already has a history: months of real or
    earlier synthetic draws are never overwritten by a soak.
    """
    _check(n, mod, prng, "injection.bootstrap_draws")
    path = history_path(project_dir)
    if path.exists():
        raise ParameterError(
            f"draw history {path} already exists ({history_length(project_dir)} draws): "
            "bootstrap only creates a new history; inject draws to extend it",
            key="project_dir",
            value=str(project_dir),
        )
    values = draw_values(seed, n, start=0, mod=mod, prng=prng)
    draws = [draw_record(i, v, seed=seed, source=SOURCE_BOOTSTRAP) for i, v in enumerate(values)]
    atomic_write_text(path, _history_text(draws))
    return n


def inject_draws(
    project_dir: str | os.PathLike[str], count: int = 1, *, seed: int, mod: int = 1000, prng: str = "java_lcg"
) -> list[dict[str, Any]]:
    """Append ``count`` draws continuing the sequence at the history's length.

    The history is rewritten atomically, then ``new_draw.flag`` is written (also atomically)
    so the daemon never sees the flag before the draws. Returns the new records.
    """
    _check(count, mod, prng, "count")
    project = Path(project_dir)
    if not project.is_dir():
        raise ParameterError(f"project folder {project} does not exist", key="project_dir", value=str(project))
    draws = read_history(project)
    start = len(draws)
    values = draw_values(seed, count, start=start, mod=mod, prng=prng)
    new = [draw_record(start + i, v, seed=seed, source=SOURCE_INJECTION) for i, v in enumerate(values)]
    draws.extend(new)
    atomic_write_text(history_path(project), _history_text(draws))
    flag = {"injected_at": utc_now().isoformat(), "count": count, "first_index": start, "history_length": len(draws)}
    atomic_write_text(project / FLAG_FILE, json.dumps(flag) + "\n")
    return new

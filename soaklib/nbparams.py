"""The notebooks' parameters cells, written from the parameter dataclasses' help.

A notebook's ``parameters`` cell is one literal assignment per key, each with a comment
giving its unit and meaning. The library's keys come from :mod:`soaklib.params` (the
dataclass defaults and their ``param(help=...)``), the notebook's own keys (load a run,
the gate, rewriting artifacts) from the small dataclasses below, so the CLI's help, the
YAML keys and the notebooks say the same thing. ``parameters_cell(...)`` renders a cell;
a test checks each committed notebook against it.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

from soaklib.params import MultiProviderParams, SoakParams, param
from soaklib.sim.dx_runner.scenarios import SCENARIOS


@dataclass
class LaneNotebook:
    """Keys of ``multi_provider.ipynb`` beside :class:`MultiProviderParams` (``dry_run``: the
    notebook runs the simulator unless told otherwise; ``scenario`` names them all)."""

    dry_run: bool = param(True, "bool: True runs the built-in dx-runner simulator, False a real dx-runner")
    scenario: str = param("clean", "simulator scenario (dry runs only): " + ", ".join(SCENARIOS))
    runs_json: str | None = param(None, "path: analyse this {run_id}.json instead of executing a run")
    write_evidence: bool = param(False, "bool: True rewrites the loaded run's (runs_json) JSON, Markdown and figure; "
                                        "a run always writes them")
    fail_on_gate: bool = param(True, "bool: raise GateFailed at the end when the gate fails, so papermill exits "
                                     "non-zero (-p fail_on_gate false works)")


@dataclass
class SoakNotebook:
    """Keys of ``watcher_soak.ipynb`` beside :class:`SoakParams`."""

    run_dir: str | None = param(None, "folder: analyse this existing run ({output_dir}/{run_id}) instead of running "
                                      "a soak")
    fail_on_gate: bool = param(True, "bool: raise GateFailed at the end when the verdict is FAIL, so papermill exits "
                                     "non-zero")
    write_signoff: bool = param(False, "bool: load mode (run_dir set) only: True rewrites the run's {run_id}.json/.md "
                                       "and figures; a soak run always writes them")


@dataclass
class CombinedNotebook:
    """Keys of ``signoff.ipynb`` (the combined signoff)."""

    runs: dict[str, str] = param(factory=dict, help="soak → run folder, e.g. {'a': 'outputs/watcher-soak/soak-a-…'}; "
                                                    "{} means the latest run of each soak in output_dir")
    output_dir: str = param("outputs/watcher-soak", "folder: soak-signoff-<stamp>.json|md are written here (and runs "
                                                    "looked up when runs is {})")
    fail_on_gate: bool = param(False, "bool: raise GateFailed when the verdict is NEEDS FIXES, so papermill exits "
                                      "non-zero")
    write_signoff: bool = param(False, "bool: True writes soak-signoff-<stamp>.json|md to output_dir; the runs' own "
                                       "signoffs are never rewritten")


#: each notebook's parameter dataclasses, in the order of its cell
NOTEBOOKS: dict[str, tuple[type, ...]] = {
    "multi_provider.ipynb": (MultiProviderParams, LaneNotebook),
    "watcher_soak.ipynb": (SoakParams, SoakNotebook),
    "signoff.ipynb": (CombinedNotebook,),
}


def _type_name(hint: Any, default: Any) -> str:
    if default is not None:
        return "dict" if dataclasses.is_dataclass(default) else type(default).__name__
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = typing.get_origin(args[0]) or args[0] if args else hint
    return getattr(base, "__name__", "str")


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def parameters_cell(*classes: type) -> str:
    """The ``parameters`` cell of a notebook whose keys are the fields of ``classes``
    (later classes win on a name both have): ``name: type = default  # help``."""
    lines: dict[str, str] = {}
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            value = _default(f)
            literal = dataclasses.asdict(value) if dataclasses.is_dataclass(value) and not isinstance(value, type) \
                else value
            lines[f.name] = f"{f.name}: {_type_name(hints[f.name], value)} = {literal!r}  # {f.metadata['help']}"
    return "\n".join(lines.values())

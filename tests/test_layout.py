"""The architecture as a test: which package may import which, no cycles, no giant modules.

Read with the standard library's ``ast`` (imports anywhere in a module count, lazy ones
inside functions included; ``if TYPE_CHECKING:`` blocks do not). Layers, top to bottom::

    cli, notebooks
    fleet                             (many hosts: runs soaks and lanes on an executor, judges a fleet)
    soak · dispatch · report          (report may read soak's registry; soak never imports report)
    watcher → observe → proc          (the WATCHER protocol uses the observers, never the reverse)
    analysis · runs → parts → params → store → errors · redact · prng
    sim: stand-alone programs (only ``soaklib.prng``, a pure helper, besides themselves)
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

from tests.conftest import REPO

PKG = REPO / "soaklib"
BASE = {"errors", "redact", "prng", "store", "paramfile", "params", "parts", "runs", "analysis", "artifacts"}
#: top-level part of soaklib → the parts it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "errors": set(), "redact": set(), "prng": set(),
    "store": {"errors"},
    "paramfile": {"errors"},
    "params": {"errors", "store", "paramfile"},
    "nbparams": {"errors", "store", "params", "sim"},
    "parts": {"errors", "store"},
    "runs": {"errors", "store", "parts"},
    "analysis": {"errors"},
    "artifacts": {"errors", "analysis"},
    "proc": BASE,
    "observe": BASE | {"proc"},
    "watcher": BASE | {"proc", "observe"},
    "sim": {"prng"},
    "soak": BASE | {"proc", "observe", "watcher", "sim"},
    "dispatch": BASE | {"proc", "observe", "sim"},
    "report": BASE | {"proc", "observe", "watcher", "soak", "dispatch"},
    "fleet": BASE | {"proc", "observe", "watcher", "soak", "dispatch", "report"},
    "cli": BASE | {"proc", "observe", "watcher", "soak", "dispatch", "report", "sim", "fleet"},
    "__init__": set(),  # lazy re-exports by name only
}
#: stdlib modules that do I/O: analysis must not import them
IO_MODULES = {"os", "io", "pathlib", "subprocess", "shutil", "socket", "urllib", "http", "tempfile", "glob",
              "sqlite3", "requests", "pyarrow", "matplotlib"}
MAX_LINES = 440  # "about 400": the dx-runner client (436) is the largest


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(REPO).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path, module: str, *, top_level_only: bool = False) -> set[str]:
    """Absolute names a module imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(node: ast.AST, depth: int) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                continue
            if top_level_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    name = ".".join(base + ([child.module] if child.module else []))
                else:
                    name = child.module or ""
                found.add(name)
                found.update(f"{name}.{a.name}" for a in child.names)
            visit(child, depth + 1)

    visit(tree, 0)
    return found


def part_of(name: str) -> str | None:
    bits = name.split(".")
    if bits[0] != "soaklib":
        return None
    return bits[1] if len(bits) > 1 else "__init__"


def test_every_part_is_known() -> None:
    parts = {part_of(m) for m in modules()}
    assert parts <= set(ALLOWED), f"add these to the layout rules: {sorted(parts - set(ALLOWED))}"


@pytest.mark.parametrize("module", sorted(modules()))
def test_imports_flow_one_way(module: str) -> None:
    me = part_of(module)
    assert me is not None
    bad = sorted({n for n in imports_of(modules()[module], module)
                  if (p := part_of(n)) is not None and p not in (me, "__init__") and p not in ALLOWED[me]
                  and n in modules()})
    assert not bad, f"{module} imports {bad}: {me} may import only {sorted(ALLOWED[me])}"


def test_analysis_does_no_io() -> None:
    for module, path in modules().items():
        if part_of(module) == "analysis":
            io = sorted(n for n in imports_of(path, module) if n.split(".")[0] in IO_MODULES)
            assert not io, f"{module} imports I/O modules {io}"


def test_soak_observe_watcher_proc_never_import_report() -> None:
    for module, path in modules().items():
        if part_of(module) in ("soak", "observe", "watcher", "proc"):
            assert not [n for n in imports_of(path, module) if n.startswith("soaklib.report")], module


def test_no_import_cycle() -> None:
    mods = modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in mods.items():
        for name in imports_of(path, module, top_level_only=True):
            while name and name not in mods:
                name = name.rpartition(".")[0]
            # a submodule importing its own package (``from . import sibling``) is no cycle:
            # the package is already being imported when the submodule runs
            if name and name != module and name != "soaklib" and not module.startswith(name + "."):
                graph[module].add(name)
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                raise AssertionError("import cycle: " + " → ".join(cycle))
            if n not in state:
                dfs(n)
        stack.pop()
        state[m] = 2

    for m in sorted(mods):
        if m not in state:
            dfs(m)


def test_no_module_over_the_size_limit() -> None:
    big = {m: n for m, p in modules().items() if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not big, f"split these modules (over {MAX_LINES} lines): {big}"

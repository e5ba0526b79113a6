"""Every command in the README's code blocks runs as written, from a fresh copy of the repository.

The commands are read from the README itself (```bash and ```python blocks), so a command
added to the README without an expectation here fails this test. They run verbatim in a copy
of the tracked files, with the project's virtual environment on PATH, relative paths and the
default output folders. The only changes, each marked below:

- the "a minute or two" soak demos run shorter, through their parameter files in the copy
  (the README command itself is unchanged);
- placeholders that stand for a run folder made by an earlier command (``RUN_DIR_A``, the
  example run id in the Python snippet) are replaced by that folder;
- the live-lane notebook finds a dx-runner through ``$DX_RUNNER``: a two-line wrapper around
  the built-in simulator stands in for the real runner;
- ``make test`` is the command running this test, so it is not run again.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

README = REPO / "README.md"
VENV_BIN = Path(sys.executable).parent

#: Shorter demo soaks, written into the copy's parameter files (README: "a minute or two").
SHORT_DEMOS = {
    "soak_a_demo.yaml": {"duration_s": 20, "warmup_s": 4, "probes_at_s": [2, 4], "llm": {"outages": [[7, 10]]}},
    "soak_c_demo.yaml": {"duration_s": 30, "warmup_s": 5, "injection": {"interval_s": 1.2}},
}


@dataclass(frozen=True)
class Expect:
    """What a README command promises: its exit code and the files it leaves (globs)."""

    pattern: str
    exit_code: int
    files: tuple[str, ...] = ()
    stdout: str | None = None


EXPECTATIONS = [
    Expect(r"^make test\b", -1),  # the command running this test
    Expect(r"^make demo\b", 0, ("outputs/multi-provider-soak/demo-*.json", "outputs/multi-provider-soak/demo-*.md",
                                "outputs/multi-provider-soak/demo-*.ipynb", "outputs/multi-provider-soak/demo-*/jobs.parquet",
                                "outputs/multi-provider-soak/demo-*.html")),
    Expect(r"soak watcher a --params parameters/soak_a_demo.yaml$", 0,
           ("outputs/watcher-soak/soak-a-*.json", "outputs/watcher-soak/soak-a-*.md",
            "outputs/watcher-soak/soak-a-*/samples/host=*/part-*.parquet")),
    Expect(r"soak watcher b --params parameters/soak_b_demo.yaml$", 0,
           ("outputs/watcher-soak/soak-b-*.json", "outputs/watcher-soak/soak-b-*.md")),
    Expect(r"soak watcher c --params parameters/soak_c_demo.yaml$", 0,
           ("outputs/watcher-soak/soak-c-*.json", "outputs/watcher-soak/soak-c-*.md")),
    Expect(r"soak watcher b .*--set sim.duplicate_every=3", 1, ("outputs/watcher-soak/soak-b-*.json",)),
    Expect(r"^papermill notebooks/multi_provider.ipynb outputs/multi_provider.ipynb$", 0,
           ("outputs/multi_provider.ipynb", "outputs/multi-provider-soak/soak-*.json")),
    Expect(r"^papermill notebooks/multi_provider.ipynb out.ipynb -f parameters/multi_provider_live.yaml$", 0,
           ("out.ipynb",)),
    Expect(r"^papermill notebooks/watcher_soak.ipynb out.ipynb -f parameters/soak_a_demo.yaml$", 0, ("out.ipynb",)),
    Expect(r"^papermill notebooks/signoff.ipynb out.ipynb -y", 0, ("out.ipynb",)),  # write_signoff: false
    Expect(r"^papermill --help-notebook notebooks/multi_provider.ipynb$", 0, (), stdout="fail_on_gate"),
    Expect(r"soak compare outputs/watcher-soak RUN_DIR_A$", 0,
           tuple(f"outputs/compare/compare-soak-a-*-vs-soak-a-*.{ext}" for ext in ("json", "md", "png"))),
    Expect(r"soak report RUN_DIR_A$", 0, ("outputs/watcher-soak/soak-a-*.html",)),
    Expect(r"^python: ", 0, (), stdout="samples"),
]


def readme_commands(text: str) -> list[str]:
    """The commands of the README's ```bash blocks (one per line, trailing comment dropped)
    and its ```python blocks (one command each, prefixed ``python: ``), in order."""
    commands: list[str] = []
    for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M):
        if lang == "python":
            commands.append("python: " + body.strip())
        elif lang in ("bash", "sh", "console"):
            for line in body.splitlines():
                line = re.sub(r"\s+#\s.*$", "", line).strip()
                if line and not line.startswith("#"):
                    commands.append(line)
    return commands


def expectation(command: str) -> Expect:
    found = [e for e in EXPECTATIONS if re.search(e.pattern, command)]
    assert found, f"README command has no expectation in tests/test_readme.py: {command!r}"
    return found[0]


def fresh_copy(dest: Path) -> None:
    """The tracked files of the repository (mtimes kept, so make sees the venv as current)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=30).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    (dest / "outputs").mkdir(exist_ok=True)
    # the project's environment, seen as installed and current (make must not reinstall into it)
    venv = dest / ".venv"
    venv.mkdir()
    (venv / "bin").symlink_to(VENV_BIN)
    (venv / ".installed").touch()
    for name, changes in SHORT_DEMOS.items():  # marked change: shorter demo soaks
        path = dest / "parameters" / name
        data = yaml.safe_load(path.read_text())
        for key, value in changes.items():
            if isinstance(value, dict):
                data.setdefault(key, {}).update(value)
            else:
                data[key] = value
        path.write_text(yaml.safe_dump(data, sort_keys=False))


def latest(root: Path, pattern: str) -> str:
    found = sorted(p for p in root.glob(pattern) if p.is_dir())
    assert found, f"no run folder {pattern} made by an earlier README command"
    return str(found[-1].relative_to(root))


def substitute(command: str, root: Path) -> str:
    """Marked substitutions: placeholders for run folders made by earlier commands."""
    for letter in "abc":
        if f"RUN_DIR_{letter.upper()}" in command:
            command = command.replace(f"RUN_DIR_{letter.upper()}", latest(root, f"outputs/watcher-soak/soak-{letter}-*"))
    return re.sub(r"outputs/watcher-soak/soak-a-\d{8}T\d{6}Z", lambda _m: latest(root, "outputs/watcher-soak/soak-a-*"),
                  command)


@dataclass
class Outcome:
    command: str
    returncode: int
    output: str
    root: Path


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Outcome]]:
    root = tmp_path_factory.mktemp("readme")
    fresh_copy(root)
    runner = root / "dx-runner-sim"  # marked change: the live lane's runner is the simulator
    runner.write_text(f"#!/bin/sh\nexec {VENV_BIN / 'python'} -m soaklib.sim.dx_runner \"$@\"\n")
    runner.chmod(0o755)
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DX_RUNNER": str(runner)}
    env.pop("MPLBACKEND", None)
    results: dict[str, Outcome] = {}
    for command in readme_commands(README.read_text(encoding="utf-8")):
        if expectation(command).exit_code < 0:
            continue
        actual = substitute(command, root)
        if actual.startswith("python: "):
            argv = [str(VENV_BIN / "python"), "-c", actual.removeprefix("python: ")
                    + "\nassert len(run.samples) and run.kind == 'watcher-a' and run.signoff\nprint('samples', len(run.samples))"]
        else:
            argv = ["bash", "-c", actual]
        proc = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=600,
                              start_new_session=True)
        results[command] = Outcome(command, proc.returncode, proc.stdout + proc.stderr, root)
    yield results


def test_readme_has_the_two_setup_commands() -> None:
    commands = readme_commands(README.read_text(encoding="utf-8"))
    assert commands[:2] == ["make demo", "make test"]


def test_every_readme_command_has_an_expectation() -> None:
    for command in readme_commands(README.read_text(encoding="utf-8")):
        expectation(command)


@pytest.mark.timeout(1200)
def test_every_readme_command_works_as_written(outcomes: dict[str, Outcome]) -> None:
    problems = []
    for command, out in outcomes.items():
        want = expectation(command)
        if out.returncode != want.exit_code:
            problems.append(f"{command!r}: exit {out.returncode}, expected {want.exit_code}\n{out.output[-2000:]}")
            continue
        for pattern in want.files:
            if not list(out.root.glob(pattern)):
                problems.append(f"{command!r}: promised file {pattern} is missing")
        if want.stdout and want.stdout not in out.output:
            problems.append(f"{command!r}: output lacks {want.stdout!r}\n{out.output[-1000:]}")
    assert not problems, "\n\n".join(problems)
    assert len(outcomes) >= 10

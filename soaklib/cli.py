"""The ``soak`` command: parse flags, call one library function, map errors to exit codes.

Exit codes: 0 pass · 1 not clean / FAIL · 2 bad usage or parameters · 3 target not
started/found (watcher) · 21 preflight failed (multi-provider) · 130 interrupted.
"""
from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any, Callable

import click

from soaklib.errors import SoakError

EXIT_INTERRUPTED = 130


def _sigterm_as_interrupt() -> None:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _run(fn: Callable[[], int]) -> None:
    """Call ``fn`` and exit with its code; a SoakError becomes one clear line and its code."""
    _sigterm_as_interrupt()
    try:
        code = fn()
    except SoakError as e:
        click.echo(f"soak: error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("soak: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="soaklib")
def main() -> None:
    """Soak validation: multi-provider dispatch lanes and long-running daemons."""


# --------------------------------------------------------------------------- multi-provider


@main.command("multi-provider")
@click.option("--dry-run", is_flag=True, default=None, help="Use the built-in dx-runner simulator.")
@click.option("--scenario", default=None, help="Simulator scenario (dry runs): clean, signoff-2026-02-20, model-drift, stall, hang, flaky, cap.")
@click.option("--rounds", type=int, default=None, help="Consecutive rounds that must be clean [2].")
@click.option("--parallel", type=int, default=None, help="Jobs in flight at most [6].")
@click.option("--timeout-sec", type=float, default=None, help="Per-job timeout in seconds [300].")
@click.option("--worktree", default=None, help="Worktree for jobs [fresh git repo under /tmp/agents/<run_id>/repo].")
@click.option("--run-id", default=None, help="Run id (plain name) [soak-<UTC stamp>].")
@click.option("--output-dir", default=None, help="Where the JSON/MD go [outputs/multi-provider-soak].")
@click.option("--providers", default=None, help="Comma-separated providers [opencode,cc-glm,gemini].")
@click.option("--jobs-per-provider", type=int, default=None, help="Jobs per provider per round [2].")
@click.option("--max-retries", type=int, default=None, help="Extra attempts for transient failures [0].")
@click.option("--dx-runner", "dx_runner", default=None, help="Path of dx-runner [$DX_RUNNER, PATH, scripts/dx-runner].")
@click.option("--outcome-dir", default=None, help="Where the runner writes job files [/tmp/dx-runner].")
@click.option("--params", "params_file", type=click.Path(dir_okay=False), default=None, help="YAML parameter file.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def multi_provider(params_file: str | None, no_progress: bool, **flags: Any) -> None:
    """Run N parallel jobs per round through dx-runner; exit 0 clean · 1 not · 21 preflight · 130 interrupted."""

    def go() -> int:
        from soaklib.dispatch.rounds import run_lane
        from soaklib.params import MultiProviderParams, load_params
        from soaklib.report.multi_provider import write_evidence

        overrides = {k: v for k, v in flags.items() if v is not None}
        params = load_params(MultiProviderParams, params_file, overrides)
        result = run_lane(params, echo=click.echo, progress=not no_progress and sys.stderr.isatty())
        paths = write_evidence(result.evidence, params.output_dir)
        click.echo("\nArtifacts:")
        click.echo(f"  JSON: {paths['json']}")
        click.echo(f"  Markdown: {paths['md']}")
        click.echo(f"  Jobs: {result.run_dir / 'jobs.parquet'}")
        return result.exit_code

    _run(go)


# --------------------------------------------------------------------------- simulators


@main.group("sim")
def sim() -> None:
    """The embedded simulators as programs."""


def _passthrough(name: str, module: str, help_text: str) -> None:
    @sim.command(name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}, help=help_text)
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def cmd(args: tuple[str, ...]) -> None:
        import importlib

        sys.exit(importlib.import_module(module).main(list(args)))


_passthrough("dx-runner", "soaklib.sim.dx_runner", "The dx-runner simulator (preflight, start, check, report, stop).")
_passthrough("watcher", "soaklib.sim.watcher", "The reference WATCHER daemon (profile watcher-v2).")
_passthrough("llm-server", "soaklib.sim.llm_server", "The loopback LLM server (/health, /completion) with outage windows.")


if __name__ == "__main__":  # pragma: no cover
    main()

"""The ``soak`` command: parse flags, call one library function, map errors to exit codes.

Exit codes: 0 pass · 1 not clean / FAIL · 2 bad usage or parameters · 3 target not
started/found (watcher) · 21 preflight failed (multi-provider) · 28 disk full (watcher) ·
130 interrupted.
"""
from __future__ import annotations

import errno
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from soaklib.errors import EXIT_DISK_FULL, EXIT_FAIL, EXIT_INTERRUPTED, EXIT_OK, SoakError


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
    except OSError as e:  # a full disk met outside a soak's recorder (a lane, a report): one line, exit 28
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        click.echo(f"soak: error: the disk is full ({os.strerror(e.errno)}) writing {e.filename or 'a file'}: "
                   "stopped; what was written before is kept. Free space, then run the command again", err=True)
        sys.exit(EXIT_DISK_FULL)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="soaklib")
def main() -> None:
    """Soak validation: multi-provider dispatch lanes and long-running daemons."""


# --------------------------------------------------------------------------- multi-provider


def _help(cls_name: str, name: str, choices: tuple[str, ...] = ()) -> str:
    """Option help from the parameter's own help text and default (one source: params.py)."""
    import dataclasses

    from soaklib import params

    cls = getattr(params, cls_name)
    fld = {f.name: f for f in dataclasses.fields(cls)}[name]
    default = fld.default if fld.default_factory is dataclasses.MISSING else fld.default_factory()
    if isinstance(default, list):
        default = ",".join(map(str, default))
    shown = "" if default in (None, False, "") else f" [{default}]"
    listed = f", one of: {', '.join(choices)}" if choices else ""
    return params.help_of(cls, name) + listed + shown


def _mp_help(name: str, choices: tuple[str, ...] = ()) -> str:
    return _help("MultiProviderParams", name, choices)


def _scenarios() -> tuple[str, ...]:
    from soaklib.sim.dx_runner.scenarios import SCENARIOS

    return tuple(SCENARIOS)


def _soak_help(name: str) -> str:
    return _help("SoakParams", name)


@main.command("multi-provider")
@click.option("--dry-run", is_flag=True, default=None, help=_mp_help("dry_run"))
@click.option("--scenario", default=None, help=_mp_help("scenario", _scenarios()))
@click.option("--rounds", type=int, default=None, help=_mp_help("rounds"))
@click.option("--parallel", type=int, default=None, help=_mp_help("parallel"))
@click.option("--timeout-sec", type=float, default=None, help=_mp_help("timeout_sec"))
@click.option("--worktree", default=None, help=_mp_help("worktree"))
@click.option("--run-id", default=None, help=_mp_help("run_id"))
@click.option("--output-dir", default=None, help=_mp_help("output_dir"))
@click.option("--providers", default=None, help=_mp_help("providers"))
@click.option("--jobs-per-provider", type=int, default=None, help=_mp_help("jobs_per_provider"))
@click.option("--max-retries", type=int, default=None, help=_mp_help("max_retries"))
@click.option("--dx-runner", "dx_runner", default=None, help=_mp_help("dx_runner"))
@click.option("--outcome-dir", default=None, help=_mp_help("outcome_dir"))
@click.option("--params", "params_file", type=click.Path(dir_okay=False), default=None, help="YAML parameter file.")
@click.option("--executor", default="local", show_default=True,
              help="Where the jobs run: local (this machine) or dask://HOST:PORT (the workers of a Dask cluster).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def multi_provider(params_file: str | None, no_progress: bool, executor: str, **flags: Any) -> None:
    """Run N parallel jobs per round through dx-runner; exit 0 clean · 1 not · 21 preflight · 130 interrupted."""

    def go() -> int:
        from soaklib.fleet.lanes import run_lane_on
        from soaklib.params import MultiProviderParams, load_params
        from soaklib.report.multi_provider import write_evidence

        overrides = {k: v for k, v in flags.items() if v is not None}
        params = load_params(MultiProviderParams, params_file, overrides)
        result = run_lane_on(executor, params, echo=click.echo, progress=not no_progress and sys.stderr.isatty())
        paths = write_evidence(result.evidence, params.output_dir)
        click.echo("\nArtifacts:")
        click.echo(f"  JSON: {paths['json']}")
        click.echo(f"  Markdown: {paths['md']}")
        click.echo(f"  Jobs: {result.run_dir / 'jobs.parquet'}")
        return int(result.exit_code)

    _run(go)


# --------------------------------------------------------------------------- WATCHER soaks

EXIT_PASS = EXIT_OK


def _verdict_code(signoff_json: Path) -> int:
    import json

    return EXIT_PASS if json.loads(signoff_json.read_text(encoding="utf-8"))["verdict"] == "PASS" else EXIT_FAIL


class _SoakType(click.ParamType):  # type: ignore[type-arg]  # generic in the stubs only
    """A registered soak letter (asked of the soak registry when the command runs)."""

    name = "soak"

    def get_metavar(self, param: click.Parameter, *args: Any, **kwargs: Any) -> str:
        from soaklib.soak import registry

        return "[" + "|".join(registry.letters()) + "]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from soaklib.soak import registry

        if value not in registry.letters():
            self.fail(f"{value!r} is not a soak type: known soaks are {', '.join(registry.letters())}", param, ctx)
        return str(value)


@main.command("watcher")
@click.argument("soak", type=_SoakType())
@click.option("--params", "params_file", type=click.Path(dir_okay=False), default=None, help="YAML parameter file.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override one key, e.g. target.halt.timeout_s=10 (repeatable).")
@click.option("--run-id", default=None, help=_soak_help("run_id"))
@click.option("--output-dir", default=None, help=_soak_help("output_dir"))
@click.option("--force", is_flag=True, default=None, help=_soak_help("force"))
@click.option("--keep-changes", is_flag=True, default=None, help=_soak_help("keep_changes"))
@click.option("--host", default=None, help=_soak_help("host"))
@click.option("--no-progress", is_flag=True, help="No progress line.")
def watcher(soak: str, params_file: str | None, sets: tuple[str, ...], no_progress: bool, **flags: Any) -> None:
    """Soak a WATCHER daemon; exit 0 PASS · 1 FAIL · 2 bad parameters · 3 target/preflight · 28 disk full · 130 interrupted."""

    def go() -> int:
        from soaklib.errors import DiskFullError, ProtocolError
        from soaklib.params import SoakParams, load_params
        from soaklib.report.signoff import write_signoff
        from soaklib.soak.harness import run_soak

        overrides = {"soak": soak, **{k: v for k, v in flags.items() if v is not None}}
        params = load_params(SoakParams, params_file, overrides, list(sets))
        try:
            result = run_soak(params, echo=click.echo, progress=not no_progress and sys.stderr.isatty())
        except (ProtocolError, DiskFullError) as e:
            run_dir = e.run_dir
            if run_dir and Path(str(run_dir)).is_dir():
                try:
                    paths = write_signoff(str(run_dir))
                    click.echo(f"Signoff (partial): {paths['json']}", err=True)
                except OSError:
                    if not isinstance(e, DiskFullError):
                        raise
            raise
        paths = write_signoff(result.run_dir)
        click.echo("\nSignoff:")
        click.echo(f"  JSON: {paths['json']}")
        click.echo(f"  Markdown: {paths['md']}")
        click.echo(f"  Samples: {result.run_dir / 'samples'}")
        code = _verdict_code(paths["json"])
        click.echo(f"Verdict: {'PASS' if code == EXIT_PASS else 'FAIL'}" + (" (interrupted)" if result.interrupted else ""))
        return EXIT_INTERRUPTED if result.interrupted else code

    _run(go)


@main.command("monitor", context_settings={"allow_interspersed_args": False})
@click.option("--pid", type=int, default=None, help="Attach to this process.")
@click.option("--match", default=None, help="Attach to the one process whose command line matches this regex.")
@click.option("--interval-s", type=float, default=1.0, show_default=True, help="Seconds between samples.")
@click.option("--duration-s", type=float, default=None, help="Stop after this many seconds.")
@click.option("--samples", type=int, default=None, help="Stop after this many samples.")
@click.option("--out", "out_dir", default=None, help="Output folder [outputs/monitor/monitor-<UTC stamp>].")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def monitor(pid: int | None, match: str | None, interval_s: float, duration_s: float | None, samples: int | None,
            out_dir: str | None, command: tuple[str, ...]) -> None:
    """Record a process tree (RSS, CPU, FDs, VRAM) to parquet and a PNG: --pid, --match or -- COMMAND..."""

    def go() -> int:
        from soaklib.errors import ParameterError
        from soaklib.observe.monitor import record
        from soaklib.report.plots import monitor_figure, save_figure
        from soaklib.runs import load_run
        from soaklib.store import utc_stamp

        if duration_s is not None and samples is not None:
            raise ParameterError("give --duration-s or --samples, not both", key="--samples")
        out = Path(out_dir) if out_dir else Path("outputs") / "monitor" / f"monitor-{utc_stamp()}"
        folder = record(pid=pid, match=match, command=list(command) or None, interval_s=interval_s,
                        duration_s=duration_s, samples=samples, out_dir=out)
        run = load_run(folder)
        click.echo(f"Samples: {len(run.samples)} in {folder / 'samples'} ({run.manifest.get('end_reason')})")
        fig = monitor_figure(run.samples) if not run.samples.empty else None
        if fig is not None:
            click.echo(f"Figure: {save_figure(fig, folder / 'monitor.png')}")
        return 0

    _run(go)


@main.command("analyze")
@click.argument("run_dir", type=click.Path())
def analyze(run_dir: str) -> None:
    """Recompute and rewrite the signoff of a run folder (partial or not); exit 0 PASS · 1 FAIL."""

    def go() -> int:
        from soaklib.errors import ParameterError
        from soaklib.fleet.verdict import is_fleet
        from soaklib.runs import load_run
        from soaklib.store import signoff_paths

        if Path(run_dir).exists() and is_fleet(run_dir):  # several hosts: the fleet verdict
            from soaklib.fleet.report import write_fleet_signoff

            paths = write_fleet_signoff(run_dir)
            code = _verdict_code(paths["json"])
            click.echo(f"Fleet signoff: {paths['json']} (verdict {'PASS' if code == EXIT_PASS else 'FAIL'})")
            click.echo(f"Markdown: {paths['md']}")
            return code
        run = load_run(run_dir)
        multi = run.kind == "multi-provider"
        if not multi and not run.manifest and run.samples.empty:
            raise ParameterError(f"{run.path} is not a run folder: it has no run.json and no samples",
                                 key="run_dir", value=str(run.path))
        if multi:
            from soaklib.report.multi_provider import read_evidence, write_evidence

            json_path, _ = signoff_paths(run.path)
            evidence = read_evidence(json_path)
            paths = write_evidence(evidence, run.path.parent)
            click.echo(f"Evidence re-rendered: {paths['json']}, {paths['md']}")
            return EXIT_PASS if evidence.get("passed") else EXIT_FAIL
        from soaklib.report.signoff import write_signoff

        paths = write_signoff(run.path)
        code = _verdict_code(paths["json"])
        click.echo(f"Signoff: {paths['json']} ({'complete' if run.complete else 'incomplete'} run, "
                   f"verdict {'PASS' if code == EXIT_PASS else 'FAIL'})")
        click.echo(f"Markdown: {paths['md']}")
        return code

    _run(go)


@main.command("fleet")
@click.argument("soak", type=_SoakType())
@click.option("--executor", default="local", show_default=True,
              help="Where the hosts' soaks run: local (threads here) or dask://HOST:PORT (one Dask worker per host, named after it).")
@click.option("--hosts", default=None, metavar="H1,H2,...", help="The hosts (Dask worker names) [the file's fleet.hosts].")
@click.option("--params", "params_file", type=click.Path(dir_okay=False), default=None, help="YAML parameter file (a soak's keys, optional fleet: {hosts, per_host}).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override one key for every host (repeatable).")
@click.option("--set-host", "host_sets", multiple=True, metavar="HOST:KEY=VALUE", help="Override one key for one host (repeatable).")
@click.option("--run-id", default=None, help=_soak_help("run_id"))
@click.option("--output-dir", default=None, help=_soak_help("output_dir"))
def fleet(soak: str, executor: str, hosts: str | None, params_file: str | None, sets: tuple[str, ...],
          host_sets: tuple[str, ...], run_id: str | None, output_dir: str | None) -> None:
    """One soak per host into one run folder, judged as a fleet; exit 0 PASS · 1 FAIL · 2 bad parameters · 3 executor."""

    def go() -> int:
        from soaklib.fleet.soaks import fleet_inputs, run_and_judge

        names = [h.strip() for h in hosts.split(",") if h.strip()] if hosts else None
        overrides = {"soak": soak, **({"output_dir": output_dir} if output_dir else {})}
        base, names, per_host = fleet_inputs(params_file, list(sets), list(host_sets), names, overrides)
        run, paths, verdict = run_and_judge(soak, names, base, executor=executor, run_id=run_id, per_host=per_host,
                                            echo=click.echo)
        for h in run.hosts:
            click.echo(f"  {h.host}: {h.status}" + (f" ({h.reason})" if h.reason else ""))
        click.echo(f"Fleet signoff: {paths['json']}\nMarkdown: {paths['md']}\nVerdict: {verdict}")
        return EXIT_PASS if verdict == "PASS" else EXIT_FAIL

    _run(go)


@main.command("compare")
@click.argument("base", type=click.Path())
@click.argument("new", type=click.Path())
@click.option("--fail-on", default="", metavar="METRIC,...",
              help="Exit 1 when NEW is significantly worse on one of these, e.g. memory_slope_mb_per_h,latency_ms_p95.")
@click.option("--min-effect", "min_effects", multiple=True, metavar="METRIC=VALUE",
              help="The smallest change that counts as worse, in the metric's unit (repeatable).")
@click.option("--out", "out_dir", default="outputs/compare", show_default=True, help="Folder for the JSON, Markdown, PNG.")
def compare_cmd(base: str, new: str, fail_on: str, min_effects: tuple[str, ...], out_dir: str) -> None:
    """Diff two soaks or two multi-provider runs (BASE may be a folder of runs: its latest);
    exit 0 · 1 NEW significantly worse on a --fail-on metric · 2 bad usage."""

    def go() -> int:
        from soaklib.errors import ParameterError
        from soaklib.report.compare import compare, write_comparison
        from soaklib.report.compare_render import console_lines

        effects: dict[str, float] = {}
        for item in min_effects:
            key, sep, value = item.partition("=")
            try:
                effects[key.strip()] = float(value)
            except ValueError:
                sep = ""
            if not sep:
                raise ParameterError(f"--min-effect {item!r}: expected METRIC=NUMBER", key="min_effect", value=item)
        metrics = [m.strip() for m in fail_on.split(",") if m.strip()]
        comparison = compare(base, new, fail_on=metrics, min_effect=effects)
        paths = write_comparison(comparison, out_dir)
        for line in console_lines(comparison):
            click.echo(line)
        click.echo(f"Comparison: {paths['json']} and {paths['md']}" + (f" (figure {paths['png']})" if "png" in paths else ""))
        return comparison.exit_code

    _run(go)


@main.command("report")
@click.argument("run_dir", type=click.Path())
def report_cmd(run_dir: str) -> None:
    """The self-contained HTML page of a run folder (or of an executed notebook), beside its signoff;
    the run's notebook is executed on it first when it has none. Exit 0 · 2 bad usage."""

    def go() -> int:
        from soaklib.report.html import report

        paths = report(run_dir)
        click.echo(f"Executed notebook: {paths['ipynb']}")
        click.echo(f"HTML: {paths['html']}")
        return 0

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


@sim.command("inject")
@click.option("--project-dir", required=True, type=click.Path(file_okay=False), help="The daemon's project folder.")
@click.option("--count", type=int, default=1, show_default=True, help="Draws to append.")
@click.option("--seed", type=int, default=12345, show_default=True, help="The true seed of the PRNG.")
@click.option("--mod", type=int, default=1000, show_default=True, help="Draw values are PRNG output mod this.")
@click.option("--prng", default="java_lcg", show_default=True, help="PRNG of the draws.")
@click.option("--bootstrap", type=int, default=None, help="First write a history of N draws when there is none.")
def sim_inject(project_dir: str, count: int, seed: int, mod: int, prng: str, bootstrap: int | None) -> None:
    """Append synthetic draws to lottery_history.json (atomically), then write new_draw.flag."""

    def go() -> int:
        from soaklib.watcher.draws import bootstrap_history, history_path, inject_draws

        if bootstrap is not None and not history_path(project_dir).exists():
            bootstrap_history(project_dir, bootstrap, seed=seed, mod=mod, prng=prng)
            click.echo(f"bootstrapped {bootstrap} draws in {history_path(project_dir)}")
        new = inject_draws(project_dir, count, seed=seed, mod=mod, prng=prng)
        click.echo(f"injected {len(new)} draw(s): values {', '.join(str(d['value']) for d in new)}")
        return 0

    _run(go)


if __name__ == "__main__":  # pragma: no cover
    main()

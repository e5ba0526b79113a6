"""What a soak samples: the metric sources of a WATCHER soak, composed from its parameters."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import pyarrow as pa

from soaklib.observe.health import HealthProbe
from soaklib.observe.readers import StatCache
from soaklib.observe.sampler import Sampler, schema_of
from soaklib.observe.sources import (
    DiskSource,
    GpuSource,
    HarnessSource,
    HealthSource,
    LogSource,
    ProbeSource,
    ProcessSource,
    Source,
    StateSource,
)
from soaklib.params import SamplingParams
from soaklib.watcher.protocol import PROFILES, Profile
from soaklib.watcher.source import WatcherSource


def soak_sources(project_dir: Path, profile: Profile, sampling: SamplingParams, *, log_paths: Iterable[Path],
                 gpu: object | None, health: HealthProbe | None, probes: dict[str, dict[str, object]],
                 from_end: bool = True, processes: Mapping[str, int] | None = None) -> tuple[list[Source], LogSource]:
    """The sources of a soak sample, in column order, and its log source (for error events);
    ``processes`` (name → pid): each named process's tree in columns of its own."""
    logs_list = [Path(p) for p in log_paths]
    heuristic_regex = profile.heuristic_in_log_regex if not profile.heuristic_in_decisions else None
    logs = LogSource(logs_list, sampling.error_regex, sampling.traceback_regex, heuristic_regex=heuristic_regex,
                     from_end=from_end)
    cache = StatCache()
    sources: list[Source] = [ProcessSource()]
    if processes:
        from soaklib.soak.system import ProcessGroupSource

        sources.append(ProcessGroupSource(processes))
    if gpu is not None:
        sources.append(GpuSource(gpu))
    sources += [
        DiskSource(project_dir, [project_dir / d for d in sampling.watch_dirs] + logs_list, sampling.disk_interval_s),
        logs,  # before the WATCHER source: watcher-v2 counts its fallbacks in the log
        WatcherSource(project_dir, profile, logs=logs, from_end=from_end, cache=cache),
        StateSource(profile.path(project_dir, "state_file"), cache),  # HALTED by itself: the KillSwitch
        HealthSource(health),
        ProbeSource(probes, project_dir, cache),
        HarnessSource(),
    ]
    return sources, logs


def soak_sampler(project_dir: Path, profile: Profile, sampling: SamplingParams, *, run_id: str, t0: float,
                 log_paths: Iterable[Path], gpu: object | None, health: HealthProbe | None,
                 probes: dict[str, dict[str, object]], host: str | None = None,
                 processes: Mapping[str, int] | None = None) -> tuple[Sampler, LogSource]:
    """A sampler of every source a soak watches (see :func:`soak_sources`); ``host`` goes in
    every row (None = this machine's name)."""
    sources, logs = soak_sources(project_dir, profile, sampling, log_paths=log_paths, gpu=gpu, health=health,
                                 probes=probes, processes=processes)
    return Sampler(sources, run_id=run_id, t0=t0, host=host), logs


def sample_schema(probe_names: Iterable[str] = ()) -> pa.Schema:
    """The Arrow schema of a soak's sample rows (with a GPU reader and these JSON probes)."""
    sources, _ = soak_sources(Path("."), PROFILES["watcher-v2"], SamplingParams(), log_paths=(), gpu=object(),
                              health=None, probes={n: {"file": f"{n}.json"} for n in probe_names})
    return schema_of(sources)

"""Soak A, daemon endurance: probes at given offsets, then a timed halt (soak plan section 4).

The harness samples the target; this driver stages a selfplay probe request at each offset
of ``probes_at_s`` (the plan injects one at the 1 h and 2 h marks to exercise the dispatch
path), ends the soak at ``duration_s`` and halts the target by ``target.halt.method``,
measuring the seconds until it exits (or pauses, for a profile whose halt pauses).
The leak, FD, disk and LLM verdicts are computed from the samples by the signoff.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from soaklib.proc.target import HaltResult, Target
from soaklib.soak.context import SoakContext
from soaklib.watcher.protocol import build_request, write_request

PROBE_SOURCE = "soak_test_A_probe"
PROBE_EPISODES = 2


class EnduranceSoak:
    """The soak-A driver (``soak watcher a``)."""

    soak = "a"

    def __init__(self) -> None:
        self.offsets_s: list[float] = []
        self.injected: list[dict[str, Any]] = []

    def setup(self, ctx: SoakContext) -> None:
        self.offsets_s = sorted(float(x) for x in ctx.params.probes_at_s if 0 <= float(x) < ctx.params.duration_s)
        self.injected = []

    def tick(self, ctx: SoakContext, row: dict[str, Any]) -> bool:
        while len(self.injected) < len(self.offsets_s) and ctx.elapsed_s() >= self.offsets_s[len(self.injected)]:
            self._probe(ctx, self.offsets_s[len(self.injected)])
        return ctx.elapsed_s() >= ctx.params.duration_s

    def _probe(self, ctx: SoakContext, offset_s: float) -> None:
        seq = len(self.injected) + 1
        name, body = build_request(ctx.profile, "selfplay", seq, source=PROBE_SOURCE, episodes=PROBE_EPISODES,
                                   extra={"policy_conditioned": True}, prefix="soak_A_probe",
                                   reason="Soak test A — daemon responsiveness probe")
        path = write_request(ctx.project_dir, ctx.profile, name, body)
        probe = {"seq": seq, "offset_s": offset_s, "file": path.name}
        self.injected.append(probe)
        ctx.event("probe_injected", **probe, message=f"probe request {path.name} at {ctx.elapsed_s():.1f} s")
        ctx.echo(f"soak a: probe request {path.name} injected")

    def finish(self, ctx: SoakContext) -> dict[str, Any]:
        out: dict[str, Any] = {"probes_planned": len(self.offsets_s), "probes_injected": len(self.injected),
                               "probes": self.injected}
        if ctx.target.is_running():
            result = halt_target(ctx)
            ctx.record_halt(result)
            out["halt_s"] = result.halt_s
        return out


def halt_target(ctx: SoakContext) -> HaltResult:
    """Halt the target the way ``target.halt`` says and time it.

    A daemon whose profile pauses on the halt file (watcher-v2: state HALTED) is timed to
    the pause seen in its state file, then stopped. Past ``timeout_s`` the tree is
    terminated (TERM, then KILL) and the result says ``forced``.
    """
    h = ctx.params.target.halt
    grace_s = min(5.0, h.timeout_s)
    flag = h.flag or str(ctx.profile.path(ctx.project_dir, "halt_file"))
    ctx.event("halt_requested", method=h.method, timeout_s=h.timeout_s, message=f"halt by {h.method}")
    pauses = h.method != "signal" and not ctx.profile.halt_exits and ctx.profile.state_file is not None
    if not pauses:
        result = ctx.target.halt(h.method, command=h.command, flag=flag, timeout_s=h.timeout_s,
                                 project_dir=ctx.project_dir, grace_s=grace_s)
    else:
        start = time.monotonic()
        result = ctx.target.halt(h.method, command=h.command, flag=flag, timeout_s=h.timeout_s,
                                 project_dir=ctx.project_dir, wait=False)
        paused_at = _wait_paused(ctx.target, ctx.profile.path(ctx.project_dir, "state_file"), start + h.timeout_s)
        if paused_at is not None:
            result.halt_s, result.exited = paused_at - start, True
            ctx.target.stop(timeout_s=h.timeout_s, grace_s=grace_s)
        else:
            ctx.target.terminate_tree(grace_s)
            result.forced = True
            result.error = f"did not pause within {h.timeout_s:g} s of the halt request; process tree terminated"
    if result.forced:
        ctx.event("halt_timeout", **result.to_dict(), message=result.error or "halt timed out")
        ctx.echo(f"soak a: {result.error}")
    else:
        ctx.event("halt_done", **result.to_dict(), message=f"halted in {result.halt_s:.2f} s")
    return result


def _wait_paused(target: Target, state_path: Path | None, deadline: float) -> float | None:
    """When the state file first says HALTED (or the target exits); None past the deadline."""
    while time.monotonic() < deadline:
        if not target.is_running():
            return time.monotonic()
        try:
            if state_path is not None and json.loads(state_path.read_text()).get("state") == "HALTED":
                return time.monotonic()
        except (OSError, ValueError, AttributeError):
            pass
        time.sleep(0.02)
    return None

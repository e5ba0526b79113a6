"""The simulators speak the client's contract: the same states, exit codes and file names.

The simulators are stand-alone programs (they import nothing of the client), so their
constants are written twice; this test is what keeps the two copies equal.
"""
from __future__ import annotations

import re
from pathlib import Path

from soaklib.dispatch import dx_runner as client
from soaklib.params import MultiProviderParams
from soaklib.sim.dx_runner import runner as sim_runner
from soaklib.sim.dx_runner import scenarios as sim_world
from soaklib.sim.watcher import daemon as sim_daemon
from soaklib.sim.watcher import learning as sim_learning
from soaklib.sim.watcher import protocol as sim_protocol
from soaklib.watcher.protocol import ARCHIVE_STATUSES, PROFILES


def test_dx_runner_states_the_client_knows() -> None:
    sim_states = set(sim_runner.CHECK_EXIT)
    terminal = client.TERMINAL_STATES - {"start_failed"}  # a reason, never a check state, in the simulator
    assert terminal <= sim_states, f"terminal states the simulator never reports: {terminal - sim_states}"
    # every state the simulator reports is either terminal for the client or a live state
    live = {"launching", "slow_start", "waiting_first_output", "healthy", "awaiting_finalize"}
    assert sim_states - client.TERMINAL_STATES == live


def test_dx_runner_start_exit_codes_are_the_clients() -> None:
    source = Path(sim_runner.__file__).read_text(encoding="utf-8")
    start = source[source.index("def cmd_start"):source.index("def classify")]
    codes = {int(c) for c in re.findall(r"return (\d+)", start)} | {21}  # 21: a failed preflight, passed through
    assert codes <= set(client.START_EXITS), f"start exits the client cannot name: {codes - set(client.START_EXITS)}"


def test_dx_runner_files_and_providers() -> None:
    assert sim_world.SimConfig().state_dir == client.DEFAULT_OUTCOME_DIR
    assert client.SIMULATOR_ARGV[1:] == ["-m", "soaklib.sim.dx_runner"]
    assert list(sim_world.PROVIDERS) == MultiProviderParams().providers
    assert set(sim_world.OUTCOME_KEYS) >= {"exit_code", "state", "reason_code"}


def test_watcher_profiles_and_file_names() -> None:
    assert set(sim_protocol.PROFILES) == set(PROFILES)
    assert tuple(sim_protocol.STATUSES) == tuple(ARCHIVE_STATUSES)
    for name, profile in PROFILES.items():
        assert profile.requests_dir == sim_protocol.REQUESTS_DIR, name
        assert profile.archive_dir == f"{sim_protocol.REQUESTS_DIR}/archive", name
        assert profile.decision_log == sim_protocol.DECISIONS_FILE, name
        assert profile.history_file == sim_learning.HISTORY_FILE, name
        assert profile.new_draw_flag == sim_learning.FLAG_FILE, name
        assert profile.telemetry_file == str(sim_learning.TELEMETRY_FILE), name
    v2, plan = PROFILES["watcher-v2"], PROFILES["plan"]
    assert set(v2.request_types.values()) | set(v2.routing) == set(sim_protocol.V2_TYPES)
    assert set(plan.request_types.values()) == set(sim_protocol.PLAN_TYPES)
    assert v2.halt_file == sim_daemon.V2_HALT_FILE and plan.halt_file == sim_daemon.PLAN_HALT_FLAG
    assert v2.state_file == sim_daemon.STATE_FILE
    assert v2.request_record_prefix == "ch13_request_"
    source = Path(sim_protocol.__file__).read_text(encoding="utf-8")
    assert 'f"ch13_request_{req.request_type}"' in source


def test_orchestrator_files_and_outcomes() -> None:
    from soaklib.sim import orchestrator as sim_orch
    from soaklib.sim.orchestrator import orchestrator as sim_orch_module
    from soaklib.sim.watcher import approvals as sim_approvals
    from soaklib.watcher import orchestrator as client_orch

    files = client_orch.OrchestratorFiles()
    assert files.cycle_history == sim_orch.CYCLE_HISTORY and files.halt_file == sim_orch.CHAPTER13_HALT
    assert files.approval_file == sim_orch.APPROVAL_FILE == sim_approvals.APPROVAL_FILE
    assert files.approval_archive_dir == str(sim_approvals.ARCHIVE_DIR)
    assert client_orch.APPROVAL_ARCHIVE_PREFIX == sim_approvals.ARCHIVE_PREFIX
    assert tuple(client_orch.OUTCOMES) == tuple(sim_orch.OUTCOMES)
    assert files.new_draw_flag == sim_orch_module.NEW_DRAW_FLAG == sim_learning.FLAG_FILE
    assert sim_orch.GLOBAL_HALT == sim_daemon.V2_HALT_FILE

"""The known-seed PRNG and the synthetic draw injector."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from soaklib.errors import ParameterError, SoakError
from soaklib.prng import PRNGS, digits, draw_values, java_lcg
from soaklib.watcher.draws import (
    FLAG_FILE,
    HISTORY_FILE,
    bootstrap_history,
    history_length,
    inject_draws,
    read_history,
)


def test_java_lcg_known_values() -> None:
    assert draw_values(12345, 8) == [875, 331, 694, 737, 468, 925, 202, 265]
    assert PRNGS["java_lcg"] is java_lcg
    # the raw output of the first step, computed by hand from the definition
    state = (25214903917 * 12345 + 11) % 2**48
    assert java_lcg(12345, 1) == [(state >> 16) & 0xFFFFFFFF]


def test_java_lcg_seed_is_masked_to_48_bits() -> None:
    assert java_lcg(12345 + 2**48, 5) == java_lcg(12345, 5)


@pytest.mark.parametrize("start", [1, 2, 7, 100, 1023, 4999])
def test_jump_ahead_matches_stepping(start: int) -> None:
    full = java_lcg(99, start + 4)
    assert java_lcg(99, 4, start=start) == full[start:]


def test_jump_ahead_far_is_cheap() -> None:
    # O(log n): millions of positions ahead in well under the cost of stepping there
    far = java_lcg(12345, 2, start=5_000_000)
    assert len(far) == 2 and all(0 <= v < 2**32 for v in far)
    assert draw_values(12345, 1, start=5_000_001) == [far[1] % 1000]


def test_digits() -> None:
    assert digits(875) == [8, 7, 5]
    assert digits(7) == [0, 0, 7]
    assert digits(40) == [0, 4, 0]


def test_bootstrap_schema_and_dates(tmp_path: Path) -> None:
    assert history_length(tmp_path) == 0
    assert bootstrap_history(tmp_path, 5, seed=12345) == 5
    draws = read_history(tmp_path)
    assert [d["value"] for d in draws] == [875, 331, 694, 737, 468]
    assert draws[0] == {
        "date": "2024-01-01",
        "session": "midday",
        "draw": [8, 7, 5],
        "value": 875,
        "draw_source": "synthetic_bootstrap",
        "true_seed": 12345,
    }
    assert [(d["date"], d["session"]) for d in draws[1:4]] == [
        ("2024-01-01", "evening"),
        ("2024-01-02", "midday"),
        ("2024-01-02", "evening"),
    ]


def test_bootstrap_refuses_existing_history(tmp_path: Path) -> None:
    bootstrap_history(tmp_path, 3, seed=1)
    with pytest.raises(ParameterError, match="already exists"):
        bootstrap_history(tmp_path, 3, seed=1)
    assert history_length(tmp_path) == 3


def test_inject_continues_at_history_length(tmp_path: Path) -> None:
    bootstrap_history(tmp_path, 5000, seed=12345)
    new = inject_draws(tmp_path, seed=12345)
    assert new[0]["value"] == draw_values(12345, 1, start=5000)[0]
    assert new[0]["draw_source"] == "synthetic_injection"
    assert (new[0]["date"], new[0]["session"]) == ("2030-11-05", "midday")  # 2024-01-01 + 2500 days
    more = inject_draws(tmp_path, 3, seed=12345)
    assert [d["value"] for d in more] == draw_values(12345, 3, start=5001)
    assert history_length(tmp_path) == 5004
    # the whole history is one continuous sequence: nothing replayed from position 0
    assert [d["value"] for d in read_history(tmp_path)] == draw_values(12345, 5004)
    flag = json.loads((tmp_path / FLAG_FILE).read_text())
    assert flag["history_length"] == 5004 and flag["count"] == 3


def test_inject_into_empty_project_starts_at_zero(tmp_path: Path) -> None:
    new = inject_draws(tmp_path, 2, seed=12345)
    assert [d["value"] for d in new] == [875, 331]


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="prng"):
        inject_draws(tmp_path, seed=1, prng="mt19937")
    with pytest.raises(ParameterError, match="count"):
        inject_draws(tmp_path, 0, seed=1)
    with pytest.raises(ParameterError, match="does not exist"):
        inject_draws(tmp_path / "missing", seed=1)


@pytest.mark.parametrize("content", ["{\"draws\": [1, 2", "[1, 2, 3]", "{\"other\": 1}"])
def test_corrupt_history_is_a_clear_error(tmp_path: Path, content: str) -> None:
    (tmp_path / HISTORY_FILE).write_text(content)
    with pytest.raises(SoakError) as err:
        inject_draws(tmp_path, seed=1)
    assert HISTORY_FILE in str(err.value) and "backup" in str(err.value)
    with pytest.raises(SoakError):
        history_length(tmp_path)
    assert (tmp_path / HISTORY_FILE).read_text() == content  # never overwritten
    assert not (tmp_path / FLAG_FILE).exists()


def test_reader_never_sees_partial_history_and_flag_follows_history(tmp_path: Path) -> None:
    bootstrap_history(tmp_path, 200, seed=12345)
    stop = threading.Event()
    problems: list[str] = []
    reads = [0]

    def reader() -> None:
        while not stop.is_set():
            flag_len = None
            try:
                flag_len = json.loads((tmp_path / FLAG_FILE).read_text())["history_length"]
            except FileNotFoundError:
                pass
            except (ValueError, KeyError) as exc:  # the flag is written atomically too
                problems.append(f"flag: {exc!r}")
            try:
                draws = json.loads((tmp_path / HISTORY_FILE).read_text())["draws"]
            except (ValueError, KeyError) as exc:
                problems.append(f"history: {exc!r}")
                continue
            reads[0] += 1
            if flag_len is not None and len(draws) < flag_len:
                problems.append(f"flag says {flag_len} draws, history has {len(draws)}")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(200):
            inject_draws(tmp_path, seed=12345)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not problems, problems[:5]
    assert reads[0] > 10
    assert history_length(tmp_path) == 400
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in (HISTORY_FILE, FLAG_FILE)]
    assert leftovers == []

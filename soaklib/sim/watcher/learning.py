"""What the reference daemon learns from the draw history: a real convergence curve.

Each autonomous cycle widens a search over seeds of the known PRNG (``[0, width_start *
2**k)`` at cycle ``k``, resumed where the last cycle stopped, bounded per cycle so a cycle
stays in milliseconds) for one that reproduces the first three draws of the history.
Every newly ingested draw is then predicted with the best seed so far and scored: the
seed is fitted on the first three draws only, so a right prediction of draw 5,000 is
out-of-sample evidence. ``hit_rate`` is the fraction of the last five predictions that
were right: 0 while the seed is unknown, rising to 1.0 once it is found.
"""
from __future__ import annotations

import json
import logging
from collections import deque
from pathlib import Path
from typing import Any

from soaklib.prng import LCG_INCREMENT, LCG_MASK, LCG_MULTIPLIER, draw_values
from soaklib.sim.watcher.protocol import atomic_write_json, utc_iso

log = logging.getLogger("soaklib.sim.watcher")

HISTORY_FILE = "lottery_history.json"
FLAG_FILE = "new_draw.flag"
TELEMETRY_FILE = Path("telemetry") / "learning_health_latest.json"
POLICY_DIR = "policy_history"
FIT_DRAWS = 3  # candidates are checked on the first three values only
CONFIRM_DRAWS = 8  # a candidate that fits is confirmed on a few more before it is trusted
HIT_WINDOW = 5
MAX_SCAN_PER_CYCLE = 1 << 17  # seeds examined per cycle at most (a few tens of ms)


def read_history_values(project_dir: Path) -> list[int] | None:
    """The ``value`` of every draw in the history; None when missing or unreadable."""
    path = project_dir / HISTORY_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [int(d["value"]) for d in data["draws"]]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.error("cannot read draw history %s: %s", path, exc)
        return None


def scan_seeds(targets: list[int], lo: int, hi: int, mod: int) -> int | None:
    """First seed in ``[lo, hi)`` whose java_lcg values (mod ``mod``) start with ``targets``."""
    a, c, mask = LCG_MULTIPLIER, LCG_INCREMENT, LCG_MASK
    t0 = targets[0]
    for seed in range(lo, hi):
        state = (a * seed + c) & mask
        if ((state >> 16) & 0xFFFFFFFF) % mod != t0:
            continue
        ok = True
        for t in targets[1:]:
            state = (a * state + c) & mask
            if ((state >> 16) & 0xFFFFFFFF) % mod != t:
                ok = False
                break
        if ok:
            return seed
    return None


class Learner:
    """Seed search, predictions and the artifacts of each autonomous cycle."""

    def __init__(self, project_dir: Path, search_width_start: int = 2048, mod: int = 1000,
                 saved: dict[str, Any] | None = None) -> None:
        self.project_dir = project_dir
        self.width_start = max(1, int(search_width_start))
        self.mod = mod
        saved = saved or {}
        self.cycles = int(saved.get("cycles", 0))
        self.total_models = int(saved.get("total_models", 0))
        self.draws_seen: int | None = saved.get("draws_seen")
        self.best_seed: int | None = saved.get("best_seed")
        self.searched_to = int(saved.get("searched_to", 0))
        self.hits: deque[bool] = deque((bool(h) for h in saved.get("hits", [])), maxlen=HIT_WINDOW)
        self.last_ingested = 0
        self._fit: list[int] = list(saved.get("fit", []))

    def state(self) -> dict[str, Any]:
        """What survives a restart (saved in ``daemon_state.json``)."""
        return {"cycles": self.cycles, "total_models": self.total_models, "draws_seen": self.draws_seen,
                "best_seed": self.best_seed, "searched_to": self.searched_to, "hits": list(self.hits),
                "fit": self._fit}

    @property
    def hit_rate(self) -> float:
        return sum(self.hits) / len(self.hits) if self.hits else 0.0

    @property
    def search_width(self) -> int:
        factor: int = 2 ** max(0, self.cycles - 1)
        return self.width_start * factor

    def start(self) -> None:
        """Note the history length at daemon start: only later draws count as ingested."""
        if self.draws_seen is None:
            values = read_history_values(self.project_dir)
            self.draws_seen = len(values) if values else 0

    def take_flag(self) -> bool:
        """True (and the flag removed) when ``new_draw.flag`` signals new draws."""
        try:
            (self.project_dir / FLAG_FILE).unlink()
        except FileNotFoundError:
            return False
        return True

    def ingest(self) -> int:
        """One cycle of learning: read the history, widen the search, score new draws."""
        values = read_history_values(self.project_dir) or []
        seen = min(self.draws_seen or 0, len(values))
        new_positions = range(seen, len(values))
        self.last_ingested = len(new_positions)
        self.cycles += 1
        self._search(values)
        for pos in new_positions:
            self.hits.append(self._predict(pos, values) == values[pos])
        self.draws_seen = len(values)
        return self.last_ingested

    def _search(self, values: list[int]) -> None:
        if len(values) < FIT_DRAWS:
            return
        fit = values[:FIT_DRAWS]
        if fit != self._fit:  # a different history: start over
            self._fit, self.best_seed, self.searched_to = fit, None, 0
        if self.best_seed is not None:
            return
        hi = min(self.search_width, self.searched_to + MAX_SCAN_PER_CYCLE)
        lo = self.searched_to
        while lo < hi:
            seed = scan_seeds(fit, lo, hi, self.mod)
            if seed is None:
                lo = hi
                break
            confirm = values[:CONFIRM_DRAWS]
            if draw_values(seed, len(confirm), mod=self.mod) == confirm:
                self.best_seed = seed
                log.info("learning: seed %d reproduces the first %d draws", seed, len(confirm))
                lo = seed + 1
                break
            lo = seed + 1
        self.searched_to = lo

    def _predict(self, pos: int, values: list[int]) -> int:
        if self.best_seed is not None:
            return draw_values(self.best_seed, 1, start=pos, mod=self.mod)[0]
        return values[pos - 1] if pos > 0 else 0  # naive: the previous draw again

    def record(self, models_added: int) -> dict[str, Any]:
        """Write this cycle's policy candidate and the telemetry (both atomically)."""
        self.total_models += models_added
        now = utc_iso()
        next_prediction = None
        if self.best_seed is not None and self.draws_seen is not None:
            next_prediction = draw_values(self.best_seed, 1, start=self.draws_seen, mod=self.mod)[0]
        candidate = {"cycle": self.cycles, "timestamp": now, "best_seed": self.best_seed, "hit_rate": self.hit_rate,
                     "search_width": self.search_width, "draws_seen": self.draws_seen, "prng": "java_lcg",
                     "mod": self.mod, "next_prediction": next_prediction}
        atomic_write_json(self.project_dir / POLICY_DIR / f"candidate_{self.cycles:05d}.json", candidate)
        telemetry = {"timestamp": now, "total_models": self.total_models, "hit_rate": self.hit_rate,
                     "best_seed": self.best_seed, "cycles": self.cycles, "draws_seen": self.draws_seen,
                     "draws_ingested": self.last_ingested, "predictions": len(self.hits),
                     "search_width": self.search_width, "next_prediction": next_prediction}
        atomic_write_json(self.project_dir / TELEMETRY_FILE, telemetry)
        return telemetry

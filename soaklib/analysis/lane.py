"""Confidence in a multi-provider lane's gate: per-provider success with its Wilson bound, pass^k, rounds needed. No I/O.

The lane's pass rule stays the seed's (every planned round clean); these figures say how
much a clean lane shows:

- **Wilson 95% lower bound** of the success rate k/n (the score interval, Wilson 1927): 12
  clean jobs out of 12 show a per-job success of at least ``12 / (12 + z²)`` = 0.758.
- **pass^k** (the chance that *every* one of k attempts of a prompt passes; Yao et al.,
  τ-bench 2024): for a prompt run n times with c successes the unbiased estimate is
  ``C(c, k) / C(n, k)``, averaged over prompts; k defaults to the number of rounds (every
  round's attempt of the prompt passed). A provider that fails one prompt in one round
  of two has pass^2 below its pass rate.
- **Rounds needed**: how many more clean rounds (each ``jobs_per_round`` jobs, all passing)
  bring the Wilson lower bound to ``target`` (e.g. ≥ 95% per-job success at 95%
  confidence takes 73 clean jobs from none: ``n ≥ target·z² / (1 − target)``).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from scipy import stats

from soaklib.errors import ParameterError

MAX_ROUNDS_NEEDED = 10_000  # beyond this the answer reads "more than" (a failing provider never gets there)


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ParameterError(f"confidence = {confidence!r}: expected a fraction between 0 and 1", key="confidence")
    return float(stats.norm.ppf(1 - (1 - confidence) / 2))


def wilson_bounds(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of k successes in n trials (NaN for n = 0)."""
    z = _z(confidence)
    if n <= 0:
        return math.nan, math.nan
    if not 0 <= k <= n:
        raise ParameterError(f"k = {k} successes of n = {n}: expected 0 <= k <= n", key="k")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def pass_hat_k(attempts: Iterable[tuple[int, int]], k: int) -> float:
    """pass^k over prompts given as (successes c, attempts n): mean of C(c, k) / C(n, k); NaN when no prompt has k attempts."""
    if k < 1:
        raise ParameterError(f"k = {k!r}: expected an integer >= 1", key="k")
    vals = [math.comb(c, k) / math.comb(n, k) for c, n in attempts if n >= k]
    return sum(vals) / len(vals) if vals else math.nan


def clean_jobs_needed(k: int, n: int, target: float, confidence: float = 0.95) -> int | None:
    """Further jobs, all passing, until the Wilson lower bound of (k + m)/(n + m) reaches ``target`` (None: never)."""
    if not 0 < target < 1:
        raise ParameterError(f"target = {target!r}: expected a fraction between 0 and 1", key="target")
    z = _z(confidence)
    if n > 0 and wilson_bounds(k, n, confidence)[0] >= target:
        return 0
    # all-pass from scratch needs m ≥ target·z²/(1 − target); a search from there covers past failures
    m = max(1, math.floor(target * z * z / (1 - target)) - n)
    limit = MAX_ROUNDS_NEEDED * max(1, n + m)
    while m <= limit:
        if wilson_bounds(k + m, n + m, confidence)[0] >= target:
            return m
        m = m + 1 if m < 1000 else int(m * 1.01) + 1
    return None


@dataclass(frozen=True)
class ProviderConfidence:
    """What one provider's jobs show: success with Wilson bounds, pass^k, clean rounds still needed."""

    provider: str
    jobs: int
    passed: int
    success_rate: float | None
    wilson_low: float | None
    wilson_high: float | None
    prompts: int
    k: int
    pass_k: float | None
    target: float
    confidence: float
    jobs_per_round: int
    jobs_needed: int | None  # further clean jobs until wilson_low >= target (None: out of reach)
    rounds_needed: int | None  # the same in rounds of jobs_per_round

    def to_json(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def provider_confidence(
    provider: str, jobs: Sequence[tuple[str, bool]], *, jobs_per_round: int, k: int | None = None,
    target: float = 0.95, confidence: float = 0.95,
) -> ProviderConfidence:
    """The figures of one provider from its final job outcomes ``(prompt_id, success)`` over all rounds.

    ``k`` defaults to the most attempts any prompt had (the rounds it ran in)."""
    n = len(jobs)
    passed = sum(bool(s) for _, s in jobs)
    per_prompt: dict[str, list[int]] = {}
    for prompt, ok in jobs:
        c = per_prompt.setdefault(prompt, [0, 0])
        c[0] += int(bool(ok))
        c[1] += 1
    kk = k if k is not None else max((a for _, a in per_prompt.values()), default=1)
    low, high = wilson_bounds(passed, n, confidence) if n else (math.nan, math.nan)
    need = clean_jobs_needed(passed, n, target, confidence)
    per_round = max(1, jobs_per_round)
    return ProviderConfidence(
        provider=provider, jobs=n, passed=passed, success_rate=passed / n if n else None,
        wilson_low=low if n else None, wilson_high=high if n else None, prompts=len(per_prompt), k=kk,
        pass_k=pass_hat_k(((c, a) for c, a in per_prompt.values()), kk) if per_prompt else None,
        target=target, confidence=confidence, jobs_per_round=per_round, jobs_needed=need,
        rounds_needed=None if need is None else math.ceil(need / per_round),
    )


def lane_confidence(
    jobs: Iterable[tuple[str, str, bool]], *, jobs_per_round: int, target: float = 0.95, confidence: float = 0.95,
) -> list[ProviderConfidence]:
    """One :class:`ProviderConfidence` per provider (in first-seen order) from ``(provider, prompt_id, success)``."""
    by: dict[str, list[tuple[str, bool]]] = {}
    for provider, prompt, ok in jobs:
        by.setdefault(provider, []).append((prompt, ok))
    return [provider_confidence(p, js, jobs_per_round=jobs_per_round, target=target, confidence=confidence)
            for p, js in by.items()]


def confidence_rows(items: Sequence[ProviderConfidence]) -> list[list[str]]:
    """Markdown cells: provider, passed/jobs, Wilson bound, pass^k, clean rounds needed."""
    def pct(x: float | None) -> str:
        return "–" if x is None or not math.isfinite(x) else f"{100 * x:.1f}%"

    rows = []
    for c in items:
        need = ("reached" if c.rounds_needed == 0 else
                f"{c.rounds_needed} ({c.jobs_needed} jobs)" if c.rounds_needed is not None else "out of reach")
        rows.append([c.provider, f"{c.passed}/{c.jobs}", pct(c.success_rate),
                     f"{pct(c.wilson_low)} – {pct(c.wilson_high)}", f"{pct(c.pass_k)} (k = {c.k})", need])
    return rows


CONFIDENCE_HEADERS = ("provider", "passed", "success", "Wilson 95% interval", "pass^k", "clean rounds needed")

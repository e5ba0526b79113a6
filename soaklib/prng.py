"""Known pseudo-random generators for synthetic draws (DESIGN.md section 6).

A soak injects draws from a PRNG with a known seed so that a learning daemon has something
real to converge to. ``java_lcg`` is the 48-bit linear congruential generator of
``java.util.Random`` without the seed scramble: state ``seed & (2**48 - 1)``, step
``state = (25214903917 * state + 11) mod 2**48``, output ``(state >> 16) & 0xFFFFFFFF``.
Output ``i`` is the one after ``i + 1`` steps, and ``start`` jumps ahead in O(log start)
steps, so continuing a 5,000-draw history costs the same as starting one.
"""
from __future__ import annotations

from collections.abc import Callable

LCG_MULTIPLIER = 25214903917
LCG_INCREMENT = 11
LCG_MASK = (1 << 48) - 1


def _lcg_jump(steps: int) -> tuple[int, int]:
    """Coefficients ``(a, c)`` with ``state_after_steps = (a * state + c) mod 2**48``.

    Composes the affine step with itself by squaring (the classic LCG jump-ahead).
    """
    acc_a, acc_c = 1, 0
    cur_a, cur_c = LCG_MULTIPLIER, LCG_INCREMENT
    while steps > 0:
        if steps & 1:
            acc_a, acc_c = (acc_a * cur_a) & LCG_MASK, (acc_c * cur_a + cur_c) & LCG_MASK
        cur_a, cur_c = (cur_a * cur_a) & LCG_MASK, (cur_c * cur_a + cur_c) & LCG_MASK
        steps >>= 1
    return acc_a, acc_c


def java_lcg(seed: int, n: int, start: int = 0) -> list[int]:
    """Raw 32-bit outputs ``start .. start + n - 1`` of the unscrambled Java LCG."""
    if n < 0 or start < 0:
        raise ValueError(f"n and start must be >= 0 (got n={n}, start={start})")
    state = seed & LCG_MASK
    if start:
        a, c = _lcg_jump(start)
        state = (a * state + c) & LCG_MASK
    out: list[int] = []
    append = out.append
    for _ in range(n):
        state = (LCG_MULTIPLIER * state + LCG_INCREMENT) & LCG_MASK
        append((state >> 16) & 0xFFFFFFFF)
    return out


PRNGS: dict[str, Callable[..., list[int]]] = {"java_lcg": java_lcg}


def get_prng(name: str) -> Callable[..., list[int]]:
    """The generator registered as ``name``; ValueError naming the known ones otherwise."""
    try:
        return PRNGS[name]
    except KeyError:
        raise ValueError(f"unknown PRNG {name!r}: known are {', '.join(sorted(PRNGS))}") from None


def draw_values(seed: int, n: int, start: int = 0, mod: int = 1000, prng: str = "java_lcg") -> list[int]:
    """Draw values ``start .. start + n - 1``: each raw output ``mod`` ``mod``."""
    if mod < 1:
        raise ValueError(f"mod must be >= 1 (got {mod})")
    return [v % mod for v in get_prng(prng)(seed, n, start)]


def digits(value: int) -> list[int]:
    """The three digits of a pick-3 value: ``[(v//100)%10, (v//10)%10, v%10]``."""
    return [(value // 100) % 10, (value // 10) % 10, value % 10]

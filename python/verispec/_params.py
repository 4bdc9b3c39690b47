"""Entry checks of the sampling and length parameters, shared by `generate`, `verify` and the CLI.

Every check takes a plain Python value (or None) and returns the normalised one or raises a
ValueError/TypeError that names the parameter and the value. They never touch a tensor, so calling them
costs no host synchronisation. Python's own coercions are the bugs these prevent: ``int(1.5) == 1``,
``nan < 0`` is False, ``torch.full(..., 2**63)`` overflows.
"""

from __future__ import annotations

import math
import operator
from numbers import Real
from typing import Optional

__all__ = [
    "SEED_MAX",
    "check_int",
    "check_max_new_tokens",
    "check_temperature",
    "check_top_k",
    "check_top_p",
    "check_typical",
    "check_seed",
    "seed_to_int64",
]

SEED_MAX = 2**64 - 1


def _where(where: str) -> str:
    return f"{where}: " if where else ""


def check_int(value, name: str, *, low: Optional[int] = None, high: Optional[int] = None, where: str = "") -> int:
    """``value`` as an int (a Python or NumPy integer; not a bool, not a float even if integral-valued:
    ``1.5`` must not become 1 and ``2.0`` hides a unit mistake), within ``[low, high]``."""
    if isinstance(value, bool) or value is None:
        raise TypeError(f"{_where(where)}{name} must be an integer, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{_where(where)}{name} must be an integer, got {value!r} ({type(value).__name__})") from None
    if (low is not None and v < low) or (high is not None and v > high):
        if high is None:
            bound = f">= {low}"
        elif low is None:
            bound = f"<= {high}"
        else:
            bound = f"in {low}..{high}"
        raise ValueError(f"{_where(where)}{name} must be {bound}, got {v}")
    return v


def _real(value, name: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{_where(where)}{name} must be a real number, got {value!r} ({type(value).__name__})")
    return float(value)


def check_max_new_tokens(value, where: str = "") -> int:
    return check_int(value, "max_new_tokens", low=1, where=where)


def check_temperature(value, where: str = "") -> float:
    """Finite and >= 0 (0 = greedy)."""
    t = _real(value, "temperature", where)
    if not math.isfinite(t) or t < 0:
        raise ValueError(f"{_where(where)}temperature must be finite and >= 0 (0 = greedy), got {value!r}")
    return t


def check_top_k(value, where: str = "") -> Optional[int]:
    """None (off) or an integer >= 1."""
    if value is None:
        return None
    return check_int(value, "top_k", low=1, where=where)


def check_top_p(value, where: str = "") -> Optional[float]:
    """None (off) or a number in (0, 1]."""
    if value is None:
        return None
    p = _real(value, "top_p", where)
    if not (0.0 < p <= 1.0):  # also false for NaN
        raise ValueError(f"{_where(where)}top_p must be in (0, 1] (None = off), got {value!r}")
    return p


def check_typical(epsilon, delta, where: str = "") -> tuple[float, float]:
    """Medusa's typical acceptance: ``epsilon`` in [0, 1] (a probability bar), ``delta`` finite and >= 0."""
    e = _real(epsilon, "typical_epsilon", where)
    d = _real(delta, "typical_delta", where)
    if not (0.0 <= e <= 1.0):
        raise ValueError(f"{_where(where)}typical_epsilon must be in [0, 1], got {epsilon!r}")
    if not (math.isfinite(d) and d >= 0.0):
        raise ValueError(f"{_where(where)}typical_delta must be finite and >= 0, got {delta!r}")
    return e, d


def check_seed(value, name: str = "seed", where: str = "") -> Optional[int]:
    """None or an integer in 0..2^64-1 (the documented 64-bit seed range)."""
    if value is None:
        return None
    return check_int(value, name, low=0, high=SEED_MAX, where=where)


def seed_to_int64(seed: int) -> int:
    """The int64 with the same 64 bits as ``seed`` in 0..2^64-1 (the Philox key torch can hold)."""
    return seed - 2**64 if seed >= 2**63 else seed

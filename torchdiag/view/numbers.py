"""Small numeric helpers every layer above the record shares: finiteness, quantiles, rounding,
and plain JSON data (no NaN)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeGuard

import msgspec


def finite(x: object) -> TypeGuard[float]:
    """A real, finite number (booleans are not numbers here)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def rounded(x: float | None, digits: int = 3) -> float | None:
    """``x`` rounded for output, ``None`` when missing or not finite."""
    return round(x, digits) if x is not None and finite(x) else None


def weighted_quantile(values: Sequence[float], weights: Sequence[float], q: float) -> float | None:
    """Nearest-rank quantile where ``values[i]`` counts ``weights[i]`` times (merged step rows)."""
    pairs = sorted((v, w) for v, w in zip(values, weights, strict=False) if finite(v) and w > 0)
    if not pairs:
        return None
    target = q * sum(w for _, w in pairs)
    seen = 0.0
    for value, weight in pairs:
        seen += weight
        if seen >= target:
            return value
    return pairs[-1][0]


def to_jsonable(value: Any) -> Any:
    """Plain JSON data: NaN and infinities become ``None`` (JSON has no spelling for them)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return to_jsonable(msgspec.to_builtins(value))

"""Per-step numbers the HTML report charts and tabulates: walls, input waits, outliers.

Live step series win over trace steps (they cover the whole run); a record built from a trace
falls back to the trace's profiled steps. Merged live rows count as their mean step here: the
charts show the rows as recorded.
"""

from __future__ import annotations

import math
from typing import Any

from torchdiag.analyze.stability import outlier_limit
from torchdiag.record import RunRecord
from torchdiag.view.headline import step_rows
from torchdiag.view.numbers import finite, weighted_quantile
from torchdiag.view.step_model import primary_summary

# Outliers listed by step number; the rest are counted.
MAX_OUTLIERS_LISTED = 12


def step_numbers(record: RunRecord) -> list[int]:
    """The first step number of every row :func:`step_walls` returns."""
    s = record.steps
    if s.wall_ms:
        n = len(s.wall_ms)
        return list(s.first_step) if len(s.first_step) == n else list(range(n))
    summary = primary_summary(record)
    return [st.number for st in summary.steps] if summary is not None else []


def step_walls(record: RunRecord) -> list[float]:
    """Wall time of each step row in ms (live rows, else the trace's steps)."""
    return [w if finite(w) else math.nan for w in step_rows(record)[0]]


def step_waits(record: RunRecord) -> list[float]:
    """Input (DataLoader) wait of each step row in ms."""
    s = record.steps
    if s.wall_ms:
        return [w if finite(w) else 0.0 for w in s.input_wait_ms]
    summary = primary_summary(record)
    if summary is None:
        return []
    # The host's whole time in DataLoader.__next__: what the step waited for input, whether or
    # not the GPU had other work meanwhile.
    return [max(st.dataloader_ms, st.breakdown.input_wait) for st in summary.steps]


def wall_stats(record: RunRecord) -> dict[str, Any] | None:
    """p50/p95/max/mean step time, the outlier threshold and the outlier steps; ``None`` when
    the record has no step timings.

    Outliers are judged as the step-variance rule judges them
    (:func:`torchdiag.analyze.stability.outlier_limit`), so the chart marks the steps the
    finding talks about.
    """
    walls, weights, _ = step_rows(record)
    numbers = step_numbers(record)
    pairs = [(w, n) for w, n in zip(walls, numbers, strict=False) if finite(w)]
    if not pairs:
        return None
    ordered = sorted(w for w, _ in pairs)
    fence = outlier_limit(ordered)
    outliers = sorted((n for w, n in pairs if w > fence))
    slowest = sorted(pairs, key=lambda p: (-p[0], p[1]))[:MAX_OUTLIERS_LISTED]
    return {
        "rows": len(pairs),
        # As the headline's: merged rows weigh the steps they hold, so the cards agree.
        "p50": weighted_quantile(walls, weights, 0.5),
        "p95": weighted_quantile(walls, weights, 0.95),
        "max": ordered[-1],
        "mean": sum(ordered) / len(ordered),
        "outlier_ms": fence,
        "outliers": outliers,
        "slowest": [(n, w) for w, n in slowest if w > fence],
    }

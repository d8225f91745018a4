"""Per-step numbers the HTML report charts and tabulates: walls, input waits, outliers.

Live step series win over trace steps (they cover the whole run); a record built from a trace
falls back to the trace's profiled steps. Merged live rows count as their mean step here: the
charts show the rows as recorded.
"""

from __future__ import annotations

import math
from typing import Any

from torchdiag.analyze.stability import outlier_limit
from torchdiag.record import RunRecord, TraceSummary
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
    return trace_step_numbers(record, summary) if summary is not None else []


def trace_step_numbers(record: RunRecord, summary: TraceSummary) -> list[int]:
    """The number of each of ``summary.steps`` in the record's own step numbering.

    A live capture numbers steps from 0 at the run's first step, and its profiler window starts
    at ``profiler.first_step``; torch.profiler numbers the same steps ``ProfilerStep#1``, ``#2``,
    ... within its window. An imported trace's own numbers are the record's.
    """
    numbers = [st.number for st in summary.steps]
    window = record.profiler
    if window is None or window.summary is not summary or not numbers:
        return numbers
    first = min(numbers)
    return [window.first_step + n - first for n in numbers]


def profiled_step_range(record: RunRecord) -> tuple[int, int] | None:
    """(first, last) number of the steps torch.profiler recorded — the steps the breakdown
    shows, the step chart shades and the page names — or ``None`` without a profiled step.

    The warm-up step before a live window also ran under the profiler but was discarded: it is
    not one of them (:func:`profiler_warmup_steps`).
    """
    window = record.profiler
    if window is not None and window.steps > 0:
        return window.first_step, window.first_step + window.steps - 1
    summary = primary_summary(record)
    if summary is not None and summary.steps:
        numbers = trace_step_numbers(record, summary)
        return min(numbers), max(numbers)
    # No window or trace to say which: the rows the record marks as profiled.
    s = record.steps
    n = len(s.first_step)
    counts = s.steps if len(s.steps) == n else [1] * n
    pairs = zip(s.first_step, counts, s.profiled, strict=False)
    rows = [(f, f + max(c, 1) - 1) for f, c, p in pairs if p]
    return (min(a for a, _ in rows), max(b for _, b in rows)) if rows else None


def profiler_warmup_steps(record: RunRecord) -> list[int]:
    """Steps that ran under torch.profiler before its recorded ones (warm-up, discarded)."""
    span = profiled_step_range(record)
    s = record.steps
    if span is None or len(s.first_step) != len(s.profiled):
        return []
    return [n for n, p in zip(s.first_step, s.profiled, strict=True) if p and n < span[0]]


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

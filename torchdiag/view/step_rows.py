"""The step rows of a run: every per-step number the outputs chart and tabulate, and the
outlier test the step-variance rule and the step chart share.

Live step series win over trace steps (they cover the whole run); a record built from a trace
falls back to the trace's profiled steps. A merged live row weighs the steps it holds in the
quantiles, and counts as its mean step in the charts (they show the rows as recorded).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from torchdiag.record import RunRecord, TraceSummary
from torchdiag.view.numbers import finite, weighted_quantile

# A step is an outlier when it lies more than this many robust standard deviations above the
# median (1.4826 x MAD estimates the standard deviation for normal noise); 5 keeps ordinary
# jitter out while catching checkpoint saves, evaluation and garbage collection pauses.
OUTLIER_SIGMAS = 5.0
# Outliers listed by step number; the rest are counted.
MAX_OUTLIERS_LISTED = 12


@dataclass(frozen=True)
class StepRows:
    """The rows every step statistic is taken over: wall ms and weight of each row, and where
    they come from ("live", "profiled", or ``None`` without steps)."""

    walls: tuple[float, ...]
    weights: tuple[float, ...]
    source: str | None


@dataclass(frozen=True)
class StepQuantiles:
    """p50/p95/p99 step time (ms; ``None`` without step timings)."""

    p50: float | None
    p95: float | None
    p99: float | None


@dataclass(frozen=True)
class WallStats:
    """p50/p95/p99/max/mean step time over the rows, the outlier threshold, the outlier steps
    (by number) and the slowest outliers as (step number, ms)."""

    rows: int
    p50: float | None
    p95: float | None
    p99: float | None
    max: float
    mean: float
    outlier_ms: float
    outliers: tuple[int, ...]
    slowest: tuple[tuple[int, float], ...]


def outlier_limit(walls: list[float]) -> float:
    """Step time above which a step is an outlier (milliseconds; ``walls`` non-empty).

    median + 5 robust standard deviations (1.4826 x MAD); the MAD is floored at 1% of the median
    so a perfectly steady run does not call its smallest jitter an outlier.
    """
    median = statistics.median(walls)
    mad = statistics.median(abs(w - median) for w in walls)
    return median + OUTLIER_SIGMAS * 1.4826 * max(mad, 0.01 * median)


def step_rows(record: RunRecord, summary: TraceSummary | None) -> StepRows:
    """The record's step series (a merged row weighs the steps it holds), else the profiled
    steps of ``summary``."""
    s = record.steps
    if s.wall_ms:
        # A record built from traces keeps the profiled steps in its step series.
        source = "profiled" if record.source == "trace" else "live"
        weights = [float(n) for n in s.steps] if len(s.steps) == len(s.wall_ms) else []
        return StepRows(tuple(s.wall_ms), tuple(weights or [1.0] * len(s.wall_ms)), source)
    if summary is None or not summary.steps:
        return StepRows((), (), None)
    walls = tuple(st.duration_ms for st in summary.steps)
    return StepRows(walls, (1.0,) * len(walls), "profiled")


def step_numbers(record: RunRecord, summary: TraceSummary | None) -> list[int]:
    """The first step number of every step row."""
    s = record.steps
    if s.wall_ms:
        n = len(s.wall_ms)
        return list(s.first_step) if len(s.first_step) == n else list(range(n))
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


def profiled_step_range(record: RunRecord, summary: TraceSummary | None) -> tuple[int, int] | None:
    """(first, last) number of the steps torch.profiler recorded — the steps the breakdown
    shows, the step chart shades and the page names — or ``None`` without a profiled step.

    The warm-up step before a live window also ran under the profiler but was discarded: it is
    not one of them (:func:`profiler_warmup_steps`).
    """
    window = record.profiler
    if window is not None and window.steps > 0:
        return window.first_step, window.first_step + window.steps - 1
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


def profiler_warmup_steps(record: RunRecord, span: tuple[int, int] | None) -> list[int]:
    """Steps that ran under torch.profiler before its recorded ones (``span``: warm-up,
    discarded)."""
    s = record.steps
    if span is None or len(s.first_step) != len(s.profiled):
        return []
    return [n for n, p in zip(s.first_step, s.profiled, strict=True) if p and n < span[0]]


def step_walls(rows: StepRows) -> list[float]:
    """Wall time of each step row in ms (NaN where a row has none)."""
    return [w if finite(w) else math.nan for w in rows.walls]


def step_waits(record: RunRecord, summary: TraceSummary | None) -> list[float]:
    """Input (DataLoader) wait of each step row in ms."""
    s = record.steps
    if s.wall_ms:
        return [w if finite(w) else 0.0 for w in s.input_wait_ms]
    if summary is None:
        return []
    # The host's whole time in DataLoader.__next__: what the step waited for input, whether or
    # not the GPU had other work meanwhile.
    return [max(st.dataloader_ms, st.breakdown.input_wait) for st in summary.steps]


def percentile_rows(record: RunRecord, rows: StepRows, steady: tuple[int, ...]) -> StepRows:
    """The rows the step percentiles are taken over.

    Every row in a training run, as always. In an inference run (a step is one call of the
    model) the latency percentiles describe the calls a server makes all day: the ``steady``
    rows (:func:`torchdiag.view.steady.steady_rows`: no warm-up call, no call slowed by the
    profiler), as the steady-state figures take them.
    """
    keep = steady
    if record.mode != "inference" or rows.source != "live" or not keep:
        return rows
    if max(keep) >= len(rows.walls):
        return rows
    return StepRows(
        tuple(rows.walls[i] for i in keep), tuple(rows.weights[i] for i in keep), rows.source
    )


def step_quantiles(rows: StepRows) -> StepQuantiles:
    """p50/p95/p99 of ``rows`` (merged rows weigh the steps they hold)."""
    return StepQuantiles(
        p50=weighted_quantile(rows.walls, rows.weights, 0.5),
        p95=weighted_quantile(rows.walls, rows.weights, 0.95),
        p99=weighted_quantile(rows.walls, rows.weights, 0.99),
    )


def wall_stats(rows: StepRows, numbers: list[int], quantiles: StepQuantiles) -> WallStats | None:
    """The step rows' statistics, ``None`` without step timings. Outliers are those of
    :func:`outlier_limit`, as the step-variance rule judges them, so the chart marks the steps
    the finding talks about."""
    pairs = [(w, n) for w, n in zip(rows.walls, numbers, strict=False) if finite(w)]
    if not pairs:
        return None
    ordered = sorted(w for w, _ in pairs)
    fence = outlier_limit(ordered)
    slowest = sorted(pairs, key=lambda p: (-p[0], p[1]))[:MAX_OUTLIERS_LISTED]
    return WallStats(
        rows=len(pairs),
        # The headline's own, so the cards agree.
        p50=quantiles.p50,
        p95=quantiles.p95,
        p99=quantiles.p99,
        max=ordered[-1],
        mean=sum(ordered) / len(ordered),
        outlier_ms=fence,
        outliers=tuple(sorted(n for w, n in pairs if w > fence)),
        slowest=tuple((n, w) for w, n in slowest if w > fence),
    )

"""The steady-state steps of one run as a sample: their median, and bootstrap medians drawn
without materialising a resample (what the single-run comparison's interval is built from)."""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

from torchdiag.record import RunRecord, TraceSummary
from torchdiag.view.numbers import finite
from torchdiag.view.steady import SteadyRows


@dataclass(frozen=True)
class StepSample:
    """Steady-state step times of one run as (value, count) pairs, sorted by value.

    A merged row of the step series stands for ``count`` steps at the row's mean wall time; the
    per-step spread inside a row is lost, so merged rows make the interval somewhat too narrow.
    """

    values: tuple[float, ...]
    counts: tuple[int, ...]
    excluded: str

    @property
    def n(self) -> int:
        """Number of steps the sample stands for."""
        return sum(self.counts)


def step_sample(record: RunRecord, summary: TraceSummary | None, steady: SteadyRows) -> StepSample:
    """Steady-state step times of ``record``: its ``steady`` rows, as the rules choose them.

    A record built from traces holds the trace steps in its step series (all profiled, the
    slowest rank per step); a trace whose steps are only in its summary is read from there.
    """
    s = record.steps
    if steady.rows:
        excluded = steady.excluded
        pairs = [(s.wall_ms[i], s.steps[i]) for i in steady.rows]
    else:
        steps = [st for st in summary.steps if finite(st.duration_ms)] if summary else []
        keep_steps = [st for st in steps if st.number > 0] or steps
        excluded = "first step excluded" if len(keep_steps) < len(steps) else "all steps used"
        pairs = [(st.duration_ms, 1) for st in keep_steps]
    merged: dict[float, int] = {}
    for value, count in pairs:
        merged[value] = merged.get(value, 0) + count
    ordered = sorted(merged.items())
    return StepSample(
        values=tuple(v for v, _ in ordered), counts=tuple(c for _, c in ordered), excluded=excluded
    )


def sample_median(sample: StepSample) -> float | None:
    """Median of the expanded steps (mean of the middle two when their number is even)."""
    n = sample.n
    if n == 0:
        return None
    cum = _cumulative(sample.counts)
    lo = sample.values[bisect_right(cum, (n - 1) // 2)]
    hi = sample.values[bisect_right(cum, n // 2)]
    return (lo + hi) / 2


def bootstrap_medians(sample: StepSample, resamples: int, rng: random.Random) -> list[float]:
    """Medians of ``resamples`` bootstrap resamples of ``sample`` (size ``n``, with replacement).

    Drawn exactly but without materialising any resample. Resampling ``n`` steps from the
    empirical distribution is drawing ``n`` uniforms and mapping them through its inverse CDF;
    the map is monotone, so the resample's k-th smallest step is the inverse CDF of the k-th
    smallest uniform, which is Beta(k, n-k+1) distributed. Given it is ``u``, the next one up is
    ``u + (1-u)·Beta(1, n-k)`` (the other n-k uniforms are uniform above ``u``). So each
    bootstrap median costs two Beta draws and a binary search, however many steps the run had
    or however its rows were merged: a long run's million steps cost what ten do.
    """
    n = sample.n
    if n == 0:
        return []
    cum = _cumulative(sample.counts)
    values = sample.values

    def at(u: float) -> float:
        # The expanded, sorted steps indexed by floor(u·n): the inverse empirical CDF.
        return values[bisect_right(cum, min(int(u * n), n - 1))]

    k = (n + 1) // 2  # the lower middle order statistic (the middle one when n is odd)
    out: list[float] = []
    for _ in range(resamples):
        u = rng.betavariate(k, n - k + 1)
        if n % 2:
            out.append(at(u))
        else:
            u_next = u + (1.0 - u) * rng.betavariate(1, n - k)
            out.append((at(u) + at(u_next)) / 2)
    return out


def _cumulative(counts: Sequence[int]) -> list[int]:
    cum, total = [], 0
    for c in counts:
        total += c
        cum.append(total)
    return cum

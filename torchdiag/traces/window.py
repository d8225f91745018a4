"""The profiled steps as one window, and what recording them cost the host.

Per-step CPU spans cannot show a GPU-bound run: the host races ahead and the GPU finishes a
step's kernels one or more steps later. The *window* therefore runs from the first step's start
to the later of the last step's end and the end of the last kernel the steps launched; the GPU
activity inside it is what the steps made the GPU do.

torch.profiler slows the host: every recorded event (operator, runtime call, annotation) costs a
few microseconds. The trace shows that cost on view operators that do nothing but call one other
view: their self time is the enter/exit cost of the one event nested in them (plus a fraction of
a microsecond of real work). Its median is :func:`profiler_event_us`; times the events recorded
in the steps (operators, runtime calls and annotations of the training process started between
the first step's start and the last one's end) it estimates the host time the profiler added.

Events are counted in windows without sorting them: :func:`counts_below` and
:class:`WeightedBelow` give, for each window bound ``q``, how many events started before ``q``,
from events in any order; an event count in ``[a, b)`` is then ``F(b) - F(a)``.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from itertools import accumulate

from torchdiag.traces.launches import quantile
from torchdiag.traces.steps import StepWindow

__all__ = ["WeightedBelow", "counts_below", "profiler_event_us", "step_span"]

ThreadKey = tuple[int | str, int | str]
_MIN_SAMPLES = 20  # fewer view operators than this: no estimate


def step_span(windows: Sequence[StepWindow]) -> tuple[float, float] | None:
    """(first step's start, last step's end) µs; None without steps.

    The window's end is the later of this end and the end of the last kernel launched inside
    this span (found while joining kernels to their launches, :mod:`~torchdiag.traces.passes`).
    """
    if not windows:
        return None
    return min(a for _, a, _ in windows), max(b for _, _, b in windows)


def counts_below(blocks: Iterable[Iterable[float]], bounds: Iterable[float]) -> dict[float, int]:
    """For each bound ``q``: how many of the values (in blocks, any order) are below ``q``.

    Each block is sorted (in C) and bisected once per bound.
    """
    out = dict.fromkeys(sorted(set(bounds)), 0)
    for values in blocks:
        ordered = sorted(values)
        if ordered:
            for q in out:
                out[q] += bisect_left(ordered, q)
    return out


class WeightedBelow:
    """:func:`counts_below` for weighted values added one at a time (:meth:`add`)."""

    __slots__ = ("_hist", "bounds")

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds = sorted(set(bounds))
        # _hist[p]: weight of the values below bounds[p] but not below bounds[p - 1]
        self._hist = [0] * (len(self.bounds) + 1)

    def add(self, t: float, weight: int) -> None:
        """One value ``t`` of weight ``weight``."""
        self._hist[bisect_right(self.bounds, t)] += weight

    def below(self) -> dict[float, int]:
        """For each bound: the weight of the values below it."""
        return dict(zip(self.bounds, accumulate(self._hist), strict=False))


def profiler_event_us(samples: list[float]) -> float | None:
    """The profiler's cost per recorded event (µs): the median self time of one-call views."""
    if len(samples) < _MIN_SAMPLES:
        return None
    return quantile(sorted(samples), 0.5)

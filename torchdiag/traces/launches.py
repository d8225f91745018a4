"""Kernels joined to the runtime calls that launched them, and the launch statistics.

Every kernel carries the ``correlation`` id of the runtime call (``cudaLaunchKernel``,
``hipExtModuleLaunchKernel``, ``cudaGraphLaunch`` ...) that issued it. Both sides are kept as
columns while the trace streams in; at the end, both are sorted by correlation id
(:func:`~torchdiag.traces.spill.sort_rows`: a trace larger than memory sorts on disk) and merged:
:func:`launch_totals` folds the kernels of one correlation id into a :data:`Launch` (first
kernel's start and duration, total time, kernel count, last end, matrix-math time), which the
reader's passes pair with the runtime calls of that id in one merge. No dictionary by
correlation id is kept, so memory does not grow with the number of kernels.

From the joined calls, :class:`LaunchFigures` gathers :class:`~torchdiag.record.LaunchStats`:
host cost of a launch, queueing delay (kernel start - launch start), kernels shorter than their
own launch (HolisticTraceAnalysis' "short kernel").
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence

from torchdiag.record import LaunchStats
from torchdiag.traces.spill import values_at

__all__ = [
    "Launch",
    "LaunchFigures",
    "count_in",
    "launch_totals",
    "quantile",
    "quantiles_of",
]

KernelRow = tuple[int, int, float, float, int]
"""(correlation id, arrival index, start µs, duration µs, kernel name id), sorted."""


def quantile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile of sorted values, linearly interpolated (numpy's default); 0 if empty.

    Exact, not a sketch: the values are all there. ``q=0.5`` is the usual median.
    """
    n = len(ordered)
    if n == 0:
        return 0.0
    pos = q * (n - 1)
    lo = int(pos)
    hi = min(lo + 1, n - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def quantiles_of(ordered: Iterable[float], n: int, qs: Sequence[float]) -> list[float]:
    """:func:`quantile` for each of ``qs``, over ``n`` sorted values given as a stream."""
    if n == 0:
        return [0.0] * len(qs)
    spots = []
    for q in qs:
        pos = q * (n - 1)
        lo = int(pos)
        spots.append((pos, lo, min(lo + 1, n - 1)))
    found = values_at(ordered, [i for _, lo, hi in spots for i in (lo, hi)])
    return [found[lo] + (found[hi] - found[lo]) * (pos - lo) for pos, lo, hi in spots]


def count_in(ordered: Sequence[float], a: float, b: float) -> int:
    """How many of the sorted values lie in ``[a, b)``."""
    return bisect_left(ordered, b) - bisect_left(ordered, a)


Launch = tuple[int, float, float, float, int, float, float, float]
"""The kernels one runtime call launched (one, or a CUDA graph's many): (correlation id, the
earliest kernel's start (the first to arrive on ties), its duration, their summed time in
arrival order, kernel count, the latest end, matrix-math kernel time (gemm / convolution /
attention), the part of that whose tensor-core use only the launch's dtype tells (Triton)).
A plain tuple: one is built per launch."""


def launch_totals(
    kernels: Iterable[KernelRow], matrix: Sequence[bool], triton: Sequence[bool]
) -> Iterator[Launch]:
    """One :data:`Launch` per correlation id, from kernel rows sorted by (id, arrival).

    ``matrix`` and ``triton`` say, per kernel name id, whether its time counts as matrix math
    and as Triton matrix math.
    """
    corr = None
    first_ts = first_dur = total = last_end = math_us = triton_us = 0.0
    count = 0
    for c, _, ts, dur, kid in kernels:
        if c != corr:
            if corr is not None:
                yield corr, first_ts, first_dur, total, count, last_end, math_us, triton_us
            corr, first_ts, first_dur, total, count = c, ts, dur, dur, 1
            last_end = ts + dur
            math_us = triton_us = 0.0
        else:
            total += dur
            count += 1
            end = ts + dur
            if end > last_end:
                last_end = end
            if ts < first_ts:  # kernels of one graph launch arrive in any order
                first_ts, first_dur = ts, dur
        if matrix[kid]:
            math_us += dur
            if triton[kid]:
                triton_us += dur
    if corr is not None:
        yield corr, first_ts, first_dur, total, count, last_end, math_us, triton_us


class LaunchFigures:
    """What :class:`LaunchStats` needs beyond sorted durations, gathered call by call."""

    __slots__ = ("graphs", "launch_us", "launches", "short")

    def __init__(self) -> None:
        self.launches = 0
        self.launch_us = 0.0  # summed host time of the kernel launches
        self.short = 0  # single kernels shorter than their launch call
        self.graphs = 0

    def stats(
        self,
        launch_durations: Iterable[float],
        queue_delays: Iterable[float],
        queued: int,
        kernel_durations: Iterable[float],
        kernels: int,
    ) -> LaunchStats:
        """The statistics; the durations and delays are streams of sorted values (µs)."""
        (median_launch,) = quantiles_of(launch_durations, self.launches, (0.5,))
        median_queue, p90_queue = quantiles_of(queue_delays, queued, (0.5, 0.9))
        median_kernel, p90_kernel = quantiles_of(kernel_durations, kernels, (0.5, 0.9))
        return LaunchStats(
            launches=self.launches,
            launch_ms=self.launch_us / 1000,
            median_launch_us=median_launch,
            median_kernel_us=median_kernel,
            p90_kernel_us=p90_kernel,
            short_kernels=self.short,
            median_queue_us=median_queue,
            p90_queue_us=p90_queue,
            cuda_graph_launches=self.graphs,
        )

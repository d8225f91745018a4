"""Kernels joined to the runtime calls that launched them, and the launch statistics.

Every kernel carries the ``correlation`` id of the runtime call (``cudaLaunchKernel``,
``hipExtModuleLaunchKernel``, ``cudaGraphLaunch`` ...) that issued it. :class:`KernelLaunches`
keeps, per correlation id, a *slot*: the first kernel's start and duration in two columns of
numbers, plus, sparsely, the totals of launches that ran several kernels (CUDA graphs) and the
matrix-math part of the time (for the dtype attribution in :mod:`~torchdiag.traces.matrix`).

From slots and the host threads' runtime columns, :meth:`KernelLaunches.stats` derives
:class:`~torchdiag.record.LaunchStats`: host cost of a launch, queueing delay (kernel start -
launch start), kernels shorter than their own launch (HolisticTraceAnalysis' "short kernel").
"""

from __future__ import annotations

import math
import operator
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from itertools import compress

from torchdiag.record import LaunchStats
from torchdiag.traces.events import ThreadColumns
from torchdiag.traces.runtime import GRAPH_LAUNCH, KERNEL_LAUNCH

__all__ = ["KernelLaunches", "count_in", "launch_starts", "quantile"]

ThreadKey = tuple[int | str, int | str]


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


def count_in(ordered: Sequence[float], a: float, b: float) -> int:
    """How many of the sorted values lie in ``[a, b)``."""
    return bisect_left(ordered, b) - bisect_left(ordered, a)


class KernelLaunches:
    """Kernel time per correlation id (:meth:`add`), joined to runtime calls at the end.

    Almost every launch runs one kernel, so a slot is two numbers (first kernel's start and
    duration); the totals of launches that ran several kernels (CUDA graphs) and the matrix-math
    time (few kernels) are kept sparsely, in dicts.
    """

    __slots__ = ("first_dur", "first_ts", "math", "multi", "slots", "total_us", "triton")

    def __init__(self) -> None:
        self.slots: dict[int, int] = {}  # correlation id -> slot
        self.first_ts = array("d")
        self.first_dur = array("d")
        # slot -> [total µs, kernels, last end] for launches that ran more than one kernel
        self.multi: dict[int, list[float]] = {}
        self.total_us = 0.0
        # Matrix-math kernel time (gemm / convolution / attention) by slot, and the part of it
        # whose tensor-core use only the launching operator's dtype can tell (Triton kernels).
        self.math: dict[int, float] = {}
        self.triton: dict[int, float] = {}

    def __len__(self) -> int:
        return len(self.first_ts)

    def add(self, corr: int, ts: float, dur: float, math: bool, triton: bool) -> None:
        """Fold in one kernel launched by the runtime call with correlation id ``corr``."""
        self.total_us += dur
        slot = self.slots.get(corr)
        if slot is None:
            slot = self.slots[corr] = len(self.first_ts)
            self.first_ts.append(ts)
            self.first_dur.append(dur)
        else:
            more = self.multi.get(slot)
            if more is None:
                first_end = self.first_ts[slot] + self.first_dur[slot]
                more = self.multi[slot] = [self.first_dur[slot], 1, first_end]
            more[0] += dur
            more[1] += 1
            more[2] = max(more[2], ts + dur)
            if ts < self.first_ts[slot]:  # kernels of one graph launch arrive in any order
                self.first_ts[slot] = ts
                self.first_dur[slot] = dur
        if math:
            self.math[slot] = self.math.get(slot, 0.0) + dur
            if triton:
                self.triton[slot] = self.triton.get(slot, 0.0) + dur

    def count(self, slot: int) -> int:
        """Kernels of one launch."""
        more = self.multi.get(slot)
        return int(more[1]) if more is not None else 1

    def launches_of(self, th: ThreadColumns) -> list[int]:
        """Indices of the thread's runtime calls that launched kernels, sorted by start.

        (Indices, not (start, slot) tuples: a million launches would be a million tuples.)
        """
        found = list(compress(range(len(th.rt_corr)), map(self.slots.__contains__, th.rt_corr)))
        found.sort(key=th.rt_ts.__getitem__)
        return found

    def kernels_of(self, th: ThreadColumns, calls: Sequence[int]) -> int:
        """Kernels launched by the thread's runtime calls ``calls`` (indices)."""
        slots, corrs = self.slots, th.rt_corr
        return sum(self.count(slots[corrs[j]]) for j in calls if corrs[j] in slots)

    def launched_span(
        self, th: ThreadColumns, calls: Sequence[int], a: float, b: float
    ) -> tuple[float, float]:
        """(first start, last end) of the kernels the thread launched in ``[a, b)``.

        ``(inf, -inf)`` when it launched none. ``calls`` are the thread's launching calls sorted
        by start (:meth:`launches_of`). The GPU may still be running kernels launched before
        ``a`` when the first of these starts (a full launch queue); they belong to earlier steps.
        """
        starts = th.rt_ts
        lo = bisect_left(calls, a, key=starts.__getitem__)
        hi = bisect_left(calls, b, key=starts.__getitem__)
        if lo == hi:
            return math.inf, -math.inf
        slots, corrs, first_ts, first_dur = self.slots, th.rt_corr, self.first_ts, self.first_dur
        found = [slots[corrs[j]] for j in calls[lo:hi]]
        first = min([first_ts[s] for s in found])
        end = max([first_ts[s] + first_dur[s] for s in found])
        if self.multi:  # launches of several kernels (CUDA graphs) may end after their first
            launched = set(found)
            end = max([end, *(m[2] for s, m in self.multi.items() if s in launched)])
        return first, end

    def stats(
        self, threads: Iterable[ThreadColumns], kernel_durations: Sequence[float]
    ) -> LaunchStats:
        """Launch statistics over all host threads; ``kernel_durations`` sorted (µs)."""
        slots, first_ts, first_dur, multi = self.slots, self.first_ts, self.first_dur, self.multi
        launch_us: list[float] = []
        queue_us: list[float] = []
        short = graphs = 0
        for th in threads:
            kinds = th.rt_kind
            graphs += kinds.count(GRAPH_LAUNCH)
            if KERNEL_LAUNCH not in kinds:
                continue
            # Select and join with map/compress (C loops): this runs once per kernel launch.
            starts = list(compress(th.rt_ts, map(KERNEL_LAUNCH.__eq__, kinds)))
            ends = compress(th.rt_end, map(KERNEL_LAUNCH.__eq__, kinds))
            took = list(map(operator.sub, ends, starts))
            launch_us.extend(took)
            found = list(map(slots.get, compress(th.rt_corr, map(KERNEL_LAUNCH.__eq__, kinds))))
            queue_us.extend(
                [
                    first_ts[slot] - start
                    for start, slot in zip(starts, found, strict=True)
                    if slot is not None
                ]
            )
            short += sum(
                1
                for t, slot in zip(took, found, strict=True)
                if slot is not None and first_dur[slot] < t and slot not in multi
            )
        total_launch = sum(launch_us)
        launch_us.sort()
        queue_us.sort()
        return LaunchStats(
            launches=len(launch_us),
            launch_ms=total_launch / 1000,
            median_launch_us=quantile(launch_us, 0.5),
            median_kernel_us=quantile(kernel_durations, 0.5),
            p90_kernel_us=quantile(kernel_durations, 0.9),
            short_kernels=short,
            median_queue_us=quantile(queue_us, 0.5),
            p90_queue_us=quantile(queue_us, 0.9),
            cuda_graph_launches=graphs,
        )


def launch_starts(threads: Mapping[ThreadKey, ThreadColumns], pid: int | str | None) -> list[float]:
    """Sorted starts of the kernel-launch calls made by process ``pid`` (any of its threads)."""
    out: list[float] = []
    for (p, _), th in threads.items():
        if p == pid and KERNEL_LAUNCH in th.rt_kind:
            out.extend(compress(th.rt_ts, map(KERNEL_LAUNCH.__eq__, th.rt_kind)))
    out.sort()
    return out

"""Unions of intervals built in one streaming pass, and what is measured on them.

The time breakdown needs unions of intervals (GPU activity per kind, the host's runtime calls,
its top-level operators ...) and, on each union, lengths inside windows. Kept as lists, a union
of millions of intervals costs hundreds of MiB; here it is never materialised. The intervals of
every layer arrive once, sorted by start (:func:`~torchdiag.traces.spill.sort_rows`), and each
:class:`Union` folds the layers it covers into its disjoint *components* as they close, in order,
handing each to its sinks:

- :class:`WindowLengths`: the length of the union inside each of many windows (the steps);
- :class:`LengthIn`: the length inside one window, computed exactly as
  :func:`~torchdiag.traces.intervals.length_in` does (same additions in the same order, so the
  same float);
- :class:`Gaps`: for query instants, the gap from each to the next component (GPU idle after a
  synchronisation);
- :class:`TotalLength`: the union's whole length.

Components merge touching intervals and drop empty ones, as
:func:`~torchdiag.traces.intervals.merge_intervals` does, so they are the very intervals that
function would return, and every sum runs over them in the same order.
"""

from __future__ import annotations

import math
import operator
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from itertools import chain
from typing import Protocol

__all__ = [
    "Gaps",
    "LengthIn",
    "LengthsIn",
    "TotalLength",
    "Union",
    "WindowLengths",
    "partitions",
    "sweep",
]


class Sink(Protocol):
    """Receives a union's closed components in order, a batch at a time."""

    def __call__(self, starts: list[float], ends: list[float]) -> None: ...


class Union:
    """The union of the layers it is fed, as batches of components passed to ``sinks``."""

    __slots__ = ("end", "ends", "sinks", "start", "starts")

    def __init__(self, sinks: Iterable[Sink]) -> None:
        self.start = -math.inf
        self.end = -math.inf  # -inf: no component open yet
        self.starts: list[float] = []  # closed components not yet handed over
        self.ends: list[float] = []
        self.sinks = list(sinks)

    def flush(self) -> None:
        """Hand the closed components over to the sinks."""
        if self.starts:
            for sink in self.sinks:
                sink(self.starts, self.ends)
            self.starts = []
            self.ends = []

    def close(self) -> None:
        """Close the last component and hand everything over (at the end of the sweep)."""
        if self.end != -math.inf:
            self.starts.append(self.start)
            self.ends.append(self.end)
            self.end = -math.inf
        self.flush()


def sweep(
    rows: Iterable[tuple[float, float, int]], feeds: Sequence[Sequence[Union]], flush_rows: int
) -> None:
    """Fold ``rows`` (start, end, layer), sorted by start, into the unions ``feeds[layer]``;
    the closed components go to the sinks every ``flush_rows`` rows (which bounds memory).

    Each ``feeds[layer]`` must be a chain: every union in it covers the ones before it (the
    prefixes of a priority order, say). A row that changes nothing in one union then changes
    nothing in the later ones either (their open component ends at least as late), so the
    fold stops there.
    """
    ninf = -math.inf
    every = {id(u): u for unions in feeds for u in unions}.values()
    count = 0
    for s, e, layer in rows:
        for u in feeds[layer]:
            end = u.end
            if s <= end:
                if e <= end:
                    break
                u.end = e
            elif e > s:
                if end != ninf:
                    u.starts.append(u.start)
                    u.ends.append(end)
                u.start = s
                u.end = e
        count += 1
        if count == flush_rows:
            count = 0
            for u in every:
                u.flush()
    for u in every:
        u.close()


class TotalLength:
    """The summed length of all components (:func:`~torchdiag.traces.intervals.length`)."""

    __slots__ = ("total",)

    def __init__(self) -> None:
        self.total = 0.0

    def __call__(self, starts: list[float], ends: list[float]) -> None:
        self.total = sum(map(operator.sub, ends, starts), self.total)


class LengthIn:
    """The union's length inside ``[a, b]``, as :func:`~intervals.length_in` computes it: the
    whole components that reach into the window, less what sticks out at either end."""

    __slots__ = ("_first", "_last", "_sum", "a", "b")

    def __init__(self, a: float, b: float) -> None:
        self.a, self.b = a, b
        self._sum = 0.0
        self._first: float | None = None
        self._last = 0.0

    def __call__(self, starts: list[float], ends: list[float]) -> None:
        lo, hi = bisect_right(ends, self.a), bisect_left(starts, self.b)
        if lo < hi:
            if self._first is None:
                self._first = starts[lo]
            self._sum = sum(map(operator.sub, ends[lo:hi], starts[lo:hi]), self._sum)
            self._last = ends[hi - 1]

    @property
    def length(self) -> float:
        """The length (0.0 when no component reaches into the window)."""
        if self._first is None:
            return 0.0
        return self._sum - (max(0.0, self.a - self._first) + max(0.0, self._last - self.b))


class _ManyWindows:
    """Windows sorted by start, and which of them a batch of components can reach."""

    __slots__ = ("_by_start", "_done", "_starts", "windows")

    def __init__(self, windows: Sequence[tuple[float, float]]) -> None:
        self.windows = list(windows)
        self._by_start = sorted(range(len(self.windows)), key=lambda w: self.windows[w][0])
        self._starts = [self.windows[w][0] for w in self._by_start]
        self._done = 0  # windows (in start order) that ended before the components so far

    def reached(self, starts: list[float], ends: list[float]) -> list[int]:
        """The windows (indices) that may overlap components from ``starts[0]`` to ``ends[-1]``;
        later batches lie further on, so windows that ended before this one are dropped."""
        windows, by_start, first = self.windows, self._by_start, starts[0]
        while self._done < len(by_start) and windows[by_start[self._done]][1] <= first:
            self._done += 1
        return by_start[self._done : bisect_left(self._starts, ends[-1])]


class WindowLengths(_ManyWindows):
    """The union's length inside each of many windows (as :func:`~intervals.partition` measures
    a prefix of its layers: the clipped components, summed in order)."""

    __slots__ = ("lengths",)

    def __init__(self, windows: Sequence[tuple[float, float]]) -> None:
        super().__init__(windows)
        self.lengths = [0.0] * len(self.windows)

    def __call__(self, starts: list[float], ends: list[float]) -> None:
        windows, lengths = self.windows, self.lengths
        for w in self.reached(starts, ends):
            a, b = windows[w]
            lo, hi = bisect_right(ends, a), bisect_left(starts, b)
            if lo >= hi:
                continue
            # Only a window's first component can start before it, only its last end after it.
            head = min(ends[lo], b) - max(starts[lo], a)
            if hi - lo == 1:
                lengths[w] += head
                continue
            inner = map(operator.sub, ends[lo + 1 : hi - 1], starts[lo + 1 : hi - 1])
            tail = min(ends[hi - 1], b) - starts[hi - 1]
            lengths[w] = sum(chain((head,), inner, (tail,)), lengths[w])


class LengthsIn(_ManyWindows):
    """:class:`LengthIn` for each of many windows."""

    __slots__ = ("parts",)

    def __init__(self, windows: Sequence[tuple[float, float]]) -> None:
        super().__init__(windows)
        self.parts = [LengthIn(a, b) for a, b in self.windows]

    def __call__(self, starts: list[float], ends: list[float]) -> None:
        for w in self.reached(starts, ends):
            self.parts[w](starts, ends)


class Gaps:
    """For each query instant ``t``: the gap ``(t, next component start)`` when ``t`` lies
    between components (or before the first), None inside one or after the last; the streaming
    form of a bisection over the whole union."""

    __slots__ = ("_at", "_prev_end", "found", "queries")

    def __init__(self, queries: Iterable[float]) -> None:
        self.queries = sorted(set(queries))
        self.found: dict[float, tuple[float, float] | None] = dict.fromkeys(self.queries)
        self._at = 0
        self._prev_end = -math.inf

    def __call__(self, starts: list[float], ends: list[float]) -> None:
        queries, at = self.queries, self._at
        last_start = starts[-1]
        # Queries from the last start on wait for the next batch (or stay None at the end).
        while at < len(queries) and queries[at] < last_start:
            t = queries[at]
            i = bisect_right(starts, t)
            if i == 0:
                if t >= self._prev_end:  # after the previous batch's last component
                    self.found[t] = (t, starts[0])
            elif ends[i - 1] <= t:  # between two components
                self.found[t] = (t, starts[i])
            at += 1
        self._at = at
        self._prev_end = ends[-1]


def partitions(
    windows: Sequence[tuple[float, float]], prefixes: Sequence[WindowLengths]
) -> list[list[float]]:
    """Each window's :func:`~torchdiag.traces.intervals.partition` among prioritised layers.

    ``prefixes[k]`` measured the union of layers 0..k in the windows: layer k gets what that
    union covers beyond the one before it, the extra last slot what none covers.
    """
    out = []
    for w, (a, b) in enumerate(windows):
        parts = []
        covered = 0.0
        for prefix in prefixes:
            now = prefix.lengths[w]
            parts.append(now - covered)
            covered = now
        parts.append(max(0.0, (b - a) - covered))
        out.append(parts)
    return out

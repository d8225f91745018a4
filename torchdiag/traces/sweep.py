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
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence

__all__ = ["Gaps", "LengthIn", "TotalLength", "Union", "WindowLengths", "partitions", "sweep"]

Sink = Callable[[float, float], None]


class Union:
    """The union of the layers it is fed, as a stream of components passed to ``sinks``."""

    __slots__ = ("end", "sinks", "start")

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.start = -math.inf
        self.end = -math.inf  # -inf: no component open yet
        self.sinks = list(sinks)

    def close(self) -> None:
        """Pass on the last component (at the end of the sweep)."""
        if self.end != -math.inf:
            for sink in self.sinks:
                sink(self.start, self.end)
            self.end = -math.inf


def sweep(rows: Iterable[tuple[float, float, int]], feeds: Sequence[Sequence[Union]]) -> None:
    """Fold ``rows`` (start, end, layer), sorted by start, into the unions ``feeds[layer]``."""
    ninf = -math.inf
    for s, e, layer in rows:
        for u in feeds[layer]:
            end = u.end
            if s <= end:
                if e > end:
                    u.end = e
            elif e > s:
                if end != ninf:
                    for sink in u.sinks:
                        sink(u.start, end)
                u.start = s
                u.end = e
    for unions in feeds:
        for u in unions:
            u.close()


class TotalLength:
    """The summed length of all components (:func:`~torchdiag.traces.intervals.length`)."""

    __slots__ = ("total",)

    def __init__(self) -> None:
        self.total = 0.0

    def __call__(self, s: float, e: float) -> None:
        self.total += e - s


class LengthIn:
    """The union's length inside ``[a, b]``, as :func:`~intervals.length_in` computes it: the
    whole components that reach into the window, less what sticks out at either end."""

    __slots__ = ("_first", "_last", "_sum", "a", "b")

    def __init__(self, a: float, b: float) -> None:
        self.a, self.b = a, b
        self._sum = 0.0
        self._first: float | None = None
        self._last = 0.0

    def __call__(self, s: float, e: float) -> None:
        if e > self.a and s < self.b:
            if self._first is None:
                self._first = s
            self._sum += e - s
            self._last = e

    @property
    def length(self) -> float:
        """The length (0.0 when no component reaches into the window)."""
        if self._first is None:
            return 0.0
        return self._sum - (max(0.0, self.a - self._first) + max(0.0, self._last - self.b))


class WindowLengths:
    """The union's length inside each of many windows (as :func:`~intervals.partition` measures
    a prefix of its layers: the clipped components, summed in order)."""

    __slots__ = ("_active", "_next", "_order", "lengths", "windows")

    def __init__(self, windows: Sequence[tuple[float, float]]) -> None:
        self.windows = list(windows)
        self.lengths = [0.0] * len(self.windows)
        self._order = sorted(range(len(self.windows)), key=lambda w: self.windows[w][0])
        self._next = 0
        self._active: list[int] = []

    def __call__(self, s: float, e: float) -> None:
        windows, order = self.windows, self._order
        while self._next < len(order) and windows[order[self._next]][0] < e:
            self._active.append(order[self._next])
            self._next += 1
        if not self._active:
            return
        lengths = self.lengths
        for w in self._active:
            a, b = windows[w]
            if b > s:
                lengths[w] += min(e, b) - max(s, a)
        # Later components start after this one ends: windows ending by then are done.
        self._active = [w for w in self._active if windows[w][1] > e]


class Gaps:
    """For each query instant ``t``: the gap ``(t, next component start)`` when ``t`` lies
    between components (or before the first), None inside one or after the last; the streaming
    form of :func:`~torchdiag.traces.syncs` ``_gap_after``."""

    __slots__ = ("_at", "_prev_end", "found", "queries")

    def __init__(self, queries: Iterable[float]) -> None:
        self.queries = sorted(set(queries))
        self.found: dict[float, tuple[float, float] | None] = dict.fromkeys(self.queries)
        self._at = 0
        self._prev_end = -math.inf

    def __call__(self, s: float, e: float) -> None:
        queries, at = self.queries, self._at
        stop = bisect_right(queries, s, lo=at)
        while at < stop and queries[at] < s:
            t = queries[at]
            if t >= self._prev_end:
                self.found[t] = (t, s)
            at += 1
        self._at = at
        self._prev_end = e


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

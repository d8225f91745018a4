"""Interval arithmetic on sorted, disjoint intervals: the basis of every time breakdown.

An :data:`Intervals` value is a union of half-open intervals kept as two plain lists, starts and
ends, both sorted. :func:`merge_intervals` builds one from arbitrary (unsorted, overlapping)
intervals; :func:`partition` splits a window among prioritised layers so the parts add up to the
window's length.

These work on lists in memory: the reader uses them for the few intervals per step (DataLoader
waits). For the layers that grow with the trace, :mod:`~torchdiag.traces.sweep` computes the same
unions, lengths and partitions in one streaming pass, with the same float operations in the same
order (the tests check one against the other).
"""

from __future__ import annotations

import operator
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence

__all__ = ["Intervals", "clip", "length", "length_in", "merge_intervals", "partition", "union"]

Intervals = tuple[list[float], list[float]]
"""Disjoint intervals sorted by start, as (starts, ends); ends are sorted too."""


def merge_intervals(
    starts: Sequence[float], ends: Sequence[float], indices: Iterable[int] | None = None
) -> Intervals:
    """The union of intervals ``[starts[i], ends[i])`` (all, or those in ``indices``)."""
    idx = list(range(len(starts)) if indices is None else indices)
    idx.sort(key=starts.__getitem__)
    out_s: list[float] = []
    out_e: list[float] = []
    for i in idx:
        s, e = starts[i], ends[i]
        if out_e and s <= out_e[-1]:
            if e > out_e[-1]:
                out_e[-1] = e
        elif e > s:
            out_s.append(s)
            out_e.append(e)
    return out_s, out_e


def union(unions: Iterable[Intervals]) -> Intervals:
    """The union of several :data:`Intervals`."""
    starts: list[float] = []
    ends: list[float] = []
    for s, e in unions:
        starts.extend(s)
        ends.extend(e)
    return merge_intervals(starts, ends)


def clip(intervals: Intervals, a: float, b: float) -> Intervals:
    """The part of ``intervals`` inside ``[a, b]``."""
    starts, ends = intervals
    lo, hi = bisect_right(ends, a), bisect_left(starts, b)
    if lo >= hi:
        return [], []
    # Disjoint and sorted: only the first can start before a, only the last end after b.
    out_s, out_e = list(starts[lo:hi]), list(ends[lo:hi])
    out_s[0] = max(out_s[0], a)
    out_e[-1] = min(out_e[-1], b)
    return out_s, out_e


def length(intervals: Intervals) -> float:
    """The total length covered."""
    starts, ends = intervals
    covered: float = sum(map(operator.sub, ends, starts))
    return covered


def length_in(intervals: Intervals, a: float, b: float) -> float:
    """The length of ``intervals`` inside ``[a, b]``: :func:`clip` then :func:`length`, without
    building the clipped lists (windows can hold millions of intervals)."""
    starts, ends = intervals
    lo, hi = bisect_right(ends, a), bisect_left(starts, b)
    if lo >= hi:
        return 0.0
    total: float = sum(map(operator.sub, ends[lo:hi], starts[lo:hi]))
    # The first and last intervals may stick out of the window.
    total -= max(0.0, a - starts[lo]) + max(0.0, ends[hi - 1] - b)
    return total


def partition(a: float, b: float, layers: Sequence[Intervals]) -> list[float]:
    """Split ``[a, b]`` among ``layers`` by priority: each instant goes to the first layer active
    then, or to the extra last slot when none is. Returns ``len(layers) + 1`` lengths that add up
    to ``b - a``.

    Layer k gets |L0 ∪ ... ∪ Lk| - |L0 ∪ ... ∪ Lk-1|: what it covers that no earlier layer does.
    """
    out = []
    covered: Intervals = ([], [])  # L0 ∪ ... ∪ Lk within [a, b]
    covered_len = 0.0
    for layer in layers:
        covered = union((covered, clip(layer, a, b)))
        now = length(covered)
        out.append(now - covered_len)
        covered_len = now
    out.append(max(0.0, (b - a) - covered_len))
    return out

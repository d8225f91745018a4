"""Bounded, evenly spaced series: the downsampling buffer behind samples and step times.

A run of days must not grow memory or the record without bound, yet charts want the whole run.
The buffer keeps at most ``max_rows`` rows; when full, adjacent rows merge pairwise and every later
row combines twice as many raw entries, so rows stay evenly spaced. Each column says how its
values combine (:class:`Merge`).
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Mapping
from typing import Any


class Merge(enum.Enum):
    """How values of one column combine when samples are averaged into a row."""

    MEAN = "mean"  # weighted mean of the non-None values; None if all are None
    BIT_OR = "bit_or"  # OR of the non-None bitmasks; None if all are None
    ELEMENTWISE_MEAN = "elementwise_mean"  # weighted mean per position of non-empty lists
    FIRST = "first"  # the earliest non-None value (e.g. where a row starts)
    MAX = "max"  # the largest non-None value (e.g. the slowest step in a row)
    SUM = "sum"  # the total of the non-None values (e.g. tokens a row's steps generated)


class _Accumulator:
    """Running combination of weighted values of one column (O(1) memory per column)."""

    __slots__ = ("_bits", "_extreme", "_merge", "_total", "_vector", "_weight")

    def __init__(self, merge: Merge) -> None:
        self._merge = merge
        self.reset()

    def reset(self) -> None:
        self._total = 0.0
        self._weight = 0
        self._bits: int | None = None
        self._vector: list[float] | None = None
        self._extreme: Any = None

    def add(self, value: Any, weight: int) -> None:
        if value is None:
            return
        if self._merge is Merge.MEAN:
            self._total += value * weight
            self._weight += weight
        elif self._merge is Merge.BIT_OR:
            self._bits = value if self._bits is None else self._bits | value
        elif self._merge is Merge.FIRST:
            if self._extreme is None:
                self._extreme = value
        elif self._merge is Merge.MAX:
            if self._extreme is None or value > self._extreme:
                self._extreme = value
        elif self._merge is Merge.SUM:
            # A row already holds its samples' total: merged rows add up, unweighted.
            self._extreme = value if self._extreme is None else self._extreme + value
        elif value:
            vector = self._vector
            if vector is None:
                self._vector = [x * weight for x in value]
            else:
                # A core count that changes mid-run (hotplug) keeps only the common cores.
                if len(value) < len(vector):
                    del vector[len(value) :]
                for i in range(len(vector)):
                    vector[i] += value[i] * weight
            self._weight += weight

    def result(self) -> Any:
        if self._merge is Merge.MEAN:
            return self._total / self._weight if self._weight else None
        if self._merge is Merge.BIT_OR:
            return self._bits
        if self._merge in (Merge.FIRST, Merge.MAX, Merge.SUM):
            return self._extreme
        if self._vector is None:
            return []
        return [x / self._weight for x in self._vector]


class SeriesBuffer:
    """Columns of samples on a shared time axis, holding at most ``max_rows`` rows.

    Each row is the combination (see :class:`Merge`) of ``rows_merged[i]`` consecutive raw
    samples. When a new sample arrives and the buffer is full, adjacent rows are merged pairwise
    and the number of raw samples per row doubles, so rows stay evenly spaced. ``max_rows`` is
    rounded down to an even number so that every row has a partner.
    """

    def __init__(self, columns: Mapping[Any, Merge], max_rows: int) -> None:
        if max_rows < 2:
            raise ValueError(f"max_rows must be at least 2, got {max_rows}")
        self.max_rows = max_rows - max_rows % 2
        self.samples_per_row = 1
        self.sample_count = 0
        self._keys = list(columns)
        self._accumulators = [_Accumulator(columns[key]) for key in self._keys]
        self._columns: list[list[Any]] = [[] for _ in self._keys]
        self._column_of = {key: i for i, key in enumerate(self._keys)}
        self._time_accumulator = _Accumulator(Merge.MEAN)
        self._times: list[float] = []
        self._rows_merged: list[int] = []
        self._pending = 0

    def __len__(self) -> int:
        """Rows including a partly filled last row."""
        return len(self._times) + (1 if self._pending else 0)

    def add(self, t: float, values: Mapping[Hashable, Any]) -> None:
        """Add one raw sample at time ``t``; a column missing from ``values`` counts as None."""
        if self._pending == 0 and len(self._times) >= self.max_rows:
            self._halve()
        self._time_accumulator.add(t, 1)
        for key, accumulator in zip(self._keys, self._accumulators, strict=True):
            accumulator.add(values.get(key), 1)
        self._pending += 1
        self.sample_count += 1
        if self._pending == self.samples_per_row:
            self._times.append(self._time_accumulator.result())
            self._time_accumulator.reset()
            for column, accumulator in zip(self._columns, self._accumulators, strict=True):
                column.append(accumulator.result())
                accumulator.reset()
            self._rows_merged.append(self._pending)
            self._pending = 0

    def times(self) -> list[float]:
        """Mean time of each row (a copy)."""
        return self._with_pending(self._times, self._time_accumulator)

    def rows_merged(self) -> list[int]:
        """Raw samples in each row (a copy)."""
        return self._rows_merged + ([self._pending] if self._pending else [])

    def column(self, key: Hashable) -> list[Any]:
        """Values of one column (a copy)."""
        i = self._column_of[key]
        return self._with_pending(self._columns[i], self._accumulators[i])

    def _with_pending(self, stored: list[Any], accumulator: _Accumulator) -> list[Any]:
        return [*stored, accumulator.result()] if self._pending else list(stored)

    def _halve(self) -> None:
        # Called only between rows, so the accumulators are idle and can combine stored rows:
        # the same code averages raw samples and merges rows.
        weights = self._rows_merged
        self._times = _merge_pairs(self._time_accumulator, self._times, weights)
        for i, accumulator in enumerate(self._accumulators):
            self._columns[i] = _merge_pairs(accumulator, self._columns[i], weights)
        self._rows_merged = [weights[i] + weights[i + 1] for i in range(0, len(weights) - 1, 2)]
        self.samples_per_row *= 2


def _merge_pairs(accumulator: _Accumulator, values: list[Any], weights: list[int]) -> list[Any]:
    merged = []
    for i in range(0, len(values) - 1, 2):
        accumulator.add(values[i], weights[i])
        accumulator.add(values[i + 1], weights[i + 1])
        merged.append(accumulator.result())
        accumulator.reset()
    return merged

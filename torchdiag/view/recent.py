"""The recent past of a running record: its last steps and the samples taken meanwhile.

A live view wants the step time of the last minute (at most its last 512 step rows), not the mean
of a run that may have been going for a day. Rather than a second set of statistics, the record
itself is cut to its recent rows, and the figures of that cut record come from a
:class:`~torchdiag.view.run_view.RunView` of it like any other: its median and p95 step,
throughput, input wait and findings are those every report would give a run made of those steps
alone.
"""

from __future__ import annotations

import bisect
from typing import Any, TypeVar

import msgspec

from torchdiag.record import RunRecord, Samples

# The window: the steps of the last minute, and never fewer than 20 rows (slow steps still get a
# distribution). Step rows merge pairwise in a long run, so 20 rows may hold many more steps.
# Nor more than 512 rows: plenty for a median and a p95, and it bounds what a frame of the live
# view costs however fast the steps are (a minute of 10 ms steps is 6,000 of them).
RECENT_S = 60.0
MIN_ROWS = 20
MAX_ROWS = 512

_S = TypeVar("_S", bound=msgspec.Struct)


def recent_record(
    record: RunRecord,
    *,
    seconds: float = RECENT_S,
    min_rows: int = MIN_ROWS,
    max_rows: int = MAX_ROWS,
) -> RunRecord:
    """``record`` with only the step rows that began in the last ``seconds`` of its steps (at
    least the last ``min_rows``, at most the last ``max_rows``), the samples taken since the
    first of them, and its totals and duration those of the rows kept. The record itself when
    every row is kept."""
    s = record.steps
    n = len(s.wall_ms)
    first = max(0, n - min_rows)
    end: float | None = None
    if n and len(s.start_s) == n and len(s.steps) == n:
        end = s.start_s[-1] + s.wall_ms[-1] * s.steps[-1] / 1e3
        first = min(first, bisect.bisect_left(s.start_s, end - seconds))
    first = max(first, n - max_rows)
    if first <= 0:
        return record
    steps = _tail(s, n, first)
    counts = steps.steps if len(steps.steps) == len(steps.wall_ms) else [1] * len(steps.wall_ms)
    waits = steps.input_wait_ms if len(steps.input_wait_ms) == len(counts) else []
    steps = msgspec.structs.replace(
        steps,
        count=sum(counts),
        total_wall_s=sum(w * c for w, c in zip(steps.wall_ms, counts, strict=True)) / 1e3,
        total_input_wait_s=sum(w * c for w, c in zip(waits, counts, strict=False)) / 1e3,
    )
    since = s.start_s[first] if end is not None else None
    duration = end - since if end is not None and since is not None else record.duration_s
    return msgspec.structs.replace(
        record,
        steps=steps,
        samples=_recent_samples(record.samples, since),
        duration_s=max(0.0, duration),
    )


def _recent_samples(samples: Samples | None, since: float | None) -> Samples | None:
    """The sample rows taken at or after ``since`` (at least the last one)."""
    if samples is None or since is None or not samples.t_s:
        return samples
    rows = len(samples.t_s)
    first = min(bisect.bisect_left(samples.t_s, since), rows - 1)
    if first <= 0:
        return samples
    kept = _tail(samples, rows, first)
    host = _tail(samples.host, rows, first) if samples.host is not None else None
    gpus = []
    for gpu in samples.gpus:
        cut = _tail(gpu, rows, first)
        if gpu.gpm is not None:
            cut = msgspec.structs.replace(cut, gpm=_tail(gpu.gpm, rows, first))
        gpus.append(cut)
    return msgspec.structs.replace(kept, host=host, gpus=gpus, sample_count=sum(kept.rows_merged))


def _tail(struct: _S, rows: int, first: int) -> _S:
    """A copy of ``struct`` with every list field that holds one entry per row (``rows`` long)
    cut to its rows from ``first`` on. ``Samples.gpus`` (one entry per GPU) is left alone by
    the caller's choice of structs: every list of the series structs is per row."""
    changes: dict[str, Any] = {}
    for name in struct.__struct_fields__:
        value = getattr(struct, name)
        if isinstance(value, list) and len(value) == rows and name != "gpus":
            changes[name] = value[first:]
    return msgspec.structs.replace(struct, **changes)

"""Training steps in a trace: where they are, and what each one's time went to.

Where: ``ProfilerStep#N`` annotations (``profiler-step``). Without them (profiling by hand,
``with profile():`` around a loop), the fallback (``fallback``) takes, in this order:

1. the ends of the ``Optimizer.step#...`` regions as step boundaries (one update, one step), the
   first step starting with the training process's first host event;
2. a repeated top-level ``record_function`` annotation of the training process (the one
   covering the most time), each instance one step;
3. the whole trace as one step.

What: each step's wall time is split into a :class:`~torchdiag.record.BreakdownMs` by
prioritised interval layers (:func:`~torchdiag.traces.intervals.partition`, computed in one
streaming pass by :mod:`~torchdiag.traces.sweep`), and the per-step counters are taken in the
same window: kernels (by GPU start), kernel-launch calls, DataLoader time, synchronisations.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import chain, compress, groupby
from operator import itemgetter

from torchdiag.record import MAX_DURATION_MS, BreakdownMs, TraceStep
from torchdiag.traces.events import Interner
from torchdiag.traces.intervals import Intervals, length_in
from torchdiag.traces.spill import ColumnLog, SpillDir, sort_rows

__all__ = ["Annotations", "StepWindow", "build_steps", "fallback_windows", "profiler_windows"]

StepWindow = tuple[int, float, float]  # (number, start µs, end µs)
ThreadKey = tuple[int | str, int | str]
# (syncs, sync ms, idle-after-sync ms) for a window [a, b)
SyncFigures = Callable[[float, float], tuple[int, float, float]]


class Annotations:
    """``user_annotation`` intervals (thread, start, end, name) as spillable columns: for the
    repeated-annotation fallback and for counting the host events in windows."""

    def __init__(self, spill: SpillDir, rows: int) -> None:
        self.names = Interner()
        self._threads: dict[ThreadKey, int] = {}
        self._keys: list[ThreadKey] = []
        self._spill = spill
        self.log = ColumnLog("lddl", spill, rows)  # thread index, start, end, name id

    def add(self, name: str, key: ThreadKey, ts: float, end: float) -> None:
        """One annotation on thread ``key``."""
        thread = self._threads.get(key)
        if thread is None:
            thread = self._threads[key] = len(self._keys)
            self._keys.append(key)
        threads, starts, ends, names = self.log.cols
        threads.append(thread)
        starts.append(ts)
        ends.append(end)
        names.append(self.names.intern(name))

    def _of(self, pid: int | str | None) -> frozenset[int]:
        return frozenset(t for t, (p, _) in enumerate(self._keys) if p == pid)

    def starts_of(self, pid: int | str | None) -> Iterator[Iterable[float]]:
        """Per block of the columns: the starts of process ``pid``'s annotations."""
        wanted = self._of(pid)
        for threads, starts, _, _ in self.log.blocks():
            yield compress(starts, map(wanted.__contains__, threads))

    def first_start(self, pid: int | str | None) -> float | None:
        """The earliest annotation of process ``pid``, if it has any."""
        return min(chain.from_iterable(self.starts_of(pid)), default=None)

    def repeated_top_level(self, pid: int | str | None) -> list[tuple[float, float]]:
        """Instances of process ``pid``'s repeated outermost annotation (most time covered)."""
        wanted = self._of(pid)
        rows = chain.from_iterable(
            # per thread (in order of first sight): by start, longer first, then arrival
            compress(
                zip(
                    threads,
                    starts,
                    map(operator.neg, ends),
                    range(first, first + len(starts)),
                    names,
                    strict=True,
                ),
                map(wanted.__contains__, threads),
            )
            for first, (threads, starts, ends, names) in self.log.numbered_blocks()
        )
        spans: dict[int, list[tuple[float, float]]] = {}
        ordered = sort_rows(rows, "<qddqq", self._spill, self.log.rows)
        for _, thread_rows in groupby(ordered, key=itemgetter(0)):
            outer_end = float("-inf")
            for _, ts, neg_end, _, nid in thread_rows:
                if ts >= outer_end:  # not inside the previous outermost annotation
                    outer_end = -neg_end
                    spans.setdefault(nid, []).append((ts, outer_end))
        best: list[tuple[float, float]] = []
        best_key = (0.0, "")
        for nid, found in spans.items():
            if len(found) < 2:
                continue
            key = (sum(e - s for s, e in found), self.names.names[nid])
            if key > best_key:
                best, best_key = sorted(found), key
        return best


def fallback_windows(
    optimizer_ends: Sequence[float],
    annotations: Annotations,
    main_pid: int | str | None,
    host_start: float,
    t_min: float,
    t_max: float,
) -> tuple[list[StepWindow], str]:
    """Step windows without ``ProfilerStep#`` markers, and which rule found them.

    The rule is ``"optimizer"``, ``"annotation"``, ``"trace"`` (whole trace) or ``"none"``.
    """
    if optimizer_ends:
        bounds = [min(host_start, optimizer_ends[0]), *optimizer_ends]
        windows = [
            (k, bounds[k], bounds[k + 1])
            for k in range(len(optimizer_ends))
            if bounds[k + 1] > bounds[k]
        ]
        if windows:
            return windows, "optimizer"
    repeated = annotations.repeated_top_level(main_pid)
    if repeated:
        return [(k, s, e) for k, (s, e) in enumerate(repeated)], "annotation"
    if t_max > t_min:
        return [(0, t_min, t_max)], "trace"
    return [], "none"


def build_steps(
    windows: Sequence[StepWindow],
    parts_us: Sequence[Sequence[float]],
    has_gpu: bool,
    *,
    kernels: Sequence[int],
    launches: Sequence[int],
    ops: Sequence[int],
    loader: Intervals,
    syncs: SyncFigures,
) -> list[TraceStep]:
    """One :class:`TraceStep` per window.

    ``parts_us`` is each window's :func:`~torchdiag.traces.intervals.partition` (as
    :func:`~torchdiag.traces.sweep.partitions` computes it) among, with GPU activity:
    communication, compute, memcpy, memset, DataLoader, host runtime, host operators; without:
    DataLoader, host operators. ``kernels``, ``launches`` and ``ops`` are the kernels started, the
    kernel-launch calls made and the operators started in each window; ``loader`` is the
    training process's DataLoader time.
    """
    steps = []
    for (number, start, end), window_parts, n_kernels, n_launches, n_ops in zip(
        windows, parts_us, kernels, launches, ops, strict=True
    ):
        parts = [p / 1000 for p in window_parts]
        wall = (end - start) / 1000
        if has_gpu:
            comm, compute, memcpy, memset, loader_idle, runtime, host = parts[:7]
            known = (comm, compute, memcpy, memset, loader_idle, runtime, host)
            breakdown = BreakdownMs(
                wall=wall,
                compute=compute,
                memcpy=memcpy,
                memset=memset,
                communication=comm,
                input_wait=loader_idle,
                host_runtime=runtime,
                idle_host_wait=host,
                idle_other=max(0.0, wall - sum(known)),
            )
            busy = comm + compute + memcpy + memset
        else:
            loader_idle, host = parts[:2]
            breakdown = BreakdownMs(
                wall=wall,
                input_wait=loader_idle,
                cpu_only=host,
                idle_other=max(0.0, wall - loader_idle - host),
            )
            busy = 0.0
        n_syncs, sync_ms, idle_after = syncs(start, end)
        steps.append(
            TraceStep(
                number=number,
                start_us=start,
                duration_ms=wall,
                breakdown=breakdown,
                kernels=n_kernels,
                gpu_busy_ms=busy,
                dataloader_ms=length_in(loader, start, end) / 1000,
                launches=n_launches,
                ops=n_ops,
                syncs=n_syncs,
                sync_ms=sync_ms,
                idle_after_sync_ms=idle_after,
            )
        )
    return steps


def profiler_windows(
    found: Mapping[int, tuple[float, float, int | str]],
) -> tuple[list[StepWindow], list[str]]:
    """``ProfilerStep#N`` windows by step number, and the steps left out, each named with why.

    ``found`` maps N to (start, duration, pid). A span with a negative, non-finite or absurdly
    long (:data:`~torchdiag.record.MAX_DURATION_MS`) duration, or a non-finite start, cannot be
    true, and a step built on it would report a negative or NaN step time
    as if it were measured: such steps are skipped and named instead, as a run record with such
    a duration is rejected (:func:`torchdiag.record.decode_record`).
    """
    windows: list[StepWindow] = []
    skipped: list[str] = []
    days = MAX_DURATION_MS / 86_400_000
    for n, (ts, dur, _) in sorted(found.items()):
        if not math.isfinite(ts) or not math.isfinite(dur):
            skipped.append(f"ProfilerStep#{n} (start {ts!r} µs, duration {dur!r} µs: not finite)")
        elif dur < 0:
            skipped.append(f"ProfilerStep#{n} (duration {dur:g} µs: negative)")
        elif dur > MAX_DURATION_MS * 1000:
            skipped.append(f"ProfilerStep#{n} (duration {dur:g} µs: longer than {days:.1f} days)")
        else:
            windows.append((n, ts, ts + dur))
    return windows, skipped

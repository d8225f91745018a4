"""The global passes that turn a :class:`~torchdiag.traces.summary.SummaryBuilder`'s columns
into a :class:`~torchdiag.record.TraceSummary`.

The builder's columns (:class:`~torchdiag.traces.spill.ColumnLog`) may have spilled to disk, so
every pass reads them block by block or sorted (:func:`~torchdiag.traces.spill.sort_rows`), and
keeps only what it aggregates: a stack of open operators, the open component of each union, a
few numbers per step. In order:

1. the training process and its step windows;
2. host events in the steps and DataLoader waits, counted from unsorted blocks
   (:func:`~torchdiag.traces.window.counts_below`);
3. kernels joined to their launching runtime calls by correlation id
   (:mod:`~torchdiag.traces.launches`), feeding the nesting of each thread's operators
   (:mod:`~torchdiag.traces.operators`);
4. one sweep in time order over every breakdown layer (:mod:`~torchdiag.traces.sweep`): each
   step's partition, the window's GPU figures, the GPU idle gap after each synchronisation, the
   collective time per step;
5. per-step counts, launch and kernel statistics from sorted durations, memory timelines.
"""

from __future__ import annotations

import math
import operator
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import chain, compress, repeat
from typing import Any

from torchdiag.record import TraceSummary
from torchdiag.traces.batch import BatchSizes
from torchdiag.traces.copies import CopyStats
from torchdiag.traces.coverage import coverage_notes, step_notes
from torchdiag.traces.decode import TraceError
from torchdiag.traces.formats import (
    DurationPairs,
    device_kind,
    devices_from_metadata,
    distributed_info,
    format_name,
)
from torchdiag.traces.intervals import merge_intervals
from torchdiag.traces.kernel_table import KernelTable
from torchdiag.traces.launches import LaunchFigures, launch_totals
from torchdiag.traces.markers import count_markers
from torchdiag.traces.matrix import DtypeTime, Occupancy, math_stats
from torchdiag.traces.memory import MemorySamples
from torchdiag.traces.operators import OperatorStats
from torchdiag.traces.optimizer import OptimizerRegions, is_foreach_op
from torchdiag.traces.runtime import GRAPH_LAUNCH, KERNEL_LAUNCH
from torchdiag.traces.spill import ColumnLog, SpillDir, sort_floats, sort_rows
from torchdiag.traces.steps import Annotations, build_steps, fallback_windows, profiler_windows
from torchdiag.traces.sweep import (
    Gaps,
    LengthIn,
    LengthsIn,
    TotalLength,
    Union,
    WindowLengths,
    partitions,
    sweep,
)
from torchdiag.traces.syncs import SyncTracker
from torchdiag.traces.window import WeightedBelow, counts_below, profiler_event_us, step_span

__all__ = ["COMMUNICATION", "COMPUTE", "MEMCPY", "MEMSET", "TOP_N", "SummaryPasses"]

TOP_N = 50
# GPU interval kinds in attribution priority: overlapping activity counts once, for the first.
COMMUNICATION, COMPUTE, MEMCPY, MEMSET = 0, 1, 2, 3

ThreadKey = tuple[int | str, int | str]


class SummaryPasses:
    """The global passes, as the part of :class:`~torchdiag.traces.summary.SummaryBuilder`
    that runs once the events are in (:meth:`_finish`)."""

    # What the builder accumulated (see SummaryBuilder.__init__).
    origin: str
    event_count: int
    t_min: float
    t_max: float
    legacy_categories: bool
    autograd_legacy: bool
    pairs: DurationPairs
    dtypes: DtypeTime
    ops: ColumnLog
    operators: OperatorStats
    kernels: KernelTable
    runtime: ColumnLog
    gpu: ColumnLog
    launched_us: float
    occupancy: Occupancy
    copies: CopyStats
    syncs: SyncTracker
    optimizer: OptimizerRegions
    annotations: Annotations
    batch: BatchSizes
    collectives: ColumnLog
    memory: MemorySamples
    loader_iterators: Counter[str]
    step_source: str
    _rows: int
    _spill: SpillDir
    _thread_keys: list[ThreadKey]
    _runtime_kinds: dict[str, int]
    _streams: set[tuple[int | str, int | str]]
    _steps: dict[int, tuple[float, float, int | str]]
    _skipped_steps: list[str]
    _loader_s: array[float]
    _loader_e: array[float]
    _loader_pid: list[int | str]
    _annotation_calls: Counter[str]

    def _finish(self, meta: dict[str, Any], form: str, all_notes: list[str]) -> TraceSummary:
        op_counts = Counter[int]()
        for block in self.ops.blocks():
            op_counts.update(block[0])
        main_pid = self._main_pid(op_counts)
        main = frozenset(t for t, (pid, _) in enumerate(self._thread_keys) if pid == main_pid)
        windows = self._windows(main_pid, main)
        span = step_span(windows)
        op_names = self.operators.names.names
        host_events = loader_events = 0
        loader = merge_intervals(
            self._loader_s,
            self._loader_e,
            (i for i, p in enumerate(self._loader_pid) if p == main_pid),
        )
        # Waits for the DataLoader inside the steps: events recorded there (a loader without
        # workers runs the dataset in this process) inflate the wait, not the rest of the step.
        loader_waits = (
            [(a, b) for a, b in zip(*loader, strict=True) if span[0] <= a < span[1]]
            if span is not None
            else []
        )
        if span is not None:
            # Operators, runtime calls and annotations of the training process in the steps and
            # in the waits.
            below = counts_below(
                chain(
                    _starts_of(self.ops, main),
                    _starts_of(self.runtime, main),
                    self.annotations.starts_of(main_pid),
                ),
                [*span, *chain.from_iterable(loader_waits)],
            )
            host_events += below[span[1]] - below[span[0]]
            loader_events += sum(below[b] - below[a] for a, b in loader_waits)

        launch = LaunchFigures()
        queue = ColumnLog("d", self._spill, self._rows)
        order = self._thread_order()
        launched = [math.inf, -math.inf]
        # Sorted per thread, by start, then arrival (the nesting order); sorting consumes the
        # join, so `queue`, `launch` and `launched` are complete once it returns.
        calls = sort_rows(
            self._launching_calls(main, span, order, launch, queue, launched),
            "<qdqddd",
            self._spill,
            self._rows,
        )
        top = ColumnLog("dd", self._spill, self._rows)
        after, attributed = self.operators.nest(
            self._sorted_ops(order), calls, frozenset(order[t] for t in main), top
        )
        unattributed_us = max(0.0, self.launched_us - attributed)
        has_gpu_activity = len(self.gpu) > 0
        # The profiler's stop-time sync comes after the training process's last operator (the
        # end of its last top-level one) and, with ProfilerStep markers, after the last step.
        if self.step_source == "profiler" and windows:
            after = max(after, windows[-1][2])
        self.syncs.find_profiler_stop(main_pid, after)
        main_syncs = self.syncs.main_calls(main_pid)

        window_ms = window_busy_ms = window_comm_ms = window_overlap_ms = window_span_ms = 0.0
        window = None
        if span is not None:
            start, end = span[0], max(span[1], launched[1])
            window_ms = (end - start) / 1000
            # GPU work of the steps: from the first kernel they launched to the last. Before the
            # first one starts, a full launch queue still runs kernels of earlier steps.
            window = (launched[0] if launched[0] < end else start, end)
            window_span_ms = (window[1] - window[0]) / 1000
        # Every time layer folded into unions in one pass (sweep.py): per step, the union of
        # each prefix of the layers (partition); over the window, the GPU's busy, communication
        # and compute time; the GPU idle gap after each synchronisation; all GPU time.
        step_windows = [(a, b) for _, a, b in windows]
        layers = 7 if has_gpu_activity else 2
        prefixes = [WindowLengths(step_windows) for _ in range(layers)]
        unions = [Union([p]) for p in prefixes]
        feeds: list[list[Union]] = [unions[k:] for k in range(layers)]
        gaps = Gaps(self.syncs.main_ends(main_syncs))
        gpu_total = TotalLength()
        in_window = [LengthIn(*window) for _ in range(4)] if window is not None else []
        if has_gpu_activity:
            busy, comm, either = unions[MEMSET], unions[COMMUNICATION], unions[COMPUTE]
            busy.sinks += [gpu_total, gaps]
            if in_window:
                busy.sinks.append(in_window[0])
                comm.sinks.append(in_window[1])
                either.sinks.append(in_window[3])
                # Compute alone, first: it covers less than the prefixes after it (a chain).
                feeds[COMPUTE].insert(0, Union([in_window[2]]))
        # Collective calls (host annotations): their union in each step, as a layer of its own.
        collectives = LengthsIn([(a, a + ((b - a) / 1000) * 1000) for a, b in step_windows])
        feeds.append([Union([collectives])])
        sweep(self._layer_rows(main, loader, top, has_gpu_activity), feeds, self._rows)
        if in_window:
            window_busy_ms = in_window[0].length / 1000
            # Communication and how much of it ran while compute kernels ran on other streams:
            # |comm| + |compute| - |comm or compute| is their overlap.
            window_comm_ms = in_window[1].length / 1000
            if window_comm_ms:
                either_ms = in_window[3].length / 1000
                both = window_comm_ms + in_window[2].length / 1000 - either_ms
                window_overlap_ms = max(0.0, min(window_comm_ms, both))

        bounds = [x for w in step_windows for x in w]
        kernels_below = counts_below(
            (compress(b[0], map(COMPUTE.__ge__, b[2])) for b in self.gpu.blocks()), bounds
        )
        # Operators the training process started in each step: an exact count (identical runs
        # give identical counts), unlike any time.
        ops_below = counts_below(_starts_of(self.ops, main), bounds)
        main_launch = frozenset((t, KERNEL_LAUNCH) for t in main)
        launches_below = counts_below(
            (
                compress(b[1], map(main_launch.__contains__, zip(b[0], b[4], strict=True)))
                for b in self.runtime.blocks()
            ),
            bounds,
        )
        steps = build_steps(
            windows,
            partitions(step_windows, prefixes),
            has_gpu_activity,
            kernels=[kernels_below[b] - kernels_below[a] for a, b in step_windows],
            launches=[launches_below[b] - launches_below[a] for a, b in step_windows],
            ops=[ops_below[b] - ops_below[a] for a, b in step_windows],
            loader=loader,
            syncs=lambda a, b: self.syncs.step_figures(main_syncs, a, b, gaps.found),
        )
        if len(self.collectives):
            for step, part in zip(steps, collectives.parts, strict=True):
                step.collective_ms = part.length / 1000
        detection = (
            "profiler-step" if self.step_source == "profiler" else "fallback" if steps else "none"
        )
        all_notes.extend(step_notes(self.step_source))
        skipped = self._skipped_steps
        if skipped:
            all_notes.append(
                f"{len(skipped)} ProfilerStep span(s) with an impossible duration skipped: "
                + "; ".join(skipped[:5])
                + (f"; and {len(skipped) - 5} more" if len(skipped) > 5 else "")
            )
        if unattributed_us >= 1.0:
            # Typically kernels launched before the window opened, still running in it.
            all_notes.append(
                f"kernel time with no launching operator in the trace: "
                f"{unattributed_us / 1000:.3f} ms"
            )
        devices = devices_from_metadata(meta)
        all_notes.extend(
            coverage_notes(
                events=self.event_count,
                operators=sum(self.operators.calls(i) for i in range(len(self.operators))),
                typed_operators=self.operators.typed_calls,
                shapes=self.operators.has_shapes(),
                devices=len(devices),
                gpu_activity=has_gpu_activity,
                kernels=len(self.kernels),
                runtime_calls=bool(self._runtime_kinds),
                unmatched_ends=self.pairs.unmatched_ends,
                open_begins=self.pairs.open_count,
            )
        )
        totals = self.kernels.totals_us()
        has_kernels = bool(len(self.kernels))
        kernel_count = self.kernels.count()
        top_kernels = self.kernels.top_ids(TOP_N, totals)
        # Sorting consumes the durations, which counts and sums the launches into `launch`.
        launch_durations = sort_floats(self._launch_durations(launch), self._spill, self._rows)
        launch_stats = launch.stats(
            launch_durations,
            sort_floats(_values(queue), self._spill, self._rows),
            len(queue),
            sort_floats(self._kernel_durations(), self._spill, self._rows),
            kernel_count,
        )
        rank, world_size, backend = distributed_info(meta)
        batch_size, batch_source = self.batch.result()
        return TraceSummary(
            origin=self.origin,
            format=format_name(
                meta,
                form,
                autograd_legacy=self.autograd_legacy,
                legacy_categories=self.legacy_categories,
                kineto_categories=bool(len(self.operators) or has_kernels or self._runtime_kinds),
            ),
            rank=rank,
            event_count=self.event_count,
            span_ms=(self.t_max - self.t_min) / 1000 if self.t_max >= self.t_min else 0.0,
            has_gpu=has_gpu_activity or bool(devices),
            device_kind=device_kind(devices, has_gpu_activity, self._runtime_kinds),
            devices=devices,
            step_detection=detection,  # type: ignore[arg-type]
            steps=steps,
            window_ms=window_ms,
            window_gpu_busy_ms=window_busy_ms,
            window_gpu_span_ms=window_span_ms,
            window_comm_ms=window_comm_ms,
            window_comm_overlap_ms=window_overlap_ms,
            host_events=host_events,
            loader_events=loader_events,
            profiler_event_us=profiler_event_us(self.operators.profiler_event_samples),
            kernel_count=kernel_count,
            kernel_time_ms=sum(totals) / 1000,
            gpu_busy_ms=gpu_total.total / 1000,
            top_ops=self.operators.top(TOP_N),
            top_kernels=self.kernels.top(
                top_kernels, totals, self.kernels.median_max(self._by_kernel(top_kernels))
            ),
            kernel_class_ms=self.kernels.class_ms(totals),
            memory=self.memory.timelines(),
            dataloader_iterators=dict(sorted(self.loader_iterators.items())),
            world_size=world_size,
            backend=backend,
            copies=self.copies.stats(),
            syncs=self.syncs.stats(main_pid, step_windows),
            launch=launch_stats if has_kernels or launch_stats.launches else None,
            math=math_stats(self.kernels.names.names, self.kernels.classes, totals, self.dtypes)
            if has_kernels
            else None,
            occupancy=self.occupancy.stats() if has_kernels else None,
            optimizer_steps=self.optimizer.stats(),
            batch_size=batch_size,
            batch_size_source=batch_source,
            streams=len(self._streams),
            markers=count_markers(
                chain(
                    ((n, self.operators.calls(i)) for i, n in enumerate(op_names)),
                    self._annotation_calls.items(),
                ),
                self.kernels.communication_count(),
                launch_stats.cuda_graph_launches,
            ),
            notes=all_notes,
            skipped_steps=skipped,
        )

    def _windows(
        self, main_pid: int | str | None, main: frozenset[int]
    ) -> list[tuple[int, float, float]]:
        """The step windows; sets :attr:`step_source`."""
        if self._steps:
            self.step_source = "profiler"
            windows, self._skipped_steps = profiler_windows(self._steps)
            if not windows:
                # Every step marker is impossible: no step time can be told, and a fallback
                # would present a guess where the trace claims exact steps.
                raise TraceError(
                    f"no ProfilerStep span with a possible duration (all {len(self._steps)} "
                    f"negative, not finite or absurdly long, e.g. {self._skipped_steps[0]})"
                )
            return windows
        host_starts = [min(chain.from_iterable(_starts_of(self.ops, main)), default=math.inf)]
        first_annotation = self.annotations.first_start(main_pid)
        if first_annotation is not None:
            host_starts.append(first_annotation)
        host_start = min(host_starts)
        windows, self.step_source = fallback_windows(
            self.optimizer.step_ends(main_pid),
            self.annotations,
            main_pid,
            host_start if host_start != math.inf else self.t_min,
            self.t_min,
            self.t_max,
        )
        return windows

    def _main_pid(self, op_counts: Mapping[int, int]) -> int | str | None:
        """The training process: the one that marks steps, else the one with most operators."""
        if self._steps:
            counts = Counter(pid for _, _, pid in self._steps.values())
        else:
            counts = Counter()
            for thread, (pid, _) in enumerate(self._thread_keys):
                counts[pid] += op_counts.get(thread, 0)
        return min(counts, key=lambda p: (-counts[p], str(p))) if counts else None

    def _thread_order(self) -> list[int]:
        """Per thread index, its place in the nesting order (threads sorted by key as text)."""
        place = [0] * len(self._thread_keys)
        ranked = sorted(range(len(self._thread_keys)), key=lambda t: str(self._thread_keys[t]))
        for at, thread in enumerate(ranked):
            place[thread] = at
        return place

    def _sorted_ops(self, order: Sequence[int]) -> Iterator[tuple[int, Iterator[Any]]]:
        """Each thread with operators, by its place in ``order``, with its operators as (start,
        -duration, arrival, name, dtype) sorted by start, longer first, then arrival (the
        nesting order). One sort per thread: rows starting with a float sort fastest."""
        counts = Counter[int]()
        for block in self.ops.blocks():
            counts.update(block[0])
        for thread in sorted(counts, key=order.__getitem__):
            rows = chain.from_iterable(
                compress(
                    zip(
                        ts,
                        map(operator.neg, dur),
                        range(start, start + len(ts)),
                        name,
                        dtype,
                        strict=True,
                    ),
                    map(thread.__eq__, threads),
                )
                for start, (threads, ts, dur, name, dtype) in self.ops.numbered_blocks()
            )
            yield order[thread], sort_rows(rows, "<ddqqq", self._spill, self._rows)

    def _launching_calls(
        self,
        main: frozenset[int],
        span: tuple[float, float] | None,
        order: Sequence[int],
        launch: LaunchFigures,
        queue: ColumnLog,
        launched: list[float],
    ) -> Iterator[tuple[int, float, int, float, float, float]]:
        """Join kernels to their runtime calls (both sorted by correlation id, then arrival).

        Yields the calls that launched kernels as (thread's place in ``order``, start, arrival,
        kernel µs, matrix µs, Triton µs). On the way, fills ``queue`` with the queueing delay of
        each kernel launch and ``launch`` with its short-kernel count, and counts the kernels
        each optimizer region launched; at the end, ``launched`` holds the (first start, last
        end) of the kernels the training process launched in ``span``.
        """
        kernels = chain.from_iterable(
            compress(
                zip(corr, range(start, start + len(ts)), ts, dur, name, strict=True),
                link,
            )
            for start, (ts, dur, _, name, corr, link) in self.gpu.numbered_blocks()
        )
        calls = chain.from_iterable(
            zip(corr, range(start, start + len(ts)), thread, ts, end, kind, strict=True)
            for start, (thread, ts, end, corr, kind) in self.runtime.numbered_blocks()
        )
        matrix, triton = self.kernels.flags()
        by_corr = sort_rows(kernels, "<qqddq", self._spill, self._rows)
        regions = {
            t: WeightedBelow(x for _, a, b in found for x in (a, b))
            for t, key in enumerate(self._thread_keys)
            if (found := self.optimizer.regions_on(key))
        }
        first, last = launched
        a, b = span if span is not None else (math.inf, -math.inf)
        (delays,) = queue.cols
        budget = queue.rows
        short = 0
        # Merge join: both sides sorted by correlation id (a launch per id, calls any number).
        launch_of = launch_totals(by_corr, matrix, triton)
        k = next(launch_of, None)
        for corr, seq, thread, ts, end, kind in sort_rows(
            calls, "<qqqddq", self._spill, self._rows
        ):
            while k is not None and k[0] < corr:
                k = next(launch_of, None)
            if k is None:
                break
            if k[0] != corr:
                continue  # a runtime call that launched no kernel
            _, first_ts, first_dur, gpu_us, kernels_n, last_end, math_us, triton_us = k
            yield order[thread], ts, seq, gpu_us, math_us, triton_us
            if regions:
                counter = regions.get(thread)
                if counter is not None:
                    counter.add(ts, kernels_n)
            if a <= ts < b and thread in main:
                if first_ts < first:
                    first = first_ts
                k_end = first_ts + first_dur
                if kernels_n > 1 and last_end > k_end:  # a graph's kernels may end later
                    k_end = last_end
                if k_end > last:
                    last = k_end
            if kind == KERNEL_LAUNCH:
                delays.append(first_ts - ts)
                if len(delays) >= budget:
                    queue.check()
                if kernels_n == 1 and first_dur < end - ts:
                    short += 1
        launch.short = short
        launched[:] = [first, last]
        if regions:
            self._count_regions(regions)

    def _count_regions(self, kernels: Mapping[int, WeightedBelow]) -> None:
        """What each optimizer region contains: operators, foreach operators, kernels."""
        foreach = [is_foreach_op(n) for n in self.operators.names.names]
        for thread, counter in kernels.items():
            mine = [thread]
            ops = counts_below(_starts_of(self.ops, mine), counter.bounds)
            foreach_ops = counts_below(
                (
                    compress(
                        compress(ts, map(thread.__eq__, threads)),
                        map(foreach.__getitem__, compress(names, map(thread.__eq__, threads))),
                    )
                    for threads, ts, _, names, _ in self.ops.blocks()
                ),
                counter.bounds,
            )
            self.optimizer.count_thread(
                self._thread_keys[thread], ops, foreach_ops, counter.below()
            )

    def _launch_durations(self, launch: LaunchFigures) -> Iterator[float]:
        """Host time of every kernel-launch call (µs), thread by thread; sums them into
        ``launch`` in that order (threads in order of first sight, calls in arrival order)."""
        launchers: set[int] = set()
        for threads, _, _, _, kinds in self.runtime.blocks():
            launch.graphs += kinds.count(GRAPH_LAUNCH)
            launchers.update(compress(threads, map(KERNEL_LAUNCH.__eq__, kinds)))
        for thread in sorted(launchers):
            wanted = (thread, KERNEL_LAUNCH)
            for threads, ts, end, _, kinds in self.runtime.blocks():
                picked = list(map(wanted.__eq__, zip(threads, kinds, strict=True)))
                took = list(map(operator.sub, compress(end, picked), compress(ts, picked)))
                launch.launches += len(took)
                launch.launch_us = sum(took, launch.launch_us)
                yield from took

    def _kernel_durations(self) -> Iterator[float]:
        """Every kernel's duration (µs), in no particular order."""
        for _, dur, _, name, _, _ in self.gpu.blocks():
            yield from compress(dur, map((-1).__lt__, name))  # copies and memsets have -1

    def _by_kernel(self, ids: Sequence[int]) -> Iterator[tuple[int, float]]:
        """(name id, duration) of the kernels named ``ids``, sorted by both."""
        wanted = frozenset(ids)
        rows = chain.from_iterable(
            compress(zip(name, dur, strict=True), map(wanted.__contains__, name))
            for _, dur, _, name, _, _ in self.gpu.blocks()
        )
        return sort_rows(rows, "<qd", self._spill, self._rows)

    def _layer_rows(
        self,
        main: frozenset[int],
        loader: tuple[list[float], list[float]],
        top: ColumnLog,
        has_gpu: bool,
    ) -> Iterator[tuple[float, float, int]]:
        """Every interval of the breakdown's layers as (start, end, layer), sorted by start.

        Layers with GPU activity: communication, compute, memcpy, memset (the GPU kinds),
        DataLoader, host runtime, host operators; without: DataLoader, host operators. Then the
        collective calls.
        """
        host = 6 if has_gpu else 1
        sources: list[Iterable[tuple[float, float, int]]] = [
            zip(loader[0], loader[1], repeat(host - 2 if has_gpu else 0)),
            chain.from_iterable(zip(s, e, repeat(host)) for s, e in top.blocks()),
            # collective calls: the layer after the breakdown's
            chain.from_iterable(zip(s, e, repeat(host + 1)) for s, e in self.collectives.blocks()),
        ]
        if has_gpu:
            sources.append(
                chain.from_iterable(
                    zip(ts, map(operator.add, ts, dur), kind, strict=True)
                    for ts, dur, kind, _, _, _ in self.gpu.blocks()
                )
            )
            sources.append(
                chain.from_iterable(
                    compress(zip(ts, end, repeat(5)), map(main.__contains__, threads))
                    for threads, ts, end, _, _ in self.runtime.blocks()
                )
            )
        return sort_rows(chain.from_iterable(sources), "<ddq", self._spill, self._rows)


def _starts_of(log: ColumnLog, threads: Iterable[int]) -> Iterator[Iterable[float]]:
    """Per block of an operator or runtime log: the starts of the rows on ``threads``."""
    wanted = frozenset(threads)
    for block in log.blocks():
        yield compress(block[1], map(wanted.__contains__, block[0]))


def _values(log: ColumnLog) -> Iterator[float]:
    """The values of a one-column log."""
    for (values,) in log.blocks():
        yield from values

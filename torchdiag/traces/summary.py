"""Events to :class:`~torchdiag.record.TraceSummary`: aggregate per chunk, then a few global passes.

:class:`SummaryBuilder` receives the decoder's chunks one at a time and never keeps events. What
can be aggregated on the fly is (call counts, input dtypes/shapes, copies, occupancy, DataLoader
iterators, steps, batch shapes). What needs the whole trace, because real traces are not sorted
by time, is kept as columns of numbers (``array``): operator and runtime intervals per host
thread, GPU intervals, kernel durations per name and per launch, synchronising calls, allocator
samples. :meth:`SummaryBuilder.finish` then

- nests each thread's operators by time containment (self time) and walks the runtime calls that
  launched kernels through that nesting (GPU time per operator, dtype of each matrix kernel):
  :mod:`~torchdiag.traces.operators`;
- finds the steps (:mod:`~torchdiag.traces.steps`), builds the union of GPU activity per kind
  and splits every step's wall time into a :class:`~torchdiag.record.BreakdownMs` whose parts add
  up to the wall time (:mod:`~torchdiag.traces.intervals`), with per-step launches, DataLoader
  time and synchronisations (:mod:`~torchdiag.traces.syncs`);
- derives launch, matrix-math, occupancy, optimizer and batch figures
  (:mod:`~torchdiag.traces.launches`, :mod:`~torchdiag.traces.matrix`,
  :mod:`~torchdiag.traces.optimizer`, :mod:`~torchdiag.traces.batch`);
- downsamples the allocator samples to memory timelines (:mod:`~torchdiag.traces.memory`).

Dialect differences (old categories, string ids, B/E pairs, the pre-Kineto autograd profiler)
are folded as events arrive (:mod:`~torchdiag.traces.formats`). Times in the trace are
microseconds; the summary reports milliseconds (and µs where named so).
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Mapping, Sequence
from itertools import chain, compress
from typing import Any

import msgspec

from torchdiag.record import TraceSummary
from torchdiag.traces.batch import BATCH_OPS, BatchSizes
from torchdiag.traces.copies import CopyStats
from torchdiag.traces.coverage import coverage_notes, step_notes
from torchdiag.traces.events import (
    Event,
    GpuArgs,
    GpuColumns,
    RuntimeArgs,
    ThreadColumns,
)
from torchdiag.traces.formats import (
    AUTOGRAD_CPU_PID,
    AUTOGRAD_CUDA_PID,
    CATEGORY_ALIASES,
    GPU_CATEGORIES,
    RUNTIME_CATEGORIES,
    DurationPairs,
    device_kind,
    devices_from_metadata,
    distributed_info,
    format_name,
    norm_id,
)
from torchdiag.traces.intervals import Intervals, length, length_in, merge_intervals, union
from torchdiag.traces.kernel_table import KernelTable
from torchdiag.traces.launches import KernelLaunches, launch_starts
from torchdiag.traces.markers import count_markers
from torchdiag.traces.matrix import DtypeTime, Occupancy, math_stats
from torchdiag.traces.memory import MemorySamples
from torchdiag.traces.operators import OperatorStats
from torchdiag.traces.optimizer import OPTIMIZER_PREFIX, OptimizerRegions
from torchdiag.traces.runtime import SYNC, runtime_kind
from torchdiag.traces.steps import Annotations, build_steps, fallback_windows, profiler_windows
from torchdiag.traces.syncs import SyncTracker, is_sync_op
from torchdiag.traces.window import profiler_event_us, step_span, thread_events_in

__all__ = ["SummaryBuilder", "devices_from_metadata"]

STEP_PREFIX = "ProfilerStep#"
DATALOADER_PREFIX = "enumerate(DataLoader)"
# Collectives as torch.distributed's process groups annotate them on the host ("gloo:all_reduce",
# "nccl:all_reduce" ...): from the call until the collective completed, waits for other ranks
# included.
COLLECTIVE_PREFIXES = ("gloo:", "nccl:", "ucc:", "mpi:", "xccl:")
_ANNOTATION_PREFIXES = (STEP_PREFIX, DATALOADER_PREFIX, OPTIMIZER_PREFIX)
TOP_N = 50

# GPU interval kinds in attribution priority: overlapping activity counts once, for the first.
COMMUNICATION, COMPUTE, MEMCPY, MEMSET = 0, 1, 2, 3
# Event phases other than complete ("X") events that matter: instants, begin/end pairs.
_OTHER_PHASES = frozenset({"i", "I", "B", "E"})
# Per-operator-name flags, computed once per distinct name.
_SYNC_OP, _BATCH_OP = 1, 2

ThreadKey = tuple[int | str, int | str]


def _op_flags(name: str) -> int:
    """The bookkeeping an operator name needs beyond the operator table (0 for most)."""
    return (_SYNC_OP if is_sync_op(name) else 0) | (_BATCH_OP if name in BATCH_OPS else 0)


# Decoded for every runtime call / kernel: bound once, called without the decode_args detour.
_RUNTIME_ARGS = msgspec.json.Decoder(RuntimeArgs)
_GPU_ARGS = msgspec.json.Decoder(GpuArgs)


class SummaryBuilder:
    """Accumulates event chunks (:meth:`add`) into a :class:`TraceSummary` (:meth:`finish`)."""

    def __init__(self, origin: str = "") -> None:
        self.origin = origin
        self.event_count = 0
        self.t_min = math.inf
        self.t_max = -math.inf
        # Dialect evidence (see formats.format_name).
        self.legacy_categories = False
        self.autograd_legacy = False
        self.pairs = DurationPairs()
        self.dtypes = DtypeTime()
        self.operators = OperatorStats(self.dtypes)
        self._op_flags: list[int] = []
        self.kernels = KernelTable()
        self.threads: dict[ThreadKey, ThreadColumns] = {}
        # (pid, tid) as the event spelled them -> (normalised key, columns): one dict lookup per
        # event instead of normalising ids every time.
        self._raw_threads: dict[tuple[Any, Any], tuple[ThreadKey, ThreadColumns]] = {}
        self._runtime_kinds: dict[str, int] = {}
        self.gpu = GpuColumns()
        self.launches = KernelLaunches()
        self.occupancy = Occupancy()
        self.copies = CopyStats()
        self.syncs = SyncTracker()
        self.optimizer = OptimizerRegions()
        self.annotations = Annotations()
        self.batch = BatchSizes()
        self._streams: set[tuple[int | str, int | str]] = set()
        self._steps: dict[int, tuple[float, float, int | str]] = {}
        self._loader_s = array("d")
        self._loader_e = array("d")
        self._collective_s = array("d")
        self._collective_e = array("d")
        self._loader_pid: list[int | str] = []
        self.loader_iterators: Counter[str] = Counter()
        self._annotation_calls: Counter[str] = Counter()
        self.memory = MemorySamples()
        # How the steps were found: "profiler", "optimizer", "annotation", "trace" or "none".
        self.step_source = "none"

    # -- streaming -------------------------------------------------------------------------

    def add(self, events: Sequence[Event]) -> None:
        """Fold one chunk of events in; the builder keeps no reference to them."""
        self.event_count += len(events)
        t_min, t_max = self.t_min, self.t_max
        alias = CATEGORY_ALIASES.get
        raw_threads = self._raw_threads.get
        add_op = self.operators.add
        op_flags = self._op_flags
        runtime_kinds = self._runtime_kinds
        decode_runtime = _RUNTIME_ARGS.decode
        kernel_info = self.kernels.info
        decode_gpu = _GPU_ARGS.decode
        add_launch = self.launches.add
        streams = self._streams
        gpu_ts, gpu_end, gpu_kind = self.gpu.ts, self.gpu.end, self.gpu.kind
        occupancy_sums = self.occupancy
        occ_n, fill, fill_w, occ, occ_w = (
            occupancy_sums.kernels,
            occupancy_sums.fill,
            occupancy_sums.fill_weight,
            occupancy_sums.occ,
            occupancy_sums.occ_weight,
        )
        paired: list[Event] = []
        for ev in events:
            ph = ev.ph
            if ph == "X":
                cat = ev.cat
                mapped = alias(cat)
                if mapped is not None:
                    cat = mapped
                    self.legacy_categories = True
                elif not cat:
                    cat = self._uncategorised(ev)
                ts = ev.ts
                end = ts + ev.dur
                if ts < t_min:
                    t_min = ts
                if end > t_max:
                    t_max = end
                if cat == "cpu_op":
                    # Inline (the most frequent event): thread lookup, operator, rare extras.
                    # Annotations recorded as operators (older PyTorch): a step is no operator.
                    if ev.name.startswith(_ANNOTATION_PREFIXES) and self._annotation(
                        ev, user=False
                    ):
                        continue
                    raw = (ev.pid, ev.tid)
                    found = raw_threads(raw)
                    key, th = found if found is not None else self._thread(raw)
                    nid = add_op(ev, th)
                    if nid == len(op_flags):
                        op_flags.append(_op_flags(ev.name))
                    if op_flags[nid]:
                        self._flagged_op(ev, op_flags[nid], key, end)
                elif cat == "kernel":
                    # Inline (the third most frequent): per-name durations, the launch join,
                    # occupancy sums kept in locals for the chunk, the GPU interval.
                    info = kernel_info(ev.name)
                    dur = ev.dur
                    info.durations.append(dur)
                    try:
                        args: GpuArgs | None = decode_gpu(ev.args)
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        args = None
                    if args is not None:
                        if args.correlation is not None:
                            add_launch(args.correlation, ts, dur, info.matrix, info.triton)
                        bps = args.blocks_per_sm
                        if bps is not None and bps >= 0:
                            occ_n += 1
                            fill += dur * (bps if bps < 1.0 else 1.0)
                            fill_w += dur
                        occupancy = args.occupancy
                        if occupancy is not None and occupancy >= 0:
                            occ += dur * occupancy
                            occ_w += dur
                    streams.add((ev.pid, ev.tid))
                    gpu_ts.append(ts)
                    gpu_end.append(end)
                    gpu_kind.append(COMMUNICATION if info.communication else COMPUTE)
                elif cat in GPU_CATEGORIES:
                    self._gpu(ev, cat, end)
                elif cat in RUNTIME_CATEGORIES:
                    # Inline too (the second most frequent event): the call's columns.
                    raw = (ev.pid, ev.tid)
                    found = raw_threads(raw)
                    key, th = found if found is not None else self._thread(raw)
                    try:
                        corr = decode_runtime(ev.args).correlation
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        corr = None
                    kind = runtime_kinds.get(ev.name)
                    if kind is None:
                        kind = runtime_kinds[ev.name] = runtime_kind(ev.name)
                    th.rt_ts.append(ts)
                    th.rt_end.append(end)
                    th.rt_corr.append(-1 if corr is None else corr)
                    th.rt_kind.append(kind)
                    if kind == SYNC:
                        self.syncs.add_call(ev.name, key, ts, end)
                elif cat == "user_annotation":
                    self._annotation(ev, user=True)
            elif ph in _OTHER_PHASES:  # one test for the many flow events ("s", "f") too
                if ph == "B":
                    self.pairs.begin(ev)
                elif ph == "E":
                    done = self.pairs.end(ev)
                    if done is not None:
                        paired.append(done)
                else:  # instant events
                    ts = ev.ts
                    if ts < t_min:
                        t_min = ts
                    if ts > t_max:
                        t_max = ts
                    if ev.name == "[memory]":
                        self.memory.add(ev)
        self.t_min, self.t_max = t_min, t_max
        occupancy_sums.kernels, occupancy_sums.fill, occupancy_sums.fill_weight = (
            occ_n,
            fill,
            fill_w,
        )
        occupancy_sums.occ, occupancy_sums.occ_weight = occ, occ_w
        if paired:
            # The pairs' X events are not new trace events: count them once, as their B/E.
            self.event_count -= len(paired)
            self.add(paired)

    def _uncategorised(self, ev: Event) -> str:
        """The category of an event written without one (the pre-Kineto autograd profiler)."""
        if ev.pid == AUTOGRAD_CPU_PID:
            self.autograd_legacy = True
            return "cpu_op"
        if ev.pid == AUTOGRAD_CUDA_PID:
            self.autograd_legacy = True
            return "kernel"
        return ""

    def _thread(self, raw: tuple[Any, Any]) -> tuple[ThreadKey, ThreadColumns]:
        """The normalised key and the columns of the thread an event's (pid, tid) names."""
        key = (norm_id(raw[0]), norm_id(raw[1]))
        th = self.threads.get(key)
        if th is None:
            th = self.threads[key] = ThreadColumns()
        found = self._raw_threads[raw] = (key, th)
        return found

    def _flagged_op(self, ev: Event, flags: int, key: ThreadKey, end: float) -> None:
        """The extra bookkeeping of operators that may synchronise or that consume the batch."""
        if flags & _SYNC_OP:
            self.syncs.add_op(ev.name, key, ev.ts, end)
        if flags & _BATCH_OP:
            self.batch.add(ev, key)

    def _annotation(self, ev: Event, *, user: bool) -> bool:
        """Record an annotation; True for a step (which is then not an operator)."""
        name = ev.name
        pid = norm_id(ev.pid)
        if name.startswith(STEP_PREFIX):
            try:
                number = int(name[len(STEP_PREFIX) :])
            except ValueError:
                return False
            known = self._steps.get(number)
            if known is None or ev.dur > known[1]:
                self._steps[number] = (ev.ts, ev.dur, pid)
            return True
        key = (pid, norm_id(ev.tid))
        end = ev.ts + ev.dur
        if name.startswith(COLLECTIVE_PREFIXES):
            self._collective_s.append(ev.ts)
            self._collective_e.append(end)
        if name.startswith(DATALOADER_PREFIX):
            self._loader_s.append(ev.ts)
            self._loader_e.append(end)
            self._loader_pid.append(pid)
            _, _, iterator = name.partition("#")
            self.loader_iterators[iterator.removesuffix(".__next__") or name] += 1
        elif name.startswith(OPTIMIZER_PREFIX):
            self.optimizer.add(name, key, ev.ts, end)
        if user:
            self._annotation_calls[name] += 1
            self.annotations.add(name, key, ev.ts, end)
        return False

    def _gpu(self, ev: Event, cat: str, end: float) -> None:
        """A copy or a memset (kernels are handled inline in :meth:`add`)."""
        if cat == "gpu_memcpy":
            kind = MEMCPY
            self.copies.add(ev)
        else:
            kind = MEMSET
        gpu = self.gpu
        gpu.ts.append(ev.ts)
        gpu.end.append(end)
        gpu.kind.append(kind)

    # -- global passes ---------------------------------------------------------------------

    def finish(
        self,
        metadata: Mapping[str, Any] | None = None,
        *,
        form: str = "object",
        notes: Sequence[str] = (),
    ) -> TraceSummary:
        """Run the global passes and build the summary.

        ``metadata`` are the file's top-level members other than ``traceEvents``, ``form`` is
        ``"object"`` or ``"array"`` (bare event list), ``notes`` are the decoder's remarks.
        """
        meta = dict(metadata or {})
        all_notes = list(notes)
        main_pid = self._main_pid()
        windows = self._windows(main_pid)
        span = step_span(windows)
        op_names = self.operators.names.names
        launched: list[tuple[float, float]] = []
        host_events = self.annotations.count_in(main_pid, *span) if span is not None else 0
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
        loader_events = sum(self.annotations.count_in(main_pid, a, b) for a, b in loader_waits)

        def visit(key: ThreadKey, th: ThreadColumns, order: list[int], calls: list[int]) -> None:
            # The nesting pass sorts every thread once; these reuse its sorted indices.
            nonlocal host_events, loader_events
            self.optimizer.count_thread(key, th, order, calls, op_names, self.launches)
            if span is not None and key[0] == main_pid:
                host_events += thread_events_in(th, order, *span)
                loader_events += sum(thread_events_in(th, order, a, b) for a, b in loader_waits)
                if calls:
                    launched.append(self.launches.launched_span(th, calls, *span))

        host_ops, unattributed_us = self.operators.nest(
            self.threads, main_pid, self.launches, visit
        )
        # When the host sat in the runtime: the main process's runtime calls.
        host_runtime = union(
            merge_intervals(th.rt_ts, th.rt_end)
            for (pid, _), th in self.threads.items()
            if pid == main_pid
        )
        gpu_unions = [self._gpu_union(kind) for kind in range(4)]
        gpu_busy = union(gpu_unions)
        has_gpu_activity = len(self.gpu) > 0
        if has_gpu_activity:
            layers = [*gpu_unions, loader, host_runtime, host_ops]
        else:
            layers = [loader, host_ops]
        gpu = self.gpu
        # The profiler's stop-time sync comes after the training process's last operator (the
        # end of its last top-level one) and, with ProfilerStep markers, after the last step.
        after = host_ops[1][-1] if host_ops[1] else -math.inf
        if self.step_source == "profiler" and windows:
            after = max(after, windows[-1][2])
        self.syncs.find_profiler_stop(main_pid, after)
        main_syncs = self.syncs.main_calls(main_pid)
        steps = build_steps(
            windows,
            layers,
            has_gpu_activity,
            kernel_starts=sorted(compress(gpu.ts, map(COMPUTE.__ge__, gpu.kind))),
            launch_starts=launch_starts(self.threads, main_pid),
            loader=loader,
            syncs=lambda a, b: self.syncs.step_figures(main_syncs, a, b, gpu_busy),
        )
        if self._collective_s:
            collectives = merge_intervals(self._collective_s, self._collective_e)
            for step in steps:
                a = step.start_us
                step.collective_ms = length_in(collectives, a, a + step.duration_ms * 1000) / 1000
        detection = (
            "profiler-step" if self.step_source == "profiler" else "fallback" if steps else "none"
        )
        window_ms = window_busy_ms = window_comm_ms = window_overlap_ms = 0.0
        if span is not None:
            first_launched = min([a for a, _ in launched], default=math.inf)
            last_launched = max([b for _, b in launched], default=-math.inf)
            start, end = span[0], max(span[1], last_launched)
            window_ms = (end - start) / 1000
            # GPU work of the steps: from the first kernel they launched to the last. Before the
            # first one starts, a full launch queue still runs kernels of earlier steps.
            gpu_start = first_launched if first_launched < end else start
            window_busy_ms = length_in(gpu_busy, gpu_start, end) / 1000
            # Communication and how much of it ran while compute kernels ran on other streams:
            # |comm| + |compute| - |comm or compute| is their overlap.
            comm, compute = gpu_unions[COMMUNICATION], gpu_unions[COMPUTE]
            window_comm_ms = length_in(comm, gpu_start, end) / 1000
            if window_comm_ms:
                either = length_in(union([comm, compute]), gpu_start, end) / 1000
                both = window_comm_ms + length_in(compute, gpu_start, end) / 1000 - either
                window_overlap_ms = max(0.0, min(window_comm_ms, both))
        all_notes.extend(step_notes(self.step_source))
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
        durations = self.kernels.sorted_durations()
        launch = self.launches.stats(self.threads.values(), durations)
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
            window_comm_ms=window_comm_ms,
            window_comm_overlap_ms=window_overlap_ms,
            host_events=host_events,
            loader_events=loader_events,
            profiler_event_us=profiler_event_us(self.operators.profiler_event_samples),
            kernel_count=len(durations),
            kernel_time_ms=sum(totals) / 1000,
            gpu_busy_ms=length(gpu_busy) / 1000,
            top_ops=self.operators.top(TOP_N),
            top_kernels=self.kernels.top(TOP_N, totals),
            kernel_class_ms=self.kernels.class_ms(totals),
            memory=self.memory.timelines(),
            dataloader_iterators=dict(sorted(self.loader_iterators.items())),
            world_size=world_size,
            backend=backend,
            copies=self.copies.stats(),
            syncs=self.syncs.stats(main_pid, [(a, b) for _, a, b in windows]),
            launch=launch if has_kernels or launch.launches else None,
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
                launch.cuda_graph_launches,
            ),
            notes=all_notes,
        )

    def _windows(self, main_pid: int | str | None) -> list[tuple[int, float, float]]:
        """The step windows; sets :attr:`step_source`."""
        if self._steps:
            self.step_source = "profiler"
            return profiler_windows(self._steps)
        host_starts = [
            min(th.op_ts) for (pid, _), th in self.threads.items() if pid == main_pid and th.op_ts
        ]
        first_annotation = self.annotations.first_start(main_pid)
        if first_annotation is not None:
            host_starts.append(first_annotation)
        windows, self.step_source = fallback_windows(
            self.optimizer.step_ends(main_pid),
            self.annotations,
            main_pid,
            min(host_starts, default=self.t_min),
            self.t_min,
            self.t_max,
        )
        return windows

    def _main_pid(self) -> int | str | None:
        """The training process: the one that marks steps, else the one with most operators."""
        if self._steps:
            counts = Counter(pid for _, _, pid in self._steps.values())
        else:
            counts = Counter()
            for (pid, _), th in self.threads.items():
                counts[pid] += len(th.op_ts)
        return min(counts, key=lambda p: (-counts[p], str(p))) if counts else None

    def _gpu_union(self, kind: int) -> Intervals:
        gpu = self.gpu
        return merge_intervals(
            gpu.ts, gpu.end, compress(range(len(gpu)), map(kind.__eq__, gpu.kind))
        )

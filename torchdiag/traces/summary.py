"""Events to :class:`~torchdiag.record.TraceSummary`: aggregate per chunk, then a few global passes.

:class:`SummaryBuilder` receives the decoder's chunks one at a time and never keeps events. What
can be aggregated on the fly is (call counts, input dtypes/shapes, DataLoader iterators, steps).
What needs the whole trace, because real traces are not sorted by time, is kept as columns of
numbers (``array``): operator and runtime intervals per host thread, GPU intervals, kernel
durations per name, allocator samples. :meth:`SummaryBuilder.finish` then

- nests each thread's operators by time containment (self time) and walks the runtime calls that
  launched kernels through that nesting (GPU time per operator, inclusive of nested operators);
- builds the union of GPU activity per kind and splits every step's wall time into a
  :class:`~torchdiag.record.BreakdownMs` whose parts add up to the wall time.

Times in the trace are microseconds; the summary reports milliseconds (and µs where named so).
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from torchdiag.record import (
    BreakdownMs,
    DeviceInfo,
    KernelStat,
    MemoryTimeline,
    OpStat,
    TraceStep,
    TraceSummary,
)
from torchdiag.traces.events import (
    CATEGORY_ALIASES,
    GPU_CATEGORIES,
    RUNTIME_CATEGORIES,
    Event,
    GpuArgs,
    GpuColumns,
    Interner,
    MemoryArgs,
    MemoryColumns,
    OpArgs,
    RuntimeArgs,
    ThreadColumns,
    decode_args,
)
from torchdiag.traces.kernels import classify_kernel

__all__ = ["Intervals", "SummaryBuilder", "devices_from_metadata", "merge_intervals", "partition"]

STEP_PREFIX = "ProfilerStep#"
DATALOADER_PREFIX = "enumerate(DataLoader)"
_ANNOTATION_PREFIXES = (STEP_PREFIX, DATALOADER_PREFIX)
TOP_N = 50
MEMORY_POINTS = 512
_SIGNATURE_TRIES = 16  # calls per operator name whose args are decoded for dtypes / shapes
_SIGNATURES_KEPT = 4
_NEST_EPS_US = 0.01  # a child may end this much after its parent (rounded timestamps)
# "Input type" entries that are not tensor dtypes.
_NON_TENSOR_TYPES = frozenset(
    {"", "Scalar", "ScalarList", "TensorList", "GenericList", "None", "Device", "Layout"}
    | {"ScalarType", "MemoryFormat", "String", "Storage"}
)

# GPU interval kinds in attribution priority: overlapping activity counts once, for the first.
COMMUNICATION, COMPUTE, MEMCPY, MEMSET = 0, 1, 2, 3

Intervals = tuple[list[float], list[float]]
"""Disjoint intervals sorted by start, as (starts, ends); ends are sorted too."""


# ---------------------------------------------------------------------------------------------
# Interval algebra


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


def _union_of(unions: Iterable[Intervals]) -> Intervals:
    starts: list[float] = []
    ends: list[float] = []
    for s, e in unions:
        starts.extend(s)
        ends.extend(e)
    return merge_intervals(starts, ends)


def _clip(union: Intervals, a: float, b: float) -> list[tuple[float, float]]:
    starts, ends = union
    out = []
    for i in range(bisect_right(ends, a), bisect_left(starts, b)):
        out.append((max(starts[i], a), min(ends[i], b)))
    return out


def _length(union: Intervals) -> float:
    starts, ends = union
    return sum(e - s for s, e in zip(starts, ends, strict=True))


def partition(a: float, b: float, layers: Sequence[Intervals]) -> list[float]:
    """Split ``[a, b]`` among ``layers`` by priority: each instant goes to the first layer active
    then, or to the extra last slot when none is. Returns ``len(layers) + 1`` lengths that add up
    to ``b - a``.

    Layer k gets |L0 ∪ ... ∪ Lk| - |L0 ∪ ... ∪ Lk-1|: what it covers that no earlier layer does.
    """
    starts: list[float] = []
    ends: list[float] = []
    out = []
    covered = 0.0
    for layer in layers:
        for s, e in _clip(layer, a, b):
            starts.append(s)
            ends.append(e)
        starts, ends = merge_intervals(starts, ends)
        now = _length((starts, ends))
        out.append(now - covered)
        covered = now
    out.append(max(0.0, (b - a) - covered))
    return out


# ---------------------------------------------------------------------------------------------
# Per-name aggregates


class _OpAgg:
    __slots__ = ("calls", "dtypes", "gpu", "self_time", "shapes", "total", "tries")

    def __init__(self) -> None:
        self.calls = 0
        self.total = 0.0
        self.self_time = 0.0
        self.gpu = 0.0
        self.tries = 0
        self.dtypes: list[str] = []
        self.shapes: list[str] = []


def _shape_signature(dims: list[Any]) -> str:
    parts = []
    for d in dims:
        if isinstance(d, list) and d:
            if all(isinstance(x, int) for x in d):
                parts.append("x".join(map(str, d)))
            elif all(isinstance(x, list) for x in d):  # a TensorList
                parts.append(
                    "["
                    + ", ".join("x".join(map(str, t)) or "()" for t in d[:4])
                    + (", ..." if len(d) > 4 else "")
                    + "]"
                )
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# The builder


class SummaryBuilder:
    """Accumulates event chunks (:meth:`add`) into a :class:`TraceSummary` (:meth:`finish`)."""

    def __init__(self, origin: str = "") -> None:
        self.origin = origin
        self.event_count = 0
        self.t_min = math.inf
        self.t_max = -math.inf
        self.legacy_categories = False
        self.ops = Interner()
        self._op_aggs: list[_OpAgg] = []
        self.kernels = Interner()
        self._kernel_durs: list[array] = []
        self._kernel_kind: list[int] = []
        self.threads: dict[tuple[int | str, int | str], ThreadColumns] = {}
        self.gpu = GpuColumns()
        self._kernel_by_corr: dict[int, float] = {}
        self._steps: dict[int, tuple[float, float, int | str]] = {}
        self._loader_s: list[float] = []
        self._loader_e: list[float] = []
        self.loader_iterators: Counter[str] = Counter()
        self._memory: dict[int, MemoryColumns] = {}
        self._cpu_memory_peak = 0

    # -- streaming -------------------------------------------------------------------------

    def add(self, events: Sequence[Event]) -> None:
        """Fold one chunk of events in; the builder keeps no reference to them."""
        self.event_count += len(events)
        t_min, t_max = self.t_min, self.t_max
        alias = CATEGORY_ALIASES.get
        for ev in events:
            ph = ev.ph
            if ph == "X":
                cat = ev.cat
                mapped = alias(cat)
                if mapped is not None:
                    cat = mapped
                    self.legacy_categories = True
                ts = ev.ts
                end = ts + ev.dur
                if ts < t_min:
                    t_min = ts
                if end > t_max:
                    t_max = end
                if cat == "cpu_op":
                    self._op(ev)
                elif cat in GPU_CATEGORIES:
                    self._gpu(ev, cat, end)
                elif cat in RUNTIME_CATEGORIES:
                    self._runtime(ev, end)
                elif cat == "user_annotation":
                    self._annotation(ev)
            elif ph == "i" or ph == "I":
                ts = ev.ts
                if ts < t_min:
                    t_min = ts
                if ts > t_max:
                    t_max = ts
                if ev.name == "[memory]":
                    self._memory_event(ev)
        self.t_min, self.t_max = t_min, t_max

    def _thread(self, ev: Event) -> ThreadColumns:
        key = (ev.pid, ev.tid)
        th = self.threads.get(key)
        if th is None:
            th = self.threads[key] = ThreadColumns()
        return th

    def _op(self, ev: Event) -> None:
        name = ev.name
        if name.startswith(_ANNOTATION_PREFIXES) and self._annotation(ev):
            return  # a ProfilerStep recorded as an operator (older PyTorch) is a step, not an op
        nid = self.ops.intern(name)
        if nid == len(self._op_aggs):
            self._op_aggs.append(_OpAgg())
        agg = self._op_aggs[nid]
        agg.calls += 1
        th = self._thread(ev)
        th.op_ts.append(ev.ts)
        th.op_dur.append(ev.dur)
        th.op_name.append(nid)
        if agg.tries < _SIGNATURE_TRIES:
            agg.tries += 1
            self._signature(agg, ev)

    def _signature(self, agg: _OpAgg, ev: Event) -> None:
        args = decode_args(ev.args, OpArgs)
        if args is None:
            return
        for t in args.input_type or ():
            if (
                isinstance(t, str)
                and t not in _NON_TENSOR_TYPES
                and t not in agg.dtypes
                and len(agg.dtypes) < _SIGNATURES_KEPT
            ):
                agg.dtypes.append(t)
        if args.input_dims and len(agg.shapes) < _SIGNATURES_KEPT:
            shape = _shape_signature(args.input_dims)
            if shape and shape not in agg.shapes:
                agg.shapes.append(shape)

    def _annotation(self, ev: Event) -> bool:
        """Record a step or DataLoader annotation; True for a step (not an operator then)."""
        name = ev.name
        if name.startswith(STEP_PREFIX):
            try:
                number = int(name[len(STEP_PREFIX) :])
            except ValueError:
                return False
            known = self._steps.get(number)
            if known is None or ev.dur > known[1]:
                self._steps[number] = (ev.ts, ev.dur, ev.pid)
            return True
        if name.startswith(DATALOADER_PREFIX):
            self._loader_s.append(ev.ts)
            self._loader_e.append(ev.ts + ev.dur)
            _, _, iterator = name.partition("#")
            self.loader_iterators[iterator.removesuffix(".__next__") or name] += 1
        return False

    def _gpu(self, ev: Event, cat: str, end: float) -> None:
        if cat == "kernel":
            kid = self.kernels.intern(ev.name)
            if kid == len(self._kernel_durs):
                self._kernel_durs.append(array("d"))
                cls, _ = classify_kernel(ev.name)
                self._kernel_kind.append(COMMUNICATION if cls == "communication" else COMPUTE)
            kind = self._kernel_kind[kid]
            self._kernel_durs[kid].append(ev.dur)
            args = decode_args(ev.args, GpuArgs)
            if args is not None and args.correlation is not None:
                by_corr = self._kernel_by_corr
                by_corr[args.correlation] = by_corr.get(args.correlation, 0.0) + ev.dur
        else:
            kind = MEMCPY if cat == "gpu_memcpy" else MEMSET
        gpu = self.gpu
        gpu.ts.append(ev.ts)
        gpu.end.append(end)
        gpu.kind.append(kind)

    def _runtime(self, ev: Event, end: float) -> None:
        th = self._thread(ev)
        args = decode_args(ev.args, RuntimeArgs)
        th.rt_ts.append(ev.ts)
        th.rt_end.append(end)
        th.rt_corr.append(-1 if args is None or args.correlation is None else args.correlation)

    def _memory_event(self, ev: Event) -> None:
        args = decode_args(ev.args, MemoryArgs)
        if args is None or args.total_allocated is None:
            return
        allocated = int(args.total_allocated)
        reserved = int(args.total_reserved or 0)
        if args.device_type == 0:  # host memory (c10::DeviceType::CPU): only its peak is kept
            self._cpu_memory_peak = max(self._cpu_memory_peak, allocated)
            return
        cols = self._memory.get(args.device_id)
        if cols is None:
            cols = self._memory[args.device_id] = MemoryColumns()
        cols.ts.append(ev.ts)
        cols.allocated.append(allocated)
        cols.reserved.append(reserved)

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
        host_ops, host_runtime, unattributed_us = self._nest_operators(main_pid)
        gpu_unions = [self._gpu_union(kind) for kind in range(4)]
        loader = merge_intervals(self._loader_s, self._loader_e)
        has_gpu_activity = len(self.gpu) > 0
        if has_gpu_activity:
            layers = [*gpu_unions, loader, host_runtime, host_ops]
        else:
            layers = [loader, host_ops]
        steps, detection = self._steps_with_breakdown(layers, has_gpu_activity)
        if detection == "fallback":
            all_notes.append("no ProfilerStep# annotations: one step spans the whole trace")
        if unattributed_us >= 1.0:
            # Typically kernels launched before the window opened, still running in it.
            all_notes.append(
                f"kernel time with no launching operator in the trace: "
                f"{unattributed_us / 1000:.3f} ms"
            )
        if self._cpu_memory_peak:
            all_notes.append(f"host allocator peak: {self._cpu_memory_peak} bytes")
        top_kernels, kernel_class_ms = self._kernel_stats()
        devices = devices_from_metadata(meta)
        return TraceSummary(
            origin=self.origin,
            format=self._format(meta, form),
            rank=_distributed_rank(meta),
            event_count=self.event_count,
            span_ms=(self.t_max - self.t_min) / 1000 if self.t_max >= self.t_min else 0.0,
            has_gpu=has_gpu_activity or bool(devices),
            device_kind=_device_kind(devices, has_gpu_activity),
            devices=devices,
            step_detection=detection,  # type: ignore[arg-type]
            steps=steps,
            kernel_count=sum(len(d) for d in self._kernel_durs),
            kernel_time_ms=sum(sum(d) for d in self._kernel_durs) / 1000,
            gpu_busy_ms=_length(_union_of(gpu_unions)) / 1000,
            top_ops=self._top_ops(),
            top_kernels=top_kernels,
            kernel_class_ms=kernel_class_ms,
            memory=self._memory_timelines(),
            dataloader_iterators=dict(sorted(self.loader_iterators.items())),
            notes=all_notes,
        )

    def _format(self, meta: Mapping[str, Any], form: str) -> str:
        if self.legacy_categories:
            return "kineto-early"  # PyTorch 1.8-1.9: Operator / Runtime / Kernel categories
        if "schemaVersion" in meta or len(self.ops) or len(self.kernels):
            return "kineto"
        return "chrome-trace" if form == "object" else "chrome-trace-array"

    def _main_pid(self) -> int | str | None:
        """The training process: the one that marks steps, else the one with most operators."""
        if self._steps:
            pids = Counter(pid for _, _, pid in self._steps.values())
            return min(pids, key=lambda p: (-pids[p], str(p)))
        per_pid: Counter[int | str] = Counter()
        for (pid, _), th in self.threads.items():
            per_pid[pid] += len(th.op_ts)
        if not per_pid:
            return None
        return min(per_pid, key=lambda p: (-per_pid[p], str(p)))

    def _nest_operators(self, main_pid: int | str | None) -> tuple[Intervals, Intervals, float]:
        """Self and GPU time of every operator; the main process's operator and runtime unions.

        Returns (union of the main process's operators, union of its runtime calls, kernel µs
        that no operator launched).
        """
        attributed = 0.0
        op_starts: list[float] = []
        op_ends: list[float] = []
        rt_unions: list[Intervals] = []
        for (pid, _), th in sorted(self.threads.items(), key=lambda kv: str(kv[0])):
            host = pid == main_pid
            if host:
                rt_unions.append(merge_intervals(th.rt_ts, th.rt_end))
            attributed += self._nest_thread(
                th, op_starts if host else None, op_ends if host else None
            )
        unattributed = sum(self._kernel_by_corr.values()) - attributed
        return merge_intervals(op_starts, op_ends), _union_of(rt_unions), max(0.0, unattributed)

    def _nest_thread(
        self, th: ThreadColumns, top_starts: list[float] | None, top_ends: list[float] | None
    ) -> float:
        """Nest one thread's operators; returns the kernel µs attributed to them.

        Operators sorted by (start, longer first) form a stack by time containment. Each runtime
        call that launched kernels (joined by correlation id) adds their time to the operator on
        top of the stack when it starts; popping a frame passes its duration and GPU time to its
        parent, so self time excludes children and GPU time includes them. Total and GPU time
        count only the outermost of nested same-name calls. Top-level operators are appended to
        ``top_starts``/``top_ends`` when given.
        """
        kernel_by_corr = self._kernel_by_corr
        aggs = self._op_aggs
        ts, dur, names = th.op_ts, th.op_dur, th.op_name
        order = sorted(range(len(ts)), key=dur.__getitem__, reverse=True)
        order.sort(key=ts.__getitem__)  # stable: equal starts keep the longer (parent) first
        launches = sorted(
            (t, kernel_by_corr[c])
            for t, c in zip(th.rt_ts, th.rt_corr, strict=True)
            if c in kernel_by_corr
        )
        attributed = 0.0
        stack: list[list[float]] = []  # frames: [end, name id, duration, children, gpu]

        # Frames open per name: an operator nested in one of the same name (autocast re-enters
        # aten::conv2d) must not count its time twice in the name's total and GPU time.
        open_frames = [0] * len(aggs)

        def pop() -> None:
            _, nid, d, children, gpu = stack.pop()
            n = int(nid)
            agg = aggs[n]
            agg.self_time += max(0.0, d - children)
            open_frames[n] -= 1
            if not open_frames[n]:
                agg.total += d
                agg.gpu += gpu
            if stack:
                stack[-1][3] += d
                stack[-1][4] += gpu

        def launch(t: float, g: float) -> float:
            while stack and stack[-1][0] < t:
                pop()
            if not stack:
                return 0.0
            stack[-1][4] += g
            return g

        li = 0
        for i in order:
            start = ts[i]
            end = start + dur[i]
            while li < len(launches) and launches[li][0] < start:
                attributed += launch(*launches[li])
                li += 1
            # Pop what ended before this operator, and what it is not inside of (misnested).
            while stack and (stack[-1][0] <= start or stack[-1][0] + _NEST_EPS_US < end):
                pop()
            if not stack and top_starts is not None and top_ends is not None:
                top_starts.append(start)
                top_ends.append(end)
            stack.append([end, names[i], dur[i], 0.0, 0.0])
            open_frames[names[i]] += 1
        for t, g in launches[li:]:
            attributed += launch(t, g)
        while stack:
            pop()
        return attributed

    def _gpu_union(self, kind: int) -> Intervals:
        gpu = self.gpu
        return merge_intervals(gpu.ts, gpu.end, (i for i, k in enumerate(gpu.kind) if k == kind))

    def _steps_with_breakdown(
        self, layers: list[Intervals], has_gpu: bool
    ) -> tuple[list[TraceStep], str]:
        if self._steps:
            windows = [(n, ts, dur) for n, (ts, dur, _) in sorted(self._steps.items())]
            detection = "profiler-step"
        elif self.event_count and self.t_max > self.t_min:
            windows = [(0, self.t_min, self.t_max - self.t_min)]
            detection = "fallback"
        else:
            return [], "none"
        gpu = self.gpu
        kernel_starts = sorted(gpu.ts[i] for i, k in enumerate(gpu.kind) if k <= COMPUTE)
        steps = []
        for number, start, dur in windows:
            end = start + dur
            parts = [p / 1000 for p in partition(start, end, layers)]
            wall = dur / 1000
            if has_gpu:
                comm, compute, memcpy, memset, loader, runtime, host = parts[:7]
                known = (comm, compute, memcpy, memset, loader, runtime, host)
                breakdown = BreakdownMs(
                    wall=wall,
                    compute=compute,
                    memcpy=memcpy,
                    memset=memset,
                    communication=comm,
                    input_wait=loader,
                    host_runtime=runtime,
                    idle_host_wait=host,
                    idle_other=max(0.0, wall - sum(known)),
                )
                busy = comm + compute + memcpy + memset
            else:
                loader, host = parts[:2]
                breakdown = BreakdownMs(
                    wall=wall,
                    input_wait=loader,
                    cpu_only=host,
                    idle_other=max(0.0, wall - loader - host),
                )
                busy = 0.0
            kernels = bisect_left(kernel_starts, end) - bisect_left(kernel_starts, start)
            steps.append(
                TraceStep(
                    number=number,
                    start_us=start,
                    duration_ms=wall,
                    breakdown=breakdown,
                    kernels=kernels,
                    gpu_busy_ms=busy,
                )
            )
        return steps, detection

    # -- tables ----------------------------------------------------------------------------

    def _top_ops(self) -> list[OpStat]:
        names = self.ops.names
        ranked = sorted(range(len(names)), key=lambda i: (-self._op_aggs[i].total, names[i]))
        out = []
        for i in ranked[:TOP_N]:
            agg = self._op_aggs[i]
            out.append(
                OpStat(
                    name=names[i],
                    calls=agg.calls,
                    total_ms=agg.total / 1000,
                    self_ms=agg.self_time / 1000,
                    gpu_ms=agg.gpu / 1000,
                    input_dtypes=list(agg.dtypes),
                    input_shapes=list(agg.shapes),
                )
            )
        return out

    def _kernel_stats(self) -> tuple[list[KernelStat], dict[str, float]]:
        names = self.kernels.names
        totals = [sum(d) for d in self._kernel_durs]
        by_class: dict[str, float] = {}
        classes = []
        for i, name in enumerate(names):
            cls, tc = classify_kernel(name)
            classes.append((cls, tc))
            by_class[cls] = by_class.get(cls, 0.0) + totals[i] / 1000
        ranked = sorted(range(len(names)), key=lambda i: (-totals[i], names[i]))
        top = []
        for i in ranked[:TOP_N]:
            durs = sorted(self._kernel_durs[i])
            n = len(durs)
            median = durs[n // 2] if n % 2 else (durs[n // 2 - 1] + durs[n // 2]) / 2
            top.append(
                KernelStat(
                    name=names[i],
                    kernel_class=classes[i][0],
                    tensor_core=classes[i][1],
                    calls=n,
                    total_ms=totals[i] / 1000,
                    median_us=median,
                    max_us=durs[-1],
                )
            )
        return top, dict(sorted(by_class.items()))

    def _memory_timelines(self) -> list[MemoryTimeline]:
        out = []
        for device, cols in sorted(self._memory.items()):
            order = sorted(range(len(cols.ts)), key=cols.ts.__getitem__)
            n = len(order)
            if n > MEMORY_POINTS:
                # Keep each bucket's highest point: the global peak always survives.
                order = [
                    max(
                        order[k * n // MEMORY_POINTS : (k + 1) * n // MEMORY_POINTS],
                        key=cols.allocated.__getitem__,
                    )
                    for k in range(MEMORY_POINTS)
                ]
            out.append(
                MemoryTimeline(
                    device=device,
                    peak_allocated_bytes=max(cols.allocated),
                    peak_reserved_bytes=max(cols.reserved),
                    t_us=[cols.ts[i] for i in order],
                    allocated_bytes=[cols.allocated[i] for i in order],
                    reserved_bytes=[cols.reserved[i] for i in order],
                )
            )
        return out


def devices_from_metadata(metadata: Mapping[str, Any]) -> list[DeviceInfo]:
    """Accelerators listed in ``deviceProperties`` (or early Kineto's ``computeProperties``)."""
    listed = metadata.get("deviceProperties") or metadata.get("computeProperties") or []
    rocm = any(k in metadata for k in ("roctracer_version", "hip_runtime_version"))
    out = []
    for i, props in enumerate(listed if isinstance(listed, list) else []):
        if not isinstance(props, dict):
            continue
        name = str(props.get("name", ""))
        major = props.get("computeMajor", props.get("major"))
        minor = props.get("computeMinor", props.get("minor"))
        amd = rocm or any(w in name for w in ("AMD", "Radeon", "Instinct"))
        out.append(
            DeviceInfo(
                index=props["id"] if isinstance(props.get("id"), int) else i,
                name=name,
                kind="rocm" if amd else "cuda",
                capability=f"{major}.{minor}" if major is not None and minor is not None else None,
                memory_total_bytes=_int_or_none(props.get("totalGlobalMem")),
                multiprocessors=_int_or_none(props.get("numSms", props.get("multiProcessorCount"))),
            )
        )
    return out


def _device_kind(devices: list[DeviceInfo], has_gpu_activity: bool) -> str | None:
    if any(d.kind == "rocm" for d in devices):
        return "rocm"
    return "cuda" if devices or has_gpu_activity else None


def _distributed_rank(meta: Mapping[str, Any]) -> int | None:
    info = meta.get("distributedInfo")
    rank = info.get("rank") if isinstance(info, dict) else None
    return rank if isinstance(rank, int) and not isinstance(rank, bool) else None


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

"""Events to :class:`~torchdiag.record.TraceSummary`: aggregate per chunk, then a few global passes.

:class:`SummaryBuilder` receives the decoder's chunks one at a time and never keeps events. What
can be aggregated on the fly is (call counts, input dtypes/shapes, DataLoader iterators, steps).
What needs the whole trace, because real traces are not sorted by time, is kept as columns of
numbers (``array``): operator and runtime intervals per host thread, GPU intervals, kernel
durations per name, allocator samples. :meth:`SummaryBuilder.finish` then

- nests each thread's operators by time containment (self time) and walks the runtime calls that
  launched kernels through that nesting (GPU time per operator, inclusive of nested operators):
  :mod:`torchdiag.traces.operators`;
- builds the union of GPU activity per kind and splits every step's wall time into a
  :class:`~torchdiag.record.BreakdownMs` whose parts add up to the wall time
  (:mod:`torchdiag.traces.intervals`);
- downsamples the allocator samples to memory timelines (:mod:`torchdiag.traces.memory`).

Times in the trace are microseconds; the summary reports milliseconds (and µs where named so).
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from torchdiag.record import (
    BreakdownMs,
    DeviceInfo,
    KernelStat,
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
    RuntimeArgs,
    ThreadColumns,
    decode_args,
)
from torchdiag.traces.intervals import Intervals, length, merge_intervals, partition, union
from torchdiag.traces.kernels import classify_kernel
from torchdiag.traces.memory import MemorySamples
from torchdiag.traces.operators import OperatorStats

__all__ = ["SummaryBuilder", "devices_from_metadata"]

STEP_PREFIX = "ProfilerStep#"
DATALOADER_PREFIX = "enumerate(DataLoader)"
_ANNOTATION_PREFIXES = (STEP_PREFIX, DATALOADER_PREFIX)
TOP_N = 50

# GPU interval kinds in attribution priority: overlapping activity counts once, for the first.
COMMUNICATION, COMPUTE, MEMCPY, MEMSET = 0, 1, 2, 3


class SummaryBuilder:
    """Accumulates event chunks (:meth:`add`) into a :class:`TraceSummary` (:meth:`finish`)."""

    def __init__(self, origin: str = "") -> None:
        self.origin = origin
        self.event_count = 0
        self.t_min = math.inf
        self.t_max = -math.inf
        self.legacy_categories = False
        self.operators = OperatorStats()
        self.kernels = Interner()
        self._kernel_durs: list[array] = []
        self._kernel_classes: list[tuple[str, bool | None]] = []  # classify_kernel, per name
        self._kernel_kind: list[int] = []
        self.threads: dict[tuple[int | str, int | str], ThreadColumns] = {}
        self.gpu = GpuColumns()
        self._kernel_by_corr: dict[int, float] = {}
        self._steps: dict[int, tuple[float, float, int | str]] = {}
        self._loader_s: list[float] = []
        self._loader_e: list[float] = []
        self.loader_iterators: Counter[str] = Counter()
        self.memory = MemorySamples()

    # -- streaming -------------------------------------------------------------------------

    def add(self, events: Sequence[Event]) -> None:
        """Fold one chunk of events in; the builder keeps no reference to them."""
        self.event_count += len(events)
        t_min, t_max = self.t_min, self.t_max
        alias = CATEGORY_ALIASES.get
        add_op = self.operators.add
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
                    # A ProfilerStep recorded as an operator (older PyTorch) is a step, not an op.
                    if not (ev.name.startswith(_ANNOTATION_PREFIXES) and self._annotation(ev)):
                        add_op(ev, self._thread(ev))
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
                    self.memory.add(ev)
        self.t_min, self.t_max = t_min, t_max

    def _thread(self, ev: Event) -> ThreadColumns:
        key = (ev.pid, ev.tid)
        th = self.threads.get(key)
        if th is None:
            th = self.threads[key] = ThreadColumns()
        return th

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
                cls, tc = classify_kernel(ev.name)
                self._kernel_classes.append((cls, tc))
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
        host_ops, unattributed_us = self.operators.nest(
            self.threads, main_pid, self._kernel_by_corr
        )
        # When the host sat in the CUDA runtime: the main process's runtime calls.
        host_runtime = union(
            merge_intervals(th.rt_ts, th.rt_end)
            for (pid, _), th in self.threads.items()
            if pid == main_pid
        )
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
        if self.memory.host_peak:
            all_notes.append(f"host allocator peak: {self.memory.host_peak} bytes")
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
            gpu_busy_ms=length(union(gpu_unions)) / 1000,
            top_ops=self.operators.top(TOP_N),
            top_kernels=top_kernels,
            kernel_class_ms=kernel_class_ms,
            memory=self.memory.timelines(),
            dataloader_iterators=dict(sorted(self.loader_iterators.items())),
            notes=all_notes,
        )

    def _format(self, meta: Mapping[str, Any], form: str) -> str:
        if self.legacy_categories:
            return "kineto-early"  # PyTorch 1.8-1.9: Operator / Runtime / Kernel categories
        if "schemaVersion" in meta or len(self.operators) or len(self.kernels):
            return "kineto"
        return "chrome-trace" if form == "object" else "chrome-trace-array"

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

    # -- kernel table ----------------------------------------------------------------------

    def _kernel_stats(self) -> tuple[list[KernelStat], dict[str, float]]:
        names = self.kernels.names
        totals = [sum(d) for d in self._kernel_durs]
        classes = self._kernel_classes
        by_class: dict[str, float] = {}
        for (cls, _), total in zip(classes, totals, strict=True):
            by_class[cls] = by_class.get(cls, 0.0) + total / 1000
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

"""Events to :class:`~torchdiag.record.TraceSummary`: aggregate per chunk, then a few global passes.

:class:`SummaryBuilder` receives the decoder's chunks one at a time and never keeps events. What
can be aggregated on the fly is (call counts, kernel time per name, input dtypes/shapes, copies,
occupancy, DataLoader iterators, steps, batch shapes). What needs the whole trace, because real
traces are not sorted by time, is kept as columns of numbers in
:class:`~torchdiag.traces.spill.ColumnLog` s: operators and runtime calls (with their thread),
GPU activity (kernels with name and correlation id, copies, memsets), allocator samples,
annotations, collective calls, candidate synchronising operators. Past a fixed budget of rows
(:data:`DEFAULT_SPILL_ROWS`) they are written to temporary files, so the memory a read takes
does not grow with the trace. :meth:`SummaryBuilder.finish` then runs the global passes
(:mod:`~torchdiag.traces.passes`), which read them back sorted as each pass needs
(:func:`~torchdiag.traces.spill.sort_rows`: on disk when they spilled) and

- joins kernels to their launching runtime calls by correlation id
  (:mod:`~torchdiag.traces.launches`);
- nests each thread's operators by time containment (self time) and walks the runtime calls that
  launched kernels through that nesting (GPU time per operator, dtype of each matrix kernel):
  :mod:`~torchdiag.traces.operators`;
- finds the steps (:mod:`~torchdiag.traces.steps`), folds the GPU activity per kind, the host's
  runtime calls and top-level operators into unions in one pass in time order
  (:mod:`~torchdiag.traces.sweep`) and splits every step's wall time into a
  :class:`~torchdiag.record.BreakdownMs` whose parts add up to the wall time, with per-step
  launches, DataLoader time and synchronisations (:mod:`~torchdiag.traces.syncs`);
- derives launch, matrix-math, occupancy, optimizer and batch figures
  (:mod:`~torchdiag.traces.launches`, :mod:`~torchdiag.traces.matrix`,
  :mod:`~torchdiag.traces.optimizer`, :mod:`~torchdiag.traces.batch`);
- downsamples the allocator samples to memory timelines (:mod:`~torchdiag.traces.memory`).

The temporary files are removed when :meth:`SummaryBuilder.finish` returns or fails, and by
:meth:`SummaryBuilder.close` when a read is abandoned.

Dialect differences (old categories, string ids, B/E pairs, the pre-Kineto autograd profiler)
are folded as events arrive (:mod:`~torchdiag.traces.formats`). Times in the trace are
microseconds; the summary reports milliseconds (and µs where named so).
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from torchdiag.record import TraceSummary
from torchdiag.traces.batch import BATCH_OPS, BatchSizes
from torchdiag.traces.copies import CopyStats
from torchdiag.traces.events import Event, GpuArgs, RuntimeArgs
from torchdiag.traces.formats import (
    AUTOGRAD_CPU_PID,
    AUTOGRAD_CUDA_PID,
    CATEGORY_ALIASES,
    GPU_CATEGORIES,
    RUNTIME_CATEGORIES,
    DurationPairs,
    devices_from_metadata,
    norm_id,
)
from torchdiag.traces.kernel_table import KernelTable
from torchdiag.traces.matrix import DtypeTime, Occupancy
from torchdiag.traces.memory import MemorySamples
from torchdiag.traces.operators import OP_COLUMNS, OperatorStats
from torchdiag.traces.optimizer import OPTIMIZER_PREFIX, OptimizerRegions
from torchdiag.traces.passes import COMMUNICATION, COMPUTE, MEMCPY, MEMSET, SummaryPasses
from torchdiag.traces.runtime import SYNC, runtime_kind
from torchdiag.traces.spill import ColumnLog, SpillDir
from torchdiag.traces.steps import Annotations
from torchdiag.traces.syncs import SyncTracker, is_sync_op

__all__ = ["DEFAULT_SPILL_ROWS", "SummaryBuilder", "devices_from_metadata"]

# Rows each column log keeps in memory before spilling to a temporary file (and rows sorted in
# memory at once): bounds the read's memory whatever the trace's size. A trace of up to about a
# million events never spills.
DEFAULT_SPILL_ROWS = 1 << 18
# Column layouts (array typecodes). Runtime calls: thread index, start, end, correlation id (-1
# when none), runtime kind. GPU activity: start, duration, breakdown kind, kernel name id (-1
# for copies and memsets), correlation id, whether the correlation id can join a runtime call.
_RUNTIME_COLUMNS = "lddqb"
_GPU_COLUMNS = "ddblqb"
_INT64 = range(-(1 << 63), 1 << 63)

STEP_PREFIX = "ProfilerStep#"
DATALOADER_PREFIX = "enumerate(DataLoader)"
# Collectives as torch.distributed's process groups annotate them on the host ("gloo:all_reduce",
# "nccl:all_reduce" ...): from the call until the collective completed, waits for other ranks
# included.
COLLECTIVE_PREFIXES = ("gloo:", "nccl:", "ucc:", "mpi:", "xccl:")
_ANNOTATION_PREFIXES = (STEP_PREFIX, DATALOADER_PREFIX, OPTIMIZER_PREFIX)
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


class SummaryBuilder(SummaryPasses):
    """Accumulates event chunks (:meth:`add`) into a :class:`TraceSummary` (:meth:`finish`)."""

    def __init__(self, origin: str = "", *, spill_rows: int | None = None) -> None:
        self.origin = origin
        rows = DEFAULT_SPILL_ROWS if spill_rows is None else spill_rows
        self._rows = rows
        self._spill = SpillDir()
        self.event_count = 0
        self.t_min = math.inf
        self.t_max = -math.inf
        # Dialect evidence (see formats.format_name).
        self.legacy_categories = False
        self.autograd_legacy = False
        self.pairs = DurationPairs()
        self.dtypes = DtypeTime()
        self.ops = ColumnLog(OP_COLUMNS, self._spill, rows)
        self.operators = OperatorStats(self.dtypes, self.ops)
        self._op_flags: list[int] = []
        self.kernels = KernelTable()
        # Host threads by (pid, tid), in order of first sight: the index is what the columns store.
        self.threads: dict[ThreadKey, int] = {}
        self._thread_keys: list[ThreadKey] = []
        # (pid, tid) as the event spelled them -> (normalised key, index): one dict lookup per
        # event instead of normalising ids every time.
        self._raw_threads: dict[tuple[Any, Any], tuple[ThreadKey, int]] = {}
        self._runtime_kinds: dict[str, int] = {}
        self.runtime = ColumnLog(_RUNTIME_COLUMNS, self._spill, rows)
        self.gpu = ColumnLog(_GPU_COLUMNS, self._spill, rows)
        self.launched_us = 0.0  # kernels carrying a correlation id: their summed time
        self.occupancy = Occupancy()
        self.copies = CopyStats()
        self.syncs = SyncTracker(self._spill, rows)
        self.optimizer = OptimizerRegions()
        self.annotations = Annotations(self._spill, rows)
        self.batch = BatchSizes()
        self._streams: set[tuple[int | str, int | str]] = set()
        self._steps: dict[int, tuple[float, float, int | str]] = {}
        self._skipped_steps: list[str] = []
        self._loader_s = array("d")
        self._loader_e = array("d")
        self.collectives = ColumnLog("dd", self._spill, rows)  # start, end
        self._loader_pid: list[int | str] = []
        self.loader_iterators: Counter[str] = Counter()
        self._annotation_calls: Counter[str] = Counter()
        self.memory = MemorySamples(self._spill, rows)
        # How the steps were found: "profiler", "optimizer", "annotation", "trace" or "none".
        self.step_source = "none"

    def close(self) -> None:
        """Remove the temporary files (also done by :meth:`finish`); safe to call again."""
        self._spill.close()

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
        launched_us = self.launched_us
        streams = self._streams
        gpu_ts, gpu_dur, gpu_kind, gpu_name, gpu_corr, gpu_link = self.gpu.cols
        rt_thread, rt_ts, rt_end, rt_corr, rt_kind = self.runtime.cols
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
                    key, thread = found if found is not None else self._thread(raw)
                    nid = add_op(ev, thread)
                    if nid == len(op_flags):
                        op_flags.append(_op_flags(ev.name))
                    if op_flags[nid]:
                        self._flagged_op(ev, op_flags[nid], key, end)
                elif cat == "kernel":
                    # Inline (the third most frequent): per-name figures, the GPU columns
                    # (with the correlation id for the launch join), occupancy sums kept in
                    # locals for the chunk.
                    info = kernel_info(ev.name)
                    dur = ev.dur
                    info.calls += 1
                    info.total += dur
                    try:
                        args: GpuArgs | None = decode_gpu(ev.args)
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        args = None
                    corr = args.correlation if args is not None else None
                    gpu_ts.append(ts)
                    gpu_dur.append(dur)
                    gpu_kind.append(COMMUNICATION if info.communication else COMPUTE)
                    gpu_name.append(info.id)
                    if corr is None:
                        gpu_corr.append(0)
                        gpu_link.append(0)
                    else:
                        launched_us += dur
                        # An id no runtime call can carry (they are 64-bit) joins none.
                        joins = corr in _INT64
                        gpu_corr.append(corr if joins else 0)
                        gpu_link.append(joins)
                    if args is not None:
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
                elif cat in GPU_CATEGORIES:
                    self._gpu(ev, cat, end)
                elif cat in RUNTIME_CATEGORIES:
                    # Inline too (the second most frequent event): the call's columns.
                    raw = (ev.pid, ev.tid)
                    found = raw_threads(raw)
                    key, thread = found if found is not None else self._thread(raw)
                    try:
                        corr = decode_runtime(ev.args).correlation
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        corr = None
                    kind = runtime_kinds.get(ev.name)
                    if kind is None:
                        kind = runtime_kinds[ev.name] = runtime_kind(ev.name)
                    rt_thread.append(thread)
                    rt_ts.append(ts)
                    rt_end.append(end)
                    rt_corr.append(-1 if corr is None else corr)
                    rt_kind.append(kind)
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
        self.launched_us = launched_us
        for log in (
            self.ops,
            self.runtime,
            self.gpu,
            self.memory.log,
            self.collectives,
            self.annotations.log,
            self.syncs.ops,
        ):
            log.check()
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

    def _thread(self, raw: tuple[Any, Any]) -> tuple[ThreadKey, int]:
        """The normalised key and the index of the thread an event's (pid, tid) names."""
        key = (norm_id(raw[0]), norm_id(raw[1]))
        thread = self.threads.get(key)
        if thread is None:
            thread = self.threads[key] = len(self._thread_keys)
            self._thread_keys.append(key)
        found = self._raw_threads[raw] = (key, thread)
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
            starts, ends = self.collectives.cols
            starts.append(ev.ts)
            ends.append(end)
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
        ts, dur, kinds, name, corr, link = self.gpu.cols
        ts.append(ev.ts)
        dur.append(ev.dur)
        kinds.append(kind)
        name.append(-1)
        corr.append(0)
        link.append(0)

    # -- global passes ---------------------------------------------------------------------

    def finish(
        self,
        metadata: Mapping[str, Any] | None = None,
        *,
        form: str = "object",
        notes: Sequence[str] = (),
    ) -> TraceSummary:
        """Run the global passes and build the summary; the temporary files are then removed.

        ``metadata`` are the file's top-level members other than ``traceEvents``, ``form`` is
        ``"object"`` or ``"array"`` (bare event list), ``notes`` are the decoder's remarks.
        """
        try:
            return self._finish(dict(metadata or {}), form, list(notes))
        finally:
            self.close()

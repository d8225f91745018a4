"""CPU operators: per-name aggregates, nesting into self and GPU time, the top-operators table.

:class:`OperatorStats` counts calls and samples input dtypes/shapes while events stream in; the
operators' intervals themselves go into the host thread's :class:`ThreadColumns`, because real
traces are not sorted by time. :meth:`OperatorStats.nest` then nests each thread's operators by
time containment (self time) and walks the runtime calls that launched kernels through that
nesting (GPU time per operator, inclusive of nested operators; the dtype of the innermost
operator around each matrix-kernel launch, for :mod:`~torchdiag.traces.matrix`).

Every operator's first tensor input dtype is decoded (a small struct, ~1 µs) and stored as a
2-byte id in its thread's columns; names whose first calls carry no ``Input type`` (traces
recorded without ``record_shapes``) stop being decoded.

Times are microseconds here; :meth:`OperatorStats.top` reports milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from torchdiag.record import OpStat
from torchdiag.traces.events import Event, Interner, OpArgs, OpTypes, ThreadColumns, decode_args
from torchdiag.traces.intervals import Intervals, merge_intervals
from torchdiag.traces.launches import KernelLaunches
from torchdiag.traces.matrix import DtypeTime

__all__ = ["VIEW_OPS", "OperatorStats", "ThreadVisitor", "first_tensor_type"]

ThreadKey = tuple[int | str, int | str]
ThreadVisitor = Callable[[ThreadKey, ThreadColumns, list[int], list[int]], None]
"""Called by :meth:`OperatorStats.nest` with each thread, its operators' indices sorted by start
and its kernel-launching runtime calls' indices sorted by start: the sorts are paid once."""

_SIGNATURE_TRIES = 16  # calls per operator name whose args are decoded for dtypes / shapes
# Calls per name without any tensor "Input type" after which its dtypes are no longer decoded.
_UNTYPED_TRIES = 16
_SIGNATURES_KEPT = 4
_NEST_EPS_US = 0.01  # a child may end this much after its parent (rounded timestamps)
# View operators that do nothing but call one other view (as_strided): without the profiler they
# cost a fraction of a microsecond, so their self time under it, when exactly one event is nested
# in them, is the profiler's cost of that event (its enter and exit), plus theirs
# (profiler_event_samples). A view with more nested events would count several costs.
VIEW_OPS = frozenset(
    {
        "aten::t",
        "aten::transpose",
        "aten::expand",
        "aten::unsqueeze",
        "aten::squeeze",
        "aten::permute",
        "aten::slice",
        "aten::select",
        "aten::narrow",
        "aten::diagonal",
    }
)
_VIEW_SAMPLES = 65536  # enough for a median; bounded memory
# "Input type" entries that are not tensor dtypes.
_NON_TENSOR_TYPES = frozenset(
    {"", "Scalar", "ScalarList", "TensorList", "GenericList", "None", "Device", "Layout"}
    | {"ScalarType", "MemoryFormat", "String", "Storage"}
)


def first_tensor_type(types: list[Any] | None) -> str | None:
    """The first entry of an ``Input type`` list that names a tensor dtype."""
    for t in types or ():
        if isinstance(t, str) and t not in _NON_TENSOR_TYPES:
            return t
    return None


class _OpAgg:
    __slots__ = ("calls", "dtypes", "gpu", "self_time", "shapes", "total", "tries", "typed")

    def __init__(self) -> None:
        self.typed = 0  # calls whose dtype was found; decoding stops if the first ones have none
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


class OperatorStats:
    """Per-name operator aggregates: :meth:`add` while streaming, :meth:`nest` once, :meth:`top`."""

    def __init__(self, dtypes: DtypeTime) -> None:
        self.names = Interner()
        self._aggs: list[_OpAgg] = []
        self.dtypes = dtypes
        self.typed_calls = 0  # operators whose input dtype the trace recorded
        self._view: list[bool] = []  # per name id: in VIEW_OPS
        # Self µs of view operators around a nested event: the profiler's cost of one event,
        # filled by nest().
        self.profiler_event_samples: list[float] = []

    def __len__(self) -> int:
        return len(self.names)

    def calls(self, nid: int) -> int:
        """Calls of the operator with name id ``nid``."""
        return self._aggs[nid].calls

    def has_shapes(self) -> bool:
        """Whether any sampled call recorded its input shapes."""
        return any(agg.shapes for agg in self._aggs)

    def add(self, ev: Event, th: ThreadColumns) -> int:
        """Count one ``cpu_op`` event, append it to its thread's columns; its name id."""
        nid = self.names.ids.get(ev.name)
        if nid is None:
            nid = self.names.intern(ev.name)
            self._aggs.append(_OpAgg())
            self._view.append(ev.name in VIEW_OPS)
        agg = self._aggs[nid]
        agg.calls += 1
        th.op_ts.append(ev.ts)
        th.op_dur.append(ev.dur)
        th.op_name.append(nid)
        dtype = -1
        if agg.typed or agg.calls <= _UNTYPED_TRIES:
            args = decode_args(ev.args, OpTypes)
            found = first_tensor_type(args.input_type) if args is not None else None
            if found is not None:
                dtype = self.dtypes.intern(found)
                agg.typed += 1
                self.typed_calls += 1
        th.op_dtype.append(dtype)
        if agg.tries < _SIGNATURE_TRIES:
            agg.tries += 1
            self._signature(agg, ev)
        return nid

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
        dims = args.dims
        if dims and len(agg.shapes) < _SIGNATURES_KEPT:
            shape = _shape_signature(dims)
            if shape and shape not in agg.shapes:
                agg.shapes.append(shape)

    # -- global pass -----------------------------------------------------------------------

    def nest(
        self,
        threads: Mapping[tuple[int | str, int | str], ThreadColumns],
        main_pid: int | str | None,
        launches: KernelLaunches,
        visit: ThreadVisitor | None = None,
    ) -> tuple[Intervals, float]:
        """Self and GPU time of every operator, and the dtype of each matrix-kernel launch.

        Returns (union of the main process's top-level operators, kernel µs that no operator
        launched). ``visit`` sees every thread's sorted operators and launches on the way.
        """
        attributed = 0.0
        top_starts: list[float] = []
        top_ends: list[float] = []
        for key, th in sorted(threads.items(), key=lambda kv: str(kv[0])):
            top = (top_starts, top_ends) if key[0] == main_pid else None
            attributed += self._nest_thread(key, th, launches, top, visit)
        unattributed = launches.total_us - attributed
        return merge_intervals(top_starts, top_ends), max(0.0, unattributed)

    def _nest_thread(
        self,
        key: ThreadKey,
        th: ThreadColumns,
        launches: KernelLaunches,
        top: tuple[list[float], list[float]] | None,
        visit: ThreadVisitor | None,
    ) -> float:
        """Nest one thread's operators; returns the kernel µs attributed to them.

        Operators sorted by (start, longer first) form a stack by time containment. Each runtime
        call that launched kernels (joined by correlation id) adds their time to the operator on
        top of the stack when it starts, and their matrix time to that operator's dtype (or its
        nearest ancestor's, when it has none); popping a frame passes its duration and GPU time
        to its parent, so self time excludes children and GPU time includes them. Total and GPU
        time count only the outermost of nested same-name calls. Top-level operators are
        appended to ``top`` (starts, ends) when given.
        """
        aggs = self._aggs
        ts, dur, names, dtypes = th.op_ts, th.op_dur, th.op_name, th.op_dtype
        order = sorted(range(len(ts)), key=dur.__getitem__, reverse=True)
        order.sort(key=ts.__getitem__)  # stable: equal starts keep the longer (parent) first
        calls = launches.launches_of(th)
        if visit is not None:
            visit(key, th, order, calls)
        call_ts, call_corr, slots = th.rt_ts, th.rt_corr, launches.slots
        first_dur, multi = launches.first_dur, launches.multi
        math_us, triton_us = launches.math, launches.triton
        dtype_time = self.dtypes
        attributed = 0.0
        view, samples = self._view, self.profiler_event_samples
        # frames: [end, name id, duration, children's time, gpu, dtype id, children]
        stack: list[list[float]] = []

        # Frames open per name: an operator nested in one of the same name (autocast re-enters
        # aten::conv2d) must not count its time twice in the name's total and GPU time.
        open_frames = [0] * len(aggs)

        def pop() -> None:
            _, nid, d, children, gpu, _, kids = stack.pop()
            n = int(nid)
            agg = aggs[n]
            agg.self_time += max(0.0, d - children)
            open_frames[n] -= 1
            if not open_frames[n]:
                agg.total += d
                agg.gpu += gpu
            if view[n] and kids == 1 and len(samples) < _VIEW_SAMPLES:
                samples.append(max(0.0, d - children))
            if stack:
                parent = stack[-1]
                parent[3] += d
                parent[4] += gpu
                parent[6] += 1

        def launch(j: int) -> float:
            t = call_ts[j]
            slot = slots[call_corr[j]]
            while stack and stack[-1][0] < t:
                pop()
            if not stack:
                return 0.0
            frame = stack[-1]
            more = multi.get(slot)
            g = more[0] if more is not None else first_dur[slot]
            frame[4] += g
            m = math_us.get(slot)
            if m:
                dtype_time.add(int(frame[5]), m, triton_us.get(slot, 0.0))
            return g

        li, n_calls = 0, len(calls)
        next_call = call_ts[calls[0]] if calls else math.inf
        for i in order:
            start = ts[i]
            d = dur[i]
            end = start + d
            if next_call < start:
                while li < n_calls and call_ts[calls[li]] < start:
                    attributed += launch(calls[li])
                    li += 1
                next_call = call_ts[calls[li]] if li < n_calls else math.inf
            # Pop what ended before this operator, and what it is not inside of (misnested).
            while stack and (stack[-1][0] <= start or stack[-1][0] + _NEST_EPS_US < end):
                pop()
            if not stack and top is not None:
                top[0].append(start)
                top[1].append(end)
            # An operator without a recorded input dtype (a wrapper taking no tensors) launches
            # in the dtype of the nearest operator around it that has one.
            dtype = dtypes[i]
            if dtype < 0 and stack:
                dtype = int(stack[-1][5])
            nid = names[i]
            stack.append([end, nid, d, 0.0, 0.0, dtype, 0])
            open_frames[nid] += 1
        for j in calls[li:]:
            attributed += launch(j)
        while stack:
            pop()
        return attributed

    # -- table -----------------------------------------------------------------------------

    def top(self, n: int) -> list[OpStat]:
        """The ``n`` operators with the most total time (ties by name)."""
        names, aggs = self.names.names, self._aggs
        ranked = sorted(range(len(names)), key=lambda i: (-aggs[i].total, names[i]))
        return [
            OpStat(
                name=names[i],
                calls=aggs[i].calls,
                total_ms=aggs[i].total / 1000,
                self_ms=aggs[i].self_time / 1000,
                gpu_ms=aggs[i].gpu / 1000,
                input_dtypes=list(aggs[i].dtypes),
                input_shapes=list(aggs[i].shapes),
            )
            for i in ranked[:n]
        ]

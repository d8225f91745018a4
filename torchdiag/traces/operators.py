"""CPU operators: per-name aggregates, nesting into self and GPU time, the top-operators table.

:class:`OperatorStats` counts calls and samples input dtypes/shapes while events stream in; the
operators' intervals themselves go into a :class:`~torchdiag.traces.spill.ColumnLog`, because
real traces are not sorted by time. :meth:`OperatorStats.nest` then reads them back sorted per
thread, nests each thread's operators by time containment (self time) and walks the runtime
calls that launched kernels through that nesting (GPU time per operator, inclusive of nested
operators; the dtype of the innermost operator around each matrix-kernel launch, for
:mod:`~torchdiag.traces.matrix`). Its state is the stack of open operators, not the trace.

Every operator's first tensor input dtype is decoded (a small struct, ~1 µs) and stored as a
2-byte id in its thread's columns; names whose first calls carry no ``Input type`` (traces
recorded without ``record_shapes``) stop being decoded.

Times are microseconds here; :meth:`OperatorStats.top` reports milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Container, Iterable
from itertools import groupby
from operator import itemgetter
from typing import Any

from torchdiag.record import OpStat
from torchdiag.traces.events import Event, Interner, OpArgs, OpTypes, decode_args
from torchdiag.traces.matrix import DtypeTime
from torchdiag.traces.spill import ColumnLog

__all__ = ["OP_COLUMNS", "VIEW_OPS", "CallRow", "OpRow", "OperatorStats", "first_tensor_type"]

OP_COLUMNS = "lddlh"
"""An operator's columns in the log: thread index, start, duration (µs), name id, dtype id."""
OpRow = tuple[float, float, int, int, int]
"""(start, -duration, arrival index, name id, dtype id) of one thread's operator: sorted, the
nesting order."""
CallRow = tuple[int, float, int, float, float, float]
"""(thread, start, arrival index, kernel µs, matrix-math µs, Triton matrix µs) of a runtime call
that launched kernels."""

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

    def __init__(self, dtypes: DtypeTime, log: ColumnLog) -> None:
        self.log = log  # OP_COLUMNS
        self._threads, self._starts, self._durations, self._names, self._dtypes = log.cols
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

    def add(self, ev: Event, thread: int) -> int:
        """Count one ``cpu_op`` event, append it to the log's columns; its name id."""
        nid = self.names.ids.get(ev.name)
        if nid is None:
            nid = self.names.intern(ev.name)
            self._aggs.append(_OpAgg())
            self._view.append(ev.name in VIEW_OPS)
        agg = self._aggs[nid]
        agg.calls += 1
        self._threads.append(thread)
        self._starts.append(ev.ts)
        self._durations.append(ev.dur)
        self._names.append(nid)
        dtype = -1
        if agg.typed or agg.calls <= _UNTYPED_TRIES:
            args = decode_args(ev.args, OpTypes)
            found = first_tensor_type(args.input_type) if args is not None else None
            if found is not None:
                dtype = self.dtypes.intern(found)
                agg.typed += 1
                self.typed_calls += 1
        self._dtypes.append(dtype)
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
        ops: Iterable[tuple[int, Iterable[OpRow]]],
        calls: Iterable[CallRow],
        main_threads: Container[int],
        top: ColumnLog | None = None,
    ) -> tuple[float, float]:
        """Self and GPU time of every operator, and the dtype of each matrix-kernel launch.

        ``ops`` gives each thread (by increasing index) with its operators sorted as
        :meth:`_nest_thread` needs them; ``calls`` are every thread's kernel-launching runtime
        calls, sorted by thread then by start and arrival. The top-level operators of
        ``main_threads`` are appended to ``top`` (start, end). Returns (the end of the last
        non-empty top-level operator of ``main_threads``, -inf without one; kernel µs
        attributed to operators).
        """
        attributed = 0.0
        last_end = -math.inf
        call_threads = groupby(calls, key=itemgetter(0))
        call_group = next(call_threads, None)
        for thread, thread_ops in ops:
            # Calls of threads without operators launch from no operator: nothing to attribute.
            while call_group is not None and call_group[0] < thread:
                call_group = next(call_threads, None)
            thread_calls: Iterable[CallRow] = ()
            if call_group is not None and call_group[0] == thread:
                thread_calls = call_group[1]
            into = top if top is not None and thread in main_threads else None
            gpu, end = self._nest_thread(thread_ops, thread_calls, into)
            attributed += gpu
            last_end = max(last_end, end)
        return last_end, attributed

    def _nest_thread(
        self, ops: Iterable[OpRow], calls: Iterable[CallRow], top: ColumnLog | None
    ) -> tuple[float, float]:
        """Nest one thread's operators; returns (kernel µs attributed to them, the end of the
        last non-empty top-level operator or -inf).

        Operators sorted by (start, longer first, arrival) form a stack by time containment.
        Each runtime call that launched kernels (sorted by start, then arrival) adds their time
        to the operator on top of the stack when it starts, and their matrix time to that
        operator's dtype (or its nearest ancestor's, when it has none); popping a frame passes
        its duration and GPU time to its parent, so self time excludes children and GPU time
        includes them. Total and GPU time count only the outermost of nested same-name calls.
        Top-level operators are appended to ``top`` (start, end) when given.
        """
        aggs = self._aggs
        dtype_time = self.dtypes
        attributed = 0.0
        last_end = -math.inf
        view, samples = self._view, self.profiler_event_samples
        top_starts, top_ends = top.cols if top is not None else (None, None)
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

        def launch(call: CallRow) -> float:
            _, t, _, g, m, triton = call
            while stack and stack[-1][0] < t:
                pop()
            if not stack:
                return 0.0
            frame = stack[-1]
            frame[4] += g
            if m:
                dtype_time.add(int(frame[5]), m, triton)
            return g

        pending = iter(calls)
        call = next(pending, None)
        next_call = call[1] if call is not None else math.inf
        top_rows = top.rows if top is not None else 0
        for start, neg_dur, _, nid, dtype in ops:
            d = -neg_dur
            end = start + d
            if next_call < start:
                while call is not None and call[1] < start:
                    attributed += launch(call)
                    call = next(pending, None)
                next_call = call[1] if call is not None else math.inf
            # Pop what ended before this operator, and what it is not inside of (misnested).
            while stack and (stack[-1][0] <= start or stack[-1][0] + _NEST_EPS_US < end):
                pop()
            if not stack and top_starts is not None and top_ends is not None:
                top_starts.append(start)
                top_ends.append(end)
                if len(top_ends) >= top_rows:
                    top.check()  # type: ignore[union-attr]
                if end > start and end > last_end:
                    last_end = end
            # An operator without a recorded input dtype (a wrapper taking no tensors) launches
            # in the dtype of the nearest operator around it that has one.
            if dtype < 0 and stack:
                dtype = int(stack[-1][5])
            stack.append([end, nid, d, 0.0, 0.0, dtype, 0])
            open_frames[nid] += 1
        while call is not None:
            attributed += launch(call)
            call = next(pending, None)
        while stack:
            pop()
        return attributed, last_end

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

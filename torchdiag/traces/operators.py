"""CPU operators: per-name aggregates, nesting into self and GPU time, the top-operators table.

:class:`OperatorStats` counts calls and samples input dtypes/shapes while events stream in; the
operators' intervals themselves go into the host thread's :class:`ThreadColumns`, because real
traces are not sorted by time. :meth:`OperatorStats.nest` then nests each thread's operators by
time containment (self time) and walks the runtime calls that launched kernels through that
nesting (GPU time per operator, inclusive of nested operators).

Times are microseconds here; :meth:`OperatorStats.top` reports milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchdiag.record import OpStat
from torchdiag.traces.events import Event, Interner, OpArgs, ThreadColumns, decode_args
from torchdiag.traces.intervals import Intervals, merge_intervals

__all__ = ["OperatorStats"]

_SIGNATURE_TRIES = 16  # calls per operator name whose args are decoded for dtypes / shapes
_SIGNATURES_KEPT = 4
_NEST_EPS_US = 0.01  # a child may end this much after its parent (rounded timestamps)
# "Input type" entries that are not tensor dtypes.
_NON_TENSOR_TYPES = frozenset(
    {"", "Scalar", "ScalarList", "TensorList", "GenericList", "None", "Device", "Layout"}
    | {"ScalarType", "MemoryFormat", "String", "Storage"}
)


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


class OperatorStats:
    """Per-name operator aggregates: :meth:`add` while streaming, :meth:`nest` once, :meth:`top`."""

    def __init__(self) -> None:
        self.names = Interner()
        self._aggs: list[_OpAgg] = []

    def __len__(self) -> int:
        return len(self.names)

    def add(self, ev: Event, th: ThreadColumns) -> None:
        """Count one ``cpu_op`` event and append its interval to its thread's columns."""
        nid = self.names.intern(ev.name)
        if nid == len(self._aggs):
            self._aggs.append(_OpAgg())
        agg = self._aggs[nid]
        agg.calls += 1
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

    # -- global pass -----------------------------------------------------------------------

    def nest(
        self,
        threads: Mapping[tuple[int | str, int | str], ThreadColumns],
        main_pid: int | str | None,
        kernel_by_corr: Mapping[int, float],
    ) -> tuple[Intervals, float]:
        """Self and GPU time of every operator, given kernel µs per correlation id.

        Returns (union of the main process's top-level operators, kernel µs that no operator
        launched).
        """
        attributed = 0.0
        top_starts: list[float] = []
        top_ends: list[float] = []
        for (pid, _), th in sorted(threads.items(), key=lambda kv: str(kv[0])):
            top = (top_starts, top_ends) if pid == main_pid else None
            attributed += self._nest_thread(th, kernel_by_corr, top)
        unattributed = sum(kernel_by_corr.values()) - attributed
        return merge_intervals(top_starts, top_ends), max(0.0, unattributed)

    def _nest_thread(
        self,
        th: ThreadColumns,
        kernel_by_corr: Mapping[int, float],
        top: tuple[list[float], list[float]] | None,
    ) -> float:
        """Nest one thread's operators; returns the kernel µs attributed to them.

        Operators sorted by (start, longer first) form a stack by time containment. Each runtime
        call that launched kernels (joined by correlation id) adds their time to the operator on
        top of the stack when it starts; popping a frame passes its duration and GPU time to its
        parent, so self time excludes children and GPU time includes them. Total and GPU time
        count only the outermost of nested same-name calls. Top-level operators are appended to
        ``top`` (starts, ends) when given.
        """
        aggs = self._aggs
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
            if not stack and top is not None:
                top[0].append(start)
                top[1].append(end)
            stack.append([end, names[i], dur[i], 0.0, 0.0])
            open_frames[names[i]] += 1
        for t, g in launches[li:]:
            attributed += launch(t, g)
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

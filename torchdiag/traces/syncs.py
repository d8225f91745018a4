"""Host-device synchronisations: which calls made the host wait, where, and what it cost.

A synchronisation is a runtime call that blocks the host until the device caught up
(:data:`~torchdiag.traces.runtime.SYNC`: ``cudaStreamSynchronize``, ``cudaDeviceSynchronize``,
``cudaEventSynchronize``, synchronous ``cudaMemcpy``, their HIP twins ...). Each one is counted
once, by its runtime name.

Operators such as ``aten::item`` or ``aten::nonzero`` *cause* synchronisations but do not always
synchronise (``.item()`` on a CPU tensor does not). So an operator is reported only for the
calls around which a synchronising runtime call actually happened on the same thread; each such
runtime call is credited to the *outermost* of these operators around it (``aten::item`` rather
than the ``aten::_local_scalar_dense`` inside it). Operator entries therefore say what caused
some of the runtime entries' synchronisations; they are not extra ones.

Per step (of the training process): the synchronising calls that started in the step, their
host time clipped to the step, and the GPU idle time from each one's end to the next GPU
activity (what the sync starved the GPU of). The device-wide
synchronisation torch.profiler itself issues when it stops (the training process's last one,
after its last operator) is never counted in a step, whatever the step windows.
"""

from __future__ import annotations

import contextlib
import operator
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from itertools import chain, compress, groupby, repeat
from operator import itemgetter

from torchdiag.record import SyncStat
from torchdiag.traces.events import Interner
from torchdiag.traces.spill import ColumnLog, SpillDir, sort_rows

__all__ = ["SyncTracker", "is_sync_op"]

# Operators that copy a device value to the host (or need its size) and so wait for the device
# when their input lives there; aten::to / _to_copy / copy_ do so for device-to-host copies and
# for copies from pageable host memory.
_SYNC_OPS = frozenset(
    {
        "aten::item",
        "aten::_local_scalar_dense",
        "aten::is_nonzero",
        "aten::nonzero",
        "aten::masked_select",
        "aten::repeat_interleave",
        "aten::bincount",
        "aten::equal",
        "aten::to",
        "aten::_to_copy",
        "aten::copy_",
    }
)
_NEST_EPS_US = 0.01
_DEVICE_SYNCS = frozenset({"cudaDeviceSynchronize", "hipDeviceSynchronize", "cuCtxSynchronize"})

ThreadKey = tuple[int | str, int | str]


def is_sync_op(name: str) -> bool:
    """Whether operator ``name`` can force a host-device synchronisation."""
    return name in _SYNC_OPS or name.startswith(("aten::unique", "aten::_unique"))


class _Spans:
    """Intervals with a name id and a thread index, as columns."""

    __slots__ = ("end", "name", "thread", "ts")

    def __init__(self) -> None:
        self.ts = array("d")
        self.end = array("d")
        self.name = array("l")
        self.thread = array("l")

    def add(self, ts: float, end: float, name: int, thread: int) -> None:
        self.ts.append(ts)
        self.end.append(end)
        self.name.append(name)
        self.thread.append(thread)


class SyncTracker:
    """Collects synchronising calls and candidate operators (:meth:`add_call`, :meth:`add_op`).

    Synchronising calls are few and kept as they come; candidate operators (``aten::to``,
    ``aten::copy_`` ...) are frequent, so they go into a spillable column log.
    """

    def __init__(self, spill: SpillDir, rows: int) -> None:
        self._threads: dict[ThreadKey, int] = {}
        self._keys: list[ThreadKey] = []
        self._call_names = Interner()
        self._op_names = Interner()
        self._calls = _Spans()
        self._spill = spill
        self.ops = ColumnLog("ddll", spill, rows)  # start, end, name id, thread index
        self._profiler_stop = -1  # index of the profiler's own final synchronisation

    def __len__(self) -> int:
        return len(self._calls.ts)

    def _thread(self, key: ThreadKey) -> int:
        idx = self._threads.get(key)
        if idx is None:
            idx = self._threads[key] = len(self._keys)
            self._keys.append(key)
        return idx

    def add_call(self, name: str, key: ThreadKey, ts: float, end: float) -> None:
        """A synchronising runtime call on thread ``key``."""
        self._calls.add(ts, end, self._call_names.intern(name), self._thread(key))

    def add_op(self, name: str, key: ThreadKey, ts: float, end: float) -> None:
        """A call of an operator that may synchronise (:func:`is_sync_op`)."""
        starts, ends, names, threads = self.ops.cols
        starts.append(ts)
        ends.append(end)
        names.append(self._op_names.intern(name))
        threads.append(self._thread(key))

    # -- results ---------------------------------------------------------------------------

    def find_profiler_stop(self, main_pid: int | str | None, last_op_end: float) -> None:
        """Mark the profiler's stop-time device synchronisation, if the trace ends with one.

        It is the training process's last synchronising call, a device-wide one, starting after
        the process's last operator ended (``last_op_end``).
        """
        main = self.main_calls(main_pid)
        if main:
            last = main[-1]
            name = self._call_names.names[self._calls.name[last]]
            if name in _DEVICE_SYNCS and self._calls.ts[last] >= last_op_end:
                self._profiler_stop = last

    def main_calls(self, main_pid: int | str | None) -> list[int]:
        """Indices of the training process's synchronising calls, by start (the profiler's
        own stop-time synchronisation left out)."""
        calls, keys = self._calls, self._keys
        idx = [
            i
            for i in range(len(calls.ts))
            if keys[calls.thread[i]][0] == main_pid and i != self._profiler_stop
        ]
        idx.sort(key=calls.ts.__getitem__)
        return idx

    def main_ends(self, main: Sequence[int]) -> list[float]:
        """The ends of the calls ``main`` (:meth:`main_calls`): where GPU idle gaps may start."""
        return [self._calls.end[i] for i in main]

    def step_figures(
        self,
        main: Sequence[int],
        a: float,
        b: float,
        gaps: Mapping[float, tuple[float, float] | None],
    ) -> tuple[int, float, float]:
        """(syncs, host ms in them, GPU ms starved after them) for the window [a, b).

        ``main`` is :meth:`main_calls`; ``gaps`` maps each of their ends to the GPU idle gap
        from there to the next GPU activity (None when the GPU was busy then, or nothing ran
        after), see :class:`~torchdiag.traces.sweep.Gaps`. A sync returns once the GPU's queue
        is empty, so the GPU then idles until the host issues new work: the gap from each
        sync's end to the next GPU activity (which may lie in the next step) is time the sync
        cost the GPU. Overlapping gaps are counted once.
        """
        calls = self._calls
        ts, end = calls.ts, calls.end
        lo = bisect_left(main, a, key=ts.__getitem__)
        hi = bisect_left(main, b, key=ts.__getitem__)
        if lo == hi:
            return 0, 0.0, 0.0
        host = sum(min(end[i], b) - max(ts[i], a) for i in main[lo:hi])
        found = sorted(g for g in (gaps[end[i]] for i in main[lo:hi]) if g)
        starved = 0.0
        reach = float("-inf")
        for gap_start, gap_end in found:
            starved += max(0.0, gap_end - max(gap_start, reach))
            reach = max(reach, gap_end)
        return hi - lo, host / 1000, starved / 1000

    def stats(
        self, main_pid: int | str | None, windows: Sequence[tuple[float, float]]
    ) -> list[SyncStat]:
        """Runtime-call and operator entries, most synchronisations inside steps first."""
        calls, keys = self._calls, self._keys
        starts = sorted(a for a, _ in windows)
        ends_by_start = {a: b for a, b in windows}

        def in_step(thread: int, t: float) -> bool:
            if keys[thread][0] != main_pid or not starts:
                return False
            k = bisect_right(starts, t) - 1
            return k >= 0 and t < ends_by_start[starts[k]]

        out: dict[str, SyncStat] = {}
        for i in range(len(calls.ts)):
            name = self._call_names.names[calls.name[i]]
            stat = out.get(name)
            if stat is None:
                stat = out[name] = SyncStat(name=name)
            stat.count += 1
            stat.total_ms += (calls.end[i] - calls.ts[i]) / 1000
            if i != self._profiler_stop:
                stat.in_steps += in_step(calls.thread[i], calls.ts[i])
        for thread, ts, end, nid in self._ops_that_synced():
            name = self._op_names.names[nid]
            stat = out.get(name)
            if stat is None:
                stat = out[name] = SyncStat(name=name)
            stat.count += 1
            stat.total_ms += (end - ts) / 1000
            stat.in_steps += in_step(thread, ts)
        return sorted(out.values(), key=lambda s: (-s.in_steps, -s.count, s.name))

    def _ops_that_synced(self) -> list[tuple[int, float, float, int]]:
        """Operator calls credited with at least one synchronising call (outermost wins), as
        (thread, start, end, name id): threads in the order their first candidate operator
        came, each thread's operators by start, longer first."""
        calls = self._calls
        by_thread: dict[int, list[int]] = {}
        for i, th in enumerate(calls.thread):
            by_thread.setdefault(th, []).append(i)
        first_op: dict[int, int] = {}
        for start, (_, _, _, threads) in self.ops.numbered_blocks():
            for th in by_thread.keys() - first_op.keys():
                with contextlib.suppress(ValueError):
                    first_op[th] = start + threads.index(th)
        place = {th: at for at, th in enumerate(sorted(first_op, key=first_op.__getitem__))}
        rows = chain.from_iterable(
            # (thread's place, start, -end, arrival, name id)
            compress(
                zip(
                    map(place.get, threads, repeat(-1)),
                    ts,
                    map(operator.neg, end),
                    range(start, start + len(ts)),
                    names,
                    strict=True,
                ),
                map(place.__contains__, threads),
            )
            for start, (ts, end, names, threads) in self.ops.numbered_blocks()
        )
        threads_by_place = sorted(place, key=place.__getitem__)
        credited: list[tuple[int, float, float, int]] = []
        ordered = sort_rows(rows, "<qddqq", self._spill, self.ops.rows)
        for at, ops in groupby(ordered, key=itemgetter(0)):
            th = threads_by_place[at]
            call_idx = sorted(by_thread[th], key=calls.ts.__getitem__)
            call_ts = [calls.ts[i] for i in call_idx]
            taken = [False] * len(call_idx)
            # Outer operators first: sorted by start, longer first on ties.
            for _, op_ts, neg_end, _, nid in ops:
                op_end = -neg_end
                lo = bisect_left(call_ts, op_ts)
                hi = bisect_right(call_ts, op_end)
                synced = False
                for k in range(lo, hi):
                    if not taken[k] and calls.end[call_idx[k]] <= op_end + _NEST_EPS_US:
                        taken[k] = True
                        synced = True
                if synced:
                    credited.append((th, op_ts, op_end, nid))
        return credited

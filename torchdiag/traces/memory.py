"""Allocator samples from ``[memory]`` instant events, to per-device memory timelines.

PyTorch's profiler (``profile_memory=True``) writes an instant event after every allocation and
free, with the allocator's running totals. :class:`MemorySamples` keeps those totals as columns
(a :class:`~torchdiag.traces.spill.ColumnLog`, which spills to disk) and, at the end, reads them
back sorted by (device, time) to downsample each device's timeline to at most
:data:`MEMORY_POINTS` points, always keeping the peak.
"""

from __future__ import annotations

from collections import Counter
from itertools import chain, groupby
from operator import itemgetter

from torchdiag.record import MemoryTimeline
from torchdiag.traces.events import Event, MemoryArgs, decode_args
from torchdiag.traces.spill import ColumnLog, SpillDir, sort_rows

__all__ = ["MEMORY_POINTS", "MemorySamples"]

MEMORY_POINTS = 512


class MemorySamples:
    """Device allocator samples (:meth:`add`) to :class:`MemoryTimeline` s (:meth:`timelines`).

    Host memory events are skipped: the profiler counts only host allocations made inside its
    window, which says little about the process's memory (the sampler measures that).
    """

    def __init__(self, spill: SpillDir, rows: int) -> None:
        # device, time, allocated bytes, reserved bytes
        self.log = ColumnLog("qdqq", spill, rows)
        self._spill = spill

    def add(self, ev: Event) -> None:
        """Fold in one ``[memory]`` event."""
        args = decode_args(ev.args, MemoryArgs)
        if args is None or args.total_allocated is None:
            return
        allocated = int(args.total_allocated)
        reserved = int(args.total_reserved or 0)
        if args.device_type == 0:  # host memory (c10::DeviceType::CPU)
            return
        device, ts, alloc, res = self.log.cols
        device.append(args.device_id)
        ts.append(ev.ts)
        alloc.append(allocated)
        res.append(reserved)

    def timelines(self, points: int = MEMORY_POINTS) -> list[MemoryTimeline]:
        """One timeline per device, by device index, of at most ``points`` samples."""
        counts: Counter[int] = Counter()
        for block in self.log.blocks():
            counts.update(block[0])
        rows = chain.from_iterable(
            # (device, time, arrival, allocated, reserved): equal times keep arrival order
            zip(device, ts, range(start, start + len(ts)), alloc, res, strict=True)
            for start, (device, ts, alloc, res) in self.log.numbered_blocks()
        )
        out = []
        ordered = sort_rows(rows, "<qdqqq", self._spill, self.log.rows)
        for device, samples in groupby(ordered, key=itemgetter(0)):
            n = counts[device]
            t_us: list[float] = []
            allocated: list[int] = []
            reserved: list[int] = []
            peak_allocated = peak_reserved = None
            # Keep each bucket's highest point (the first of equals): the global peak survives.
            bucket_end = n // points if n > points else 1
            k = 0
            best: tuple[float, int, int] | None = None
            for i, (_, ts, _, alloc, res) in enumerate(samples):
                if peak_allocated is None or alloc > peak_allocated:
                    peak_allocated = alloc
                if peak_reserved is None or res > peak_reserved:
                    peak_reserved = res
                if best is None or alloc > best[1]:
                    best = (ts, alloc, res)
                if i + 1 == bucket_end:
                    t_us.append(best[0])
                    allocated.append(best[1])
                    reserved.append(best[2])
                    best = None
                    k += 1
                    bucket_end = (k + 1) * n // points if n > points else i + 2
            out.append(
                MemoryTimeline(
                    device=device,
                    peak_allocated_bytes=peak_allocated or 0,
                    peak_reserved_bytes=peak_reserved or 0,
                    t_us=t_us,
                    allocated_bytes=allocated,
                    reserved_bytes=reserved,
                )
            )
        return out

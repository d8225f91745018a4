"""Allocator samples from ``[memory]`` instant events, to per-device memory timelines.

PyTorch's profiler (``profile_memory=True``) writes an instant event after every allocation and
free, with the allocator's running totals. :class:`MemorySamples` keeps those totals as columns
per device and downsamples them to at most :data:`MEMORY_POINTS` points per timeline, always
keeping the peak.
"""

from __future__ import annotations

from torchdiag.record import MemoryTimeline
from torchdiag.traces.events import Event, MemoryArgs, MemoryColumns, decode_args

__all__ = ["MEMORY_POINTS", "MemorySamples"]

MEMORY_POINTS = 512


class MemorySamples:
    """Device allocator samples (:meth:`add`) to :class:`MemoryTimeline` s (:meth:`timelines`).

    Host memory events are skipped: the profiler counts only host allocations made inside its
    window, which says little about the process's memory (the sampler measures that).
    """

    def __init__(self) -> None:
        self.devices: dict[int, MemoryColumns] = {}

    def add(self, ev: Event) -> None:
        """Fold in one ``[memory]`` event."""
        args = decode_args(ev.args, MemoryArgs)
        if args is None or args.total_allocated is None:
            return
        allocated = int(args.total_allocated)
        reserved = int(args.total_reserved or 0)
        if args.device_type == 0:  # host memory (c10::DeviceType::CPU)
            return
        cols = self.devices.get(args.device_id)
        if cols is None:
            cols = self.devices[args.device_id] = MemoryColumns()
        cols.ts.append(ev.ts)
        cols.allocated.append(allocated)
        cols.reserved.append(reserved)

    def timelines(self, points: int = MEMORY_POINTS) -> list[MemoryTimeline]:
        """One timeline per device, by device index, of at most ``points`` samples."""
        out = []
        for device, cols in sorted(self.devices.items()):
            order = sorted(range(len(cols.ts)), key=cols.ts.__getitem__)
            n = len(order)
            if n > points:
                # Keep each bucket's highest point: the global peak always survives.
                order = [
                    max(
                        order[k * n // points : (k + 1) * n // points],
                        key=cols.allocated.__getitem__,
                    )
                    for k in range(points)
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

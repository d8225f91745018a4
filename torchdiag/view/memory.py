"""Peak GPU memory of a run, from the profiler's allocator events and NVML, in one place."""

from __future__ import annotations

from dataclasses import dataclass

from torchdiag.record import RunRecord
from torchdiag.view.numbers import finite
from torchdiag.view.step_model import primary_summary


@dataclass(frozen=True)
class MemoryPeaks:
    """Peak bytes by source (0 where the record has none).

    ``allocated``/``reserved`` are the caching allocator's own figures (profiler memory events);
    ``device_used`` is NVML's view of the whole device (allocator cache, CUDA context and other
    processes included).
    """

    allocated: int = 0
    reserved: int = 0
    device_used: int = 0

    @property
    def used(self) -> int:
        """The highest figure any source saw."""
        return max(self.allocated, self.reserved, self.device_used)

    @property
    def source(self) -> str | None:
        """Where the headline peak comes from: NVML when sampled, else the allocator."""
        if self.device_used:
            return "NVML"
        return "allocator reserved" if self.reserved or self.allocated else None


def memory_peaks(record: RunRecord) -> MemoryPeaks:
    """Peak allocated and reserved bytes (profiler memory events) and device use (NVML)."""
    allocated = reserved = device_used = 0
    summary = primary_summary(record)
    for timeline in summary.memory if summary is not None else []:
        allocated = max(allocated, timeline.peak_allocated_bytes)
        reserved = max(reserved, timeline.peak_reserved_bytes)
    for gpu in record.samples.gpus if record.samples is not None else []:
        used = [v for v in gpu.memory_used_bytes if finite(v)]
        if used:
            device_used = max(device_used, int(max(used)))
    return MemoryPeaks(allocated=allocated, reserved=reserved, device_used=device_used)

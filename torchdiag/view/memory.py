"""Peak GPU memory of a run, from the profiler's allocator events and NVML, in one place."""

from __future__ import annotations

from dataclasses import dataclass

from torchdiag.record import RunRecord, TraceSummary
from torchdiag.view.numbers import finite


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


def memory_peaks(record: RunRecord, summary: TraceSummary | None) -> MemoryPeaks:
    """Peak allocated and reserved bytes (``summary``'s memory events) and device use (NVML)."""
    allocated = reserved = device_used = 0
    for timeline in summary.memory if summary is not None else []:
        allocated = max(allocated, timeline.peak_allocated_bytes)
        reserved = max(reserved, timeline.peak_reserved_bytes)
    for gpu in record.samples.gpus if record.samples is not None else []:
        used = [v for v in gpu.memory_used_bytes if finite(v)]
        if used:
            device_used = max(device_used, int(max(used)))
    return MemoryPeaks(allocated=allocated, reserved=reserved, device_used=device_used)


def host_peak_bytes(record: RunRecord) -> int:
    """Peak resident memory of the training process and its DataLoader workers together: the
    highest sample, or the process's own exact peak where that is higher (0 without either)."""
    own = record.peak_rss_bytes or 0
    host = record.samples.host if record.samples is not None else None
    if host is None:
        return own
    peak = float(own)
    workers = host.workers_rss_bytes or [None] * len(host.process_rss_bytes)
    for rss, extra in zip(host.process_rss_bytes, workers, strict=False):
        if finite(rss):
            peak = max(peak, rss + (extra if finite(extra) else 0.0))
    return int(peak)


def run_memory_peak(peaks: MemoryPeaks, host_peak: int) -> tuple[int | None, str]:
    """The memory a run needed at its peak, and of what: the GPU's where it used one, else the
    host process's with its DataLoader workers (``host_peak``, :func:`host_peak_bytes`)."""
    if peaks.used:
        return peaks.used, "GPU"
    return (host_peak or None), "host process and DataLoader workers"

"""Where a step's time goes, estimated once for all rules from the record.

Rules about compute, the host and the batch need the same few figures: how long a step takes
without the profiler, how much of it the GPU was busy, and how much of the rest is explained by
input waits or synchronisations. This module derives them from whatever the record holds:

- a live record measures un-profiled step times directly (``steps``) and the GPU busy time per
  step in its profiler window (GPU kernel times are not inflated by the profiler);
- a trace-only record has profiled steps only. torch.profiler slows the *host* (every recorded
  event costs microseconds), so the host time per step is corrected by the events recorded times
  the profiler's per-event cost, which the trace itself reveals through view-like operators whose
  real cost is well under a microsecond (``TraceSummary.profiler_event_us``). The GPU side needs
  no correction, and the slower of the two sides sets the step time.
"""

from __future__ import annotations

from dataclasses import dataclass

from torchdiag.analyze.step_stats import mean_gpu_busy_share, steady_steps
from torchdiag.record import RunRecord, TraceSummary


@dataclass(frozen=True)
class StepTime:
    """One step's time and what occupied it (milliseconds per step)."""

    step_ms: float
    gpu_busy_ms: float | None
    input_wait_ms: float
    sync_idle_ms: float
    source: str
    # Host work per step without the profiler's cost, time blocked on the GPU and input waits
    # removed; None when no trace window says how busy the host was.
    host_ms: float | None = None

    @property
    def gpu_busy_share(self) -> float | None:
        """Fraction of the step the GPU was busy (None without GPU data)."""
        if self.gpu_busy_ms is None or self.step_ms <= 0:
            return None
        return min(1.0, self.gpu_busy_ms / self.step_ms)

    @property
    def host_bound_share(self) -> float | None:
        """GPU idle time not explained by input waits or syncs: the GPU waiting on the host."""
        busy = self.gpu_busy_share
        if busy is None:
            return None
        rest = 1.0 - busy - (self.input_wait_ms + self.sync_idle_ms) / self.step_ms
        return max(0.0, rest)


def primary_summary(record: RunRecord) -> TraceSummary | None:
    """The trace summary rules judge: the live window, else the slowest rank's trace."""
    if record.profiler is not None and record.profiler.summary is not None:
        return record.profiler.summary
    with_steps = [t for t in record.traces if t.steps]
    if not with_steps:
        return record.traces[0] if record.traces else None
    return max(with_steps, key=lambda t: t.window_ms or sum(s.duration_ms for s in t.steps))


def trace_step_time(summary: TraceSummary) -> StepTime | None:
    """Estimate an un-profiled step from a profiled trace window (None without steps)."""
    n = len(summary.steps)
    if n == 0:
        return None
    host_ms = corrected_host_ms(summary)
    gpu_busy = (summary.window_gpu_busy_ms or sum(s.gpu_busy_ms for s in summary.steps)) / n
    if not summary.has_gpu or gpu_busy <= 0:
        # No GPU activity recorded (a CPU-only trace, or one that lists a device but captured
        # no kernels): nothing can be said about GPU idleness.
        wait = _mean(summary, "dataloader_ms")
        return StepTime(
            step_ms=host_ms + wait,
            gpu_busy_ms=None,
            input_wait_ms=wait,
            sync_idle_ms=0.0,
            source="trace (host time corrected for profiler overhead)",
            host_ms=host_ms,
        )
    # Host and GPU work as a pipeline: the slower side sets the pace. GPU busy time comes from
    # the whole window (the GPU may lag the host by whole steps), so it is not cut short.
    wait = _mean(summary, "dataloader_ms")
    sync_idle = _mean(summary, "idle_after_sync_ms")
    step = max(host_ms + wait + sync_idle, gpu_busy)
    return StepTime(
        step_ms=step,
        gpu_busy_ms=gpu_busy,
        input_wait_ms=wait,
        sync_idle_ms=sync_idle,
        source="profiled trace, host time corrected for profiler overhead",
        host_ms=host_ms,
    )


def corrected_host_ms(summary: TraceSummary) -> float:
    """Host work per step as it would be without the profiler (milliseconds).

    From the steps' host time, remove: the profiler's cost per recorded event; time blocked in
    kernel launches beyond a typical launch (the launch queue was full: the host was waiting for
    the GPU, not working); time in synchronising calls (waiting for the GPU); DataLoader waits
    (reported on their own).
    """
    n = len(summary.steps)
    if n == 0:
        return 0.0
    cpu_ms = sum(s.duration_ms for s in summary.steps)
    profiler_ms = summary.host_events * (summary.profiler_event_us or 0.0) / 1e3
    blocked_ms = sum(s.sync_ms for s in summary.steps) + sum(s.dataloader_ms for s in summary.steps)
    launch = summary.launch
    if launch is not None and launch.launches:
        typical_ms = launch.launches * launch.median_launch_us / 1e3
        in_steps = sum(s.launches for s in summary.steps) / launch.launches
        blocked_ms += max(0.0, launch.launch_ms - typical_ms) * min(1.0, in_steps)
    return max(0.0, cpu_ms - profiler_ms - blocked_ms) / n


def step_time(record: RunRecord) -> StepTime | None:
    """The best estimate of an un-profiled step this record allows."""
    summary = primary_summary(record)
    if record.source == "live" and record.steps.count:
        steady = steady_steps(record)
        if steady.steps == 0 or steady.wall_s <= 0:
            return None
        step_ms = steady.mean_step_ms
        wait_ms = steady.input_wait_s / steady.steps * 1e3
        busy_ms: float | None = None
        sync_idle = 0.0
        source = "live steps"
        host_ms: float | None = None
        if summary is not None and summary.steps:
            host_ms = min(corrected_host_ms(summary), step_ms)
        if summary is not None and summary.has_gpu and summary.steps:
            n = len(summary.steps)
            busy_ms = (summary.window_gpu_busy_ms or summary.gpu_busy_ms) / n
            sync_idle = _mean(summary, "idle_after_sync_ms")
            source = "live steps, GPU busy from the profiler window"
        else:
            nvml = mean_gpu_busy_share(record)
            if nvml is not None:
                # NVML utilisation over-states busy time, so this under-states GPU idleness.
                busy_ms = nvml * step_ms
                source = "live steps, GPU busy from NVML utilisation"
        return StepTime(
            step_ms=step_ms,
            gpu_busy_ms=None if busy_ms is None else min(busy_ms, step_ms),
            input_wait_ms=wait_ms,
            sync_idle_ms=min(sync_idle, step_ms),
            source=source,
            host_ms=host_ms,
        )
    if summary is None:
        return None
    return trace_step_time(summary)


# Kernel-name prefixes that tell a GPU generation when a trace lacks device properties (old
# Kineto traces carry none): cuBLAS/cuDNN/CUTLASS name kernels after the architecture they target.
_ARCH_PREFIXES = (
    ("sm100", 10.0),
    ("sm90", 9.0),
    ("sm89", 8.9),
    ("sm86", 8.6),
    ("sm80", 8.0),
    ("ampere_", 8.0),
    ("turing_", 7.5),
    ("sm75", 7.5),
    ("volta_", 7.0),
    ("sm70", 7.0),
    ("maxwell_", 5.0),
)


def device_capability(record: RunRecord, summary: TraceSummary | None) -> float | None:
    """Compute capability of the first device (e.g. 9.0): from the record or the trace's device
    properties, else inferred from architecture-specific kernel names."""
    devices = list(record.environment.devices)
    if summary is not None:
        devices += summary.devices
    for device in devices:
        if device.capability:
            try:
                return float(device.capability)
            except ValueError:
                continue
    if summary is None:
        return None
    for kernel in summary.top_kernels:
        name = kernel.name.lower()
        for prefix, capability in _ARCH_PREFIXES:
            if name.startswith(prefix) or f"<{prefix}" in name or f" {prefix}" in name:
                return capability
    return None


def device_memory_bytes(record: RunRecord, summary: TraceSummary | None) -> int | None:
    """Total memory of the first device, from the record, the trace or NVML."""
    devices = list(record.environment.devices)
    if summary is not None:
        devices += summary.devices
    for device in devices:
        if device.memory_total_bytes:
            return device.memory_total_bytes
    if record.samples is not None:
        for gpu in record.samples.gpus:
            if gpu.memory_total_bytes:
                return gpu.memory_total_bytes
    return None


def batch_size(record: RunRecord) -> tuple[int | None, str | None]:
    """The training batch size and where it came from, or ``(None, None)``.

    The loader that fed the most batches is the training loader (an evaluation loader iterated
    in the same block must not count); an imported trace knows the batch only from the
    operators' input shapes.
    """
    known = [ld for ld in record.environment.loaders if ld.batch_size]
    if known:
        loader = max(known, key=lambda ld: (ld.batches, -ld.loader_id))
        return loader.batch_size, "DataLoader batch_size"
    summary = primary_summary(record)
    if summary is not None and summary.batch_size:
        return summary.batch_size, summary.batch_size_source or "operator input shapes"
    return None, None


def _mean(summary: TraceSummary, field: str) -> float:
    steps = summary.steps
    return sum(getattr(s, field) for s in steps) / len(steps) if steps else 0.0

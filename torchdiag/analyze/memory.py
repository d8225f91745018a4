"""``memory-pressure``: peak GPU memory near capacity, or much more reserved than allocated."""

from __future__ import annotations

from torchdiag.analyze.finding import Finding, severity_for_saving
from torchdiag.analyze.registry import SkipRule, rule
from torchdiag.record import TraceSummary
from torchdiag.view.run_view import RunView

# Peers flag memory at 90% of capacity (TensorBoard plugin, gpuprof): past that a longer
# sequence, a larger batch or fragmentation is one allocation away from an out-of-memory error.
NEAR_CAPACITY = 0.90
# The caching allocator keeps freed blocks reserved; when it holds twice what is in use, the
# difference is fragmentation the allocator cannot reuse for larger requests. It matters only
# where memory is getting short: below half the device in use, a reserve is free to grow.
FRAGMENTATION_RATIO = 2.0
FRAGMENTATION_MATTERS = 0.5

_ALLOCATOR_CALLS = ("cudaMalloc", "cudaFree", "hipMalloc", "hipFree")


@rule("memory-pressure")
def memory_pressure(view: RunView) -> Finding | None:
    """Peak memory against capacity, fragmentation, and allocator calls inside steps."""
    summary = view.summary
    capacity = view.device_memory_bytes
    peaks = view.memory
    allocated, reserved, device_used = peaks.allocated, peaks.reserved, peaks.device_used
    if not capacity:
        raise SkipRule("device memory capacity unknown (no GPU in the record or trace)")
    if not (allocated or reserved or device_used):
        raise SkipRule("no memory figures (profile_memory events or NVML samples)")
    used = peaks.used
    near = used / capacity
    # Fragmentation compares the allocator's own figures: NVML's used memory also holds the
    # CUDA context and other processes, which no allocator setting frees.
    fragmented = (
        allocated > 0
        and reserved / allocated >= FRAGMENTATION_RATIO
        and near >= FRAGMENTATION_MATTERS
    )
    if near < NEAR_CAPACITY and not fragmented:
        return None
    # Time is lost only when the allocator has to go back to the driver (cudaMalloc/cudaFree
    # after freeing its cache); that time, inside steps, is the saving bound.
    timing = view.timing
    alloc_ms = _allocator_ms(summary)
    saving = 0.0
    if timing is not None and timing.step_ms > 0 and summary is not None and summary.steps:
        saving = min(alloc_ms / len(summary.steps), timing.step_ms) / timing.step_ms * 100
    title = (
        f"peak GPU memory at {near * 100:.0f}% of capacity"
        if near >= NEAR_CAPACITY
        else f"allocator reserves {reserved / allocated:.1f}x the memory in use"
    )
    return Finding(
        id="memory-pressure",
        severity=severity_for_saving(saving),
        title=title,
        evidence={
            "peak_used_pct_of_capacity": round(near * 100, 1),
            "peak_allocated_gib": round(allocated / 2**30, 2) if allocated else None,
            "peak_reserved_gib": round(reserved / 2**30, 2) if reserved else None,
            "nvml_peak_used_gib": round(device_used / 2**30, 2) if device_used else None,
            "capacity_gib": round(capacity / 2**30, 2),
            "allocator_calls_ms_in_trace": round(alloc_ms, 2),
        },
        recommendation=(
            "Leave headroom or cut activation memory: activation checkpointing, a smaller "
            "micro-batch with gradient accumulation, mixed precision, or "
            "expandable segments to reduce fragmentation."
        ),
        snippet=(
            "# before the first CUDA allocation (or in the environment):\n"
            "os.environ['PYTORCH_CUDA_ALLOC_CONF'] = 'expandable_segments:True'"
        ),
        saving_pct_max=round(saving, 1),
    )


def _allocator_ms(summary: TraceSummary | None) -> float:
    if summary is None:
        return 0.0
    return sum(s.total_ms for s in summary.syncs if s.name.startswith(_ALLOCATOR_CALLS))

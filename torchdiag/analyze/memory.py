"""``memory-pressure``: peak memory near capacity, or much more reserved than allocated, and
what fills the peak where the profiler window categorised it (the fix follows the category)."""

from __future__ import annotations

from dataclasses import dataclass

from torchdiag.analyze.finding import Finding, severity_for_saving
from torchdiag.analyze.registry import SkipRule, rule
from torchdiag.analyze.wording import is_inference
from torchdiag.record import TraceSummary
from torchdiag.view.memory_breakdown import PER_SAMPLE_CATEGORIES
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


# What fills memory at the peak, grouped by the fix that targets it: (name, categories). The
# activations are the categories that grow with the batch, as the memory breakdown counts them.
MEMORY_GROUPS = (
    ("activations", PER_SAMPLE_CATEGORIES),
    ("optimizer state", ("optimizer_state",)),
    ("parameters", ("parameter",)),
    ("gradients", ("gradient",)),
)


@dataclass(frozen=True)
class _Advice:
    recommendation: str
    snippet: str


# The two snippets the memory findings (here and out-of-memory) lead with.
EXPANDABLE_SEGMENTS_SNIPPET = (
    "# before the first CUDA allocation (or in the environment):\n"
    "os.environ['PYTORCH_CUDA_ALLOC_CONF'] = 'expandable_segments:True'"
)
CHECKPOINT_SNIPPET = (
    "from torch.utils.checkpoint import checkpoint\n"
    "x = checkpoint(block, x, use_reentrant=False)  # per block of the model"
)

_FRAGMENTATION = _Advice(
    "The allocator holds far more than is in use: freed blocks it cannot reuse for larger "
    "requests. Expandable segments let it grow and reuse segments instead of stranding them.",
    EXPANDABLE_SEGMENTS_SNIPPET,
)
_ADVICE = {
    "activations": _Advice(
        "Activations fill the peak, and they grow with the batch: checkpoint activations "
        "(recompute them in the backward: torchdiag try --fix checkpointing measures it), run "
        "the forward under bf16/fp16 autocast (half the bytes per activation), or halve the "
        "micro-batch and accumulate gradients over two of them.",
        CHECKPOINT_SNIPPET + "\n# or: half the micro-batch, optimizer.step() every 2 micro-batches",
    ),
    "optimizer state": _Advice(
        "The optimizer's state fills the peak (Adam keeps two values per parameter): use a "
        "lighter optimizer (SGD with momentum keeps one, Adafactor factors it, 8-bit Adam "
        "quarters it) or shard the state across ranks (ZeRO, FSDP).",
        "from torch.distributed.optim import ZeroRedundancyOptimizer\n"
        "optimizer = ZeroRedundancyOptimizer(model.parameters(), "
        "optimizer_class=torch.optim.AdamW, lr=lr)",
    ),
    "parameters": _Advice(
        "The model's weights fill the peak: keep them in bf16 (half the bytes) or shard them "
        "across ranks (FSDP).",
        "model = torch.distributed.fsdp.fully_shard(model)  # or: model.to(torch.bfloat16)",
    ),
    "gradients": _Advice(
        "Gradients fill the peak: free them as soon as the optimizer has used them "
        "(zero_grad(set_to_none=True)), keep them in bf16, or shard them (FSDP).",
        "optimizer.zero_grad(set_to_none=True)",
    ),
}
# An inference run has no backward to checkpoint for or gradients to accumulate.
_INFERENCE_ACTIVATIONS = _Advice(
    "Activations fill the peak, and they grow with the batch: run the calls under "
    "torch.inference_mode() (each layer's output is freed once the next has read it), keep the "
    "weights and inputs in bf16/fp16 (half the bytes), or serve smaller batches.",
    "model = model.to(torch.bfloat16)\n"
    "with torch.inference_mode():\n"
    "    out = model(inputs.to(torch.bfloat16))",
)
_GENERIC = _Advice(
    "Leave headroom or cut activation memory: activation checkpointing, a smaller micro-batch "
    "with gradient accumulation, mixed precision, or expandable segments to reduce "
    "fragmentation.",
    EXPANDABLE_SEGMENTS_SNIPPET,
)


@rule("memory-pressure")
def memory_pressure(view: RunView) -> Finding | None:
    """Peak memory against capacity, fragmentation, and allocator calls inside steps; what
    fills the peak where the profiler window categorised it."""
    summary = view.summary
    peaks = view.memory
    breakdown = view.memory_breakdown
    capacity = view.device_memory_bytes
    allocated, reserved, device_used = peaks.allocated, peaks.reserved, peaks.device_used
    used = peaks.used
    if not capacity and breakdown.capacity_bytes and breakdown.peak_bytes:
        # A CPU run: the categorised peak against the host's memory.
        capacity, used = breakdown.capacity_bytes, breakdown.peak_bytes
    if not capacity:
        raise SkipRule("memory capacity unknown (no GPU in the record or trace, no host figure)")
    if not (used or allocated or reserved or device_used):
        raise SkipRule("no memory figures (profile_memory events or NVML samples)")
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
    where = "GPU" if view.device_memory_bytes else "host"
    title = (
        f"peak {where} memory at {near * 100:.0f}% of capacity"
        if near >= NEAR_CAPACITY
        else f"allocator reserves {reserved / allocated:.1f}x the memory in use"
    )
    evidence: dict[str, float | int | str | bool | None] = {
        "peak_used_pct_of_capacity": round(near * 100, 1),
        "peak_allocated_gib": _gib(allocated),
        "peak_reserved_gib": _gib(reserved),
        "nvml_peak_used_gib": _gib(device_used),
        "capacity_gib": round(capacity / 2**30, 2),
        "allocator_calls_ms_in_trace": round(alloc_ms, 2),
    }
    advice = _FRAGMENTATION if fragmented and near < NEAR_CAPACITY else _GENERIC
    dominant = _dominant(breakdown.at_peak)
    if dominant is not None:
        group, group_bytes = dominant
        total = sum((breakdown.at_peak or {}).values())
        title += f": {group} fill {group_bytes / total * 100:.0f}% of it"
        evidence["largest_at_peak"] = group
        evidence["largest_at_peak_gib"] = _gib(group_bytes)
        evidence["largest_at_peak_pct"] = round(group_bytes / total * 100, 1)
        for name, categories in MEMORY_GROUPS:
            evidence[f"{name.replace(' ', '_')}_at_peak_gib"] = _gib(
                sum((breakdown.at_peak or {}).get(c, 0) for c in categories)
            )
        if breakdown.largest_batch is not None:
            evidence["largest_batch_estimate"] = breakdown.largest_batch
        if not fragmented or near >= NEAR_CAPACITY:
            advice = _ADVICE[group]
            if group == "activations" and is_inference(view):
                advice = _INFERENCE_ACTIVATIONS
    return Finding(
        id="memory-pressure",
        severity=severity_for_saving(saving),
        title=title,
        evidence=evidence,
        recommendation=advice.recommendation,
        snippet=advice.snippet,
        saving_pct_max=round(saving, 1),
    )


def _gib(value: float | None) -> float | None:
    return round(value / 2**30, 2) if value else None


def _dominant(at_peak: dict[str, int] | None) -> tuple[str, int] | None:
    """The group of categories holding the most at the peak, with its bytes (None without
    categories)."""
    if not at_peak or sum(at_peak.values()) <= 0:
        return None
    sizes = [(name, sum(at_peak.get(c, 0) for c in cats)) for name, cats in MEMORY_GROUPS]
    name, size = max(sizes, key=lambda pair: pair[1])
    return (name, size) if size > 0 else None


def _allocator_ms(summary: TraceSummary | None) -> float:
    if summary is None:
        return 0.0
    return sum(s.total_ms for s in summary.syncs if s.name.startswith(_ALLOCATOR_CALLS))

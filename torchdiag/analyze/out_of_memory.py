"""``out-of-memory``: the run failed because an allocation did not fit.

The finding names the request that failed and where, what was in use at that moment, and what
to do, ranked by what each option would free. Only what the record measures is put in numbers;
an option whose saving this run did not measure says so instead of guessing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torchdiag.analyze.finding import Finding
from torchdiag.analyze.memory import CHECKPOINT_SNIPPET, EXPANDABLE_SEGMENTS_SNIPPET
from torchdiag.analyze.registry import rule
from torchdiag.record import OutOfMemory, RunRecord
from torchdiag.view.memory_breakdown import PER_SAMPLE_CATEGORIES
from torchdiag.view.run_view import RunView

GIB = 2**30
# Cached but unused blocks (reserved − allocated) worth a setting change: as large as the
# request that failed (it would have fit), or 5% of the device.
FRAGMENTATION_SHARE = 0.05
# Bytes of state per parameter byte an optimizer keeps: Adam's two moments, SGD's momentum.
_STATE_PER_PARAMETER = {"Adam": 2.0, "AdamW": 2.0, "NAdam": 2.0, "RAdam": 2.0, "Adamax": 2.0}
# What 8-bit Adam (bitsandbytes) keeps of Adam's fp32 state: a byte per value instead of four.
_EIGHT_BIT_SHARE = 0.25
_DTYPE_BYTES = {
    "float64": 8,
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "int64": 8,
    "int32": 4,
    "int8": 1,
    "uint8": 1,
}


@dataclass(frozen=True)
class Option:
    """One thing to do, and the bytes it would free (None: not measured in this run)."""

    text: str
    frees: int | None


def size(n: int | float) -> str:
    """Bytes as people read them: "96.0 GiB", "20.0 MiB"."""
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _gib(n: int | None) -> float | None:
    return round(n / GIB, 3) if n is not None else None


def window_categories(view: RunView, oom: OutOfMemory) -> Mapping[str, int] | None:
    """What was in use by category (name → bytes) where the profiler window covered the
    failure: its categories at the window's peak (:attr:`RunView.memory_breakdown`), with
    ``activations`` the categories that grow with the batch. None otherwise: the allocator's
    statistics in the record then stand alone."""
    at_peak = view.memory_breakdown.at_peak
    if not oom.in_profiler_window or not at_peak:
        return None
    activations = sum(at_peak.get(name, 0) for name in PER_SAMPLE_CATEGORIES)
    return {**at_peak, "activations": activations}


def where(oom: OutOfMemory) -> str:
    """``train.py:42``, or '' when no frame was recorded."""
    return f"{oom.source.file}:{oom.source.line}" if oom.source else ""


def _parameter_bytes(record: RunRecord, device: str) -> int | None:
    """Bytes of the trained parameters on the failing device's kind, where recorded."""
    params = record.environment.parameters
    if params is None or not params.elements_by_dtype:
        return None
    kind = device.partition(":")[0]
    if params.devices and not any(d.partition(":")[0] == kind for d in params.devices):
        return None
    return sum(n * _DTYPE_BYTES.get(dtype, 4) for dtype, n in params.elements_by_dtype.items())


def options(view: RunView, oom: OutOfMemory) -> list[Option]:
    """What to do, most freed first; options whose saving is unknown after those measured."""
    record = view.record
    found: list[Option] = []
    categories = window_categories(view, oom) or {}
    activations = categories.get("activations")
    if oom.allocated_bytes is not None and oom.reserved_bytes is not None:
        cached = oom.reserved_bytes - oom.allocated_bytes
        share = int(oom.capacity_bytes * FRAGMENTATION_SHARE) if oom.capacity_bytes else 0
        bars = [b for b in (oom.requested_bytes, share) if b]
        if cached > 0 and cached >= min(bars, default=0):
            found.append(
                Option(
                    f"set PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True: {size(cached)} was "
                    "reserved by the caching allocator but not in use (fragmentation), "
                    "unusable for this request",
                    cached,
                )
            )
    half = activations // 2 if activations else None
    measured = "" if activations else " (activation memory was not measured in this run)"
    found.append(
        Option(
            "halve the batch and accumulate gradients over two micro-batches (the same "
            f"effective batch): frees about half the activations{measured}",
            half,
        )
    )
    found.append(
        Option(
            "checkpoint activations (torch.utils.checkpoint) in the large blocks: recomputes "
            f"them in the backward instead of keeping them{measured}",
            int(activations * 0.7) if activations else None,
        )
    )
    autocast = record.environment.autocast
    if record.mode == "training" and (autocast is None or not autocast.entered):
        found.append(
            Option(
                "train under torch.autocast with bf16: activations of the matmuls and "
                f"convolutions take half the bytes{measured}",
                half,
            )
        )
    params = _parameter_bytes(record, oom.device)
    for opt in record.environment.optimizers:
        per = _STATE_PER_PARAMETER.get(opt.class_name)
        if per is None or params is None:
            continue
        state = int(params * per)
        held = opt.steps > 0
        note = "" if held else " (allocated at its first step, not yet held at this failure)"
        found.append(
            Option(
                f"a lighter optimizer: {opt.class_name} keeps {size(state)} of state{note}; "
                "8-bit Adam (bitsandbytes) keeps a quarter of it, SGD with momentum half",
                int(state * (1 - _EIGHT_BIT_SHARE)) if held else None,
            )
        )
        break
    known = sorted((o for o in found if o.frees), key=lambda o: -(o.frees or 0))
    return known + [o for o in found if not o.frees]


@rule("out-of-memory")
def out_of_memory(view: RunView) -> Finding | None:
    """The block ended with an allocation failure: the request, the memory in use, the fixes."""
    oom = view.record.status.out_of_memory
    if view.record.status.state != "failed" or oom is None:
        return None
    at = where(oom)
    request = f"a {size(oom.requested_bytes)} request" if oom.requested_bytes else "a request"
    title = f"out of memory: {request} on {oom.device} failed"
    if at:
        title += f" at {at}"
    if oom.operator:
        title += f" (in {oom.operator})"
    capacity = oom.capacity_bytes
    evidence: dict[str, float | int | str | bool | None] = {
        "device": oom.device,
        "requested_bytes": oom.requested_bytes,
        "requested_gib": _gib(oom.requested_bytes),
        "failed_in_step": oom.step,
        "capacity_gib": _gib(capacity),
        ("host_available_gib" if oom.device == "cpu" else "free_gib"): _gib(oom.free_bytes),
        "process_in_use_gib": _gib(oom.process_bytes),
        "allocated_gib": _gib(oom.allocated_bytes),
        "reserved_gib": _gib(oom.reserved_bytes),
        "inactive_split_gib": _gib(oom.inactive_split_bytes),
        "figures_read": (
            "by the allocator at the failure"
            if oom.observed == "allocator"
            else "when the exception left the block"
        ),
    }
    if oom.source is not None:
        evidence["failed_at"] = f"{at} in {oom.source.function}: {oom.source.code}".strip()
    if oom.operator:
        evidence["torch_function"] = oom.operator
    for name, used in sorted((window_categories(view, oom) or {}).items()):
        evidence[f"in_use_gib:{name}"] = _gib(used)
    evidence = {k: v for k, v in evidence.items() if v is not None}
    steps: list[str] = []
    ranked = options(view, oom)
    if oom.requested_bytes and capacity and oom.requested_bytes > capacity:
        # Nothing else in use matters: freeing all of it would not make room.
        memory = "the host's memory" if oom.device == "cpu" else f"{oom.device}'s memory"
        steps.append(
            f"the request alone ({size(oom.requested_bytes)}) is larger than all of {memory} "
            f"({size(capacity)}): no setting makes it fit; check the shape of the tensor "
            f"allocated{' at ' + at if at else ''} (a wrong dimension, a batch or sequence "
            "length far too large)"
        )
        ranked = []
    for o in ranked:
        freed = f" [frees {size(o.frees)}]" if o.frees else ""
        steps.append(o.text + freed)
    recommendation = "Ranked by what each would free: " + "; ".join(
        f"({i}) {text}" for i, text in enumerate(steps, 1)
    )
    fragmented_first = ranked and ranked[0].text.startswith("set PYTORCH_CUDA_ALLOC_CONF")
    snippet = EXPANDABLE_SEGMENTS_SNIPPET if fragmented_first else CHECKPOINT_SNIPPET
    return Finding(
        id="out-of-memory",
        severity="critical",
        title=title,
        evidence=evidence,
        recommendation=recommendation,
        snippet=snippet,
        blocking=True,
    )

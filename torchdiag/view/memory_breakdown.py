"""What fills memory at the peak, and the largest batch that would fit: one derivation.

The profiler window's memory categories (``record.profiler.memory_categories``) split the peak
into what does not grow with the batch (the model's state) and what does (activations and the
rest), so the peak at another batch size is ``fixed + per_sample × batch`` and the largest batch
that fits follows. Where ``torchdiag try batch=xK`` measured the peak at a second batch size,
the two peaks give that line directly (a two-point fit), which is preferred: it measures what
the categories can only assume.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from torchdiag.record import MEMORY_CATEGORIES, MemoryCategories, RunRecord

# Left free of the capacity when estimating the largest batch. Allocators do not fill memory to
# the last byte: the CUDA caching allocator rounds blocks up and fragments (its reserved memory
# runs some 5-10% above what is allocated at a peak), the CUDA context takes a few hundred MiB
# outside it, and on the host the OS and other processes need room. 10% covers the usual case.
ALLOCATOR_MARGIN = 0.10

# Categories that do not grow with the batch. "unknown" is counted here: at the peak it holds
# chiefly what torch over-filed as model state and the optimizer's intermediates (the capture
# moves both there), which scale with the parameters, not the batch; counting it per sample
# would make the model's state look batch-sized.
FIXED_CATEGORIES = ("parameter", "gradient", "optimizer_state", "unknown")
PER_SAMPLE_CATEGORIES = ("activation", "input", "temporary", "autograd_detail")

_BATCH_FIX = re.compile(r"^batch=x(\d+)$")


@dataclass(frozen=True)
class MemoryBreakdown:
    """The memory peak by category and the largest batch estimate (None where unknown).

    ``largest_batch`` is an estimate: ``floor((capacity × (1 − margin) − fixed) / per_sample)``;
    ``largest_batch_rests_on`` says from what.
    """

    peak_bytes: int | None = None
    capacity_bytes: int | None = None
    at_peak: dict[str, int] | None = None
    top_at_peak: list[dict[str, Any]] = field(default_factory=list)
    fixed_bytes: int | None = None
    per_sample_bytes: float | None = None
    batch_size: int | None = None
    largest_batch: int | None = None
    largest_batch_rests_on: str = ""
    device: str | None = None
    t_ms: list[float] = field(default_factory=list)
    timeline: dict[str, list[int]] = field(default_factory=dict)

    def predicted_peak(self, batch: int) -> int | None:
        """The peak this breakdown predicts at ``batch`` (``fixed + per_sample × batch``), or
        None where either part is unknown."""
        if self.fixed_bytes is None or self.per_sample_bytes is None:
            return None
        return round(self.fixed_bytes + self.per_sample_bytes * batch)

    def document(self) -> dict[str, Any]:
        """The ``memory`` block of the JSON report (every key present; nulls where unknown)."""
        return {
            "peak_bytes": self.peak_bytes,
            "capacity_bytes": self.capacity_bytes,
            "at_peak": dict(self.at_peak) if self.at_peak is not None else None,
            "top_at_peak": [dict(op) for op in self.top_at_peak],
            "fixed_bytes": self.fixed_bytes,
            "per_sample_bytes": self.per_sample_bytes,
            "batch_size": self.batch_size,
            "largest_batch": self.largest_batch,
            "largest_batch_rests_on": self.largest_batch_rests_on or None,
        }


def memory_categories(record: RunRecord) -> MemoryCategories | None:
    """The window's categories, where the record has any (live runs with the collector)."""
    window = record.profiler
    if window is None or window.memory_categories is None:
        return None
    cats = window.memory_categories
    return cats if cats.peak_bytes > 0 else None


def capacity(record: RunRecord, device: str | None, device_memory: int | None) -> int | None:
    """The memory the run's device has: the accelerator's, or for a CPU run the host's RAM."""
    if device is not None and device.startswith("cpu"):
        if record.environment.memory_total_bytes:
            return record.environment.memory_total_bytes
        host = record.samples.host if record.samples is not None else None
        return host.memory_total_bytes if host is not None else None
    return device_memory


def _two_points(record: RunRecord, batch: int | None) -> tuple[int, int, int, int] | None:
    """(batch1, peak1, batch2, peak2) from a measured ``batch=xK`` fix, or None."""
    if not batch:
        return None
    for fix in record.measured_fixes:
        match = _BATCH_FIX.match(fix.fix)
        if not match or not fix.applicable or fix.error:
            continue
        factor = int(match.group(1))
        if factor > 1 and fix.memory_peak_bytes and fix.baseline_memory_peak_bytes:
            return batch, fix.baseline_memory_peak_bytes, batch * factor, fix.memory_peak_bytes
    return None


def memory_breakdown(
    record: RunRecord, batch: int | None, device_memory: int | None
) -> MemoryBreakdown:
    """The breakdown of ``record``'s memory peak; ``batch`` is the run's batch size and
    ``device_memory`` the accelerator's total memory (the view's figures)."""
    cats = memory_categories(record)
    device = cats.device if cats is not None else None
    cap = capacity(record, device, device_memory) if cats is not None else None
    fixed: float | None = None
    per_sample: float | None = None
    rests_on = ""
    points = _two_points(record, batch)
    if points is not None:
        b1, p1, b2, p2 = points
        per_sample = (p2 - p1) / (b2 - b1)
        fixed = p1 - per_sample * b1
        rests_on = (
            f"the memory peaks measured at batch {b1} and {b2} (torchdiag try), a straight line "
            "through them"
        )
        if cap is None:
            cap = capacity(record, device or "cuda", device_memory)
    elif cats is not None:
        fixed_names: tuple[str, ...] = FIXED_CATEGORIES
        growing_names: tuple[str, ...] = PER_SAMPLE_CATEGORIES
        unknown_is = "fixed"
        if record.mode == "inference":
            # Without a backward torch's categoriser cannot tell activations (it knows them by
            # the autograd graph): beside the weights, an inference peak is the data flowing
            # through the model, which grows with the batch.
            fixed_names = tuple(n for n in FIXED_CATEGORIES if n != "unknown")
            growing_names = (*PER_SAMPLE_CATEGORIES, "unknown")
            unknown_is = "growing"
        fixed = sum(cats.at_peak.get(n, 0) for n in fixed_names)
        if batch:
            growing = sum(cats.at_peak.get(n, 0) for n in growing_names)
            per_sample = growing / batch
            rests_on = (
                f"one profiled batch of {batch}: parameters, gradients and optimizer state at "
                "the peak taken as fixed, activations, inputs, temporaries and autograd buffers "
                f"as growing in proportion to the batch, unknown memory as {unknown_is} "
                f"({record.mode} run)"
            )
    largest = None
    if cap and fixed is not None and per_sample and per_sample > 0:
        room = cap * (1.0 - ALLOCATOR_MARGIN) - fixed
        largest = max(0, math.floor(room / per_sample))
        rests_on += f"; {ALLOCATOR_MARGIN:.0%} of the capacity left to the allocator"
    if cats is None:
        return MemoryBreakdown(
            capacity_bytes=cap,
            fixed_bytes=round(fixed) if fixed is not None else None,
            per_sample_bytes=per_sample,
            batch_size=batch,
            largest_batch=largest,
            largest_batch_rests_on=rests_on,
        )
    return MemoryBreakdown(
        peak_bytes=cats.peak_bytes,
        capacity_bytes=cap,
        at_peak={n: int(cats.at_peak.get(n, 0)) for n in MEMORY_CATEGORIES},
        top_at_peak=[{"name": op.name, "bytes": op.bytes} for op in cats.top_at_peak],
        fixed_bytes=round(fixed) if fixed is not None else None,
        per_sample_bytes=per_sample,
        batch_size=batch,
        largest_batch=largest,
        largest_batch_rests_on=rests_on,
        device=cats.device,
        t_ms=list(cats.t_ms),
        timeline={n: list(v) for n, v in cats.timeline.items()},
    )

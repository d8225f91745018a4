"""The headline numbers of a run: one dictionary every output (cards, Markdown, text, JSON, diff)
reads, so the same quantity is the same number everywhere.

Step time, GPU busy share, input wait and throughput all come from the one step model
(:func:`torchdiag.view.step_model.step_time`); step-row percentiles from the record's step rows
(live) or the profiled steps (a trace), labelled as such.
"""

from __future__ import annotations

from typing import Any

from torchdiag.record import RunRecord, TraceSummary
from torchdiag.view.numbers import finite, rounded, weighted_quantile
from torchdiag.view.step_model import batch_size, primary_summary, step_time


def headline(record: RunRecord) -> dict[str, Any]:
    """The key numbers of a run; a value is ``None`` when the record does not have it.

    ``step_ms_estimate`` is the un-profiled step (measured on a live run, estimated from a trace)
    with ``step_ms_estimate_range`` [low, high]; ``step_ms_profiled`` the mean step inside the
    profiler window; ``median_step_ms``/``p95_step_ms`` are over the live step rows, or over the
    profiled steps of a trace (``step_rows``: "live" or "profiled"). ``samples_per_s`` is the
    batch over ``step_ms_estimate``; ``gpu_busy_pct`` and ``input_wait_pct`` are shares of it.
    """
    timing = step_time(record)
    summary = primary_summary(record)
    walls, weights, rows_from = _step_rows(record, summary)
    batch, _ = batch_size(record)
    util, mem_peak, mem_total = _gpu_samples(record)
    mem_from = "NVML" if mem_peak is not None else None
    if mem_peak is None and summary is not None and summary.memory:
        mem_peak = max(m.peak_reserved_bytes or m.peak_allocated_bytes for m in summary.memory)
        mem_peak = mem_peak or None
        mem_total = next((d.memory_total_bytes for d in summary.devices), None)
        mem_from = "allocator reserved" if mem_peak else None
    step = timing.step_ms if timing is not None and timing.step_ms > 0 else None
    low, high = timing.range_ms if timing is not None else (None, None)
    busy = timing.gpu_busy_share if timing is not None else None
    return {
        "steps": _step_count(record, summary),
        "step_rows": rows_from,
        "duration_s": rounded(record.duration_s) if record.duration_s > 0 else None,
        "step_ms_estimate": rounded(step),
        "step_ms_estimate_range": [rounded(low), rounded(high)] if step is not None else None,
        "step_time_measured": bool(timing is not None and timing.measured),
        "step_ms_profiled": rounded(timing.profiled_ms) if timing is not None else None,
        "estimate_steps": timing.steps if timing is not None else 0,
        "bound": timing.bound if timing is not None else None,
        "median_step_ms": rounded(weighted_quantile(walls, weights, 0.5)),
        "p95_step_ms": rounded(weighted_quantile(walls, weights, 0.95)),
        "input_wait_pct": rounded(100 * timing.input_wait_share) if step is not None else None,
        "gpu_busy_pct": rounded(100 * busy) if busy is not None else None,
        "batch_size": batch,
        "samples_per_s": rounded(batch * 1000.0 / step) if batch and step else None,
        "gpu_util_mean_pct": rounded(util),
        "gpu_memory_peak_bytes": mem_peak,
        "gpu_memory_total_bytes": mem_total,
        "gpu_memory_peak_from": mem_from,
    }


def _step_count(record: RunRecord, summary: TraceSummary | None) -> int:
    if record.steps.count or record.steps.wall_ms:
        return record.steps.count or int(sum(record.steps.steps))
    return len(summary.steps) if summary is not None else 0


def _step_rows(
    record: RunRecord, summary: TraceSummary | None
) -> tuple[list[float], list[float], str | None]:
    """(row walls ms, row weights, "live" | "profiled") from the best source."""
    s = record.steps
    if s.wall_ms:
        # A record built from traces keeps the profiled steps in its step series.
        source = "profiled" if record.source == "trace" else "live"
        weights = [float(n) for n in s.steps] if len(s.steps) == len(s.wall_ms) else []
        return list(s.wall_ms), weights or [1.0] * len(s.wall_ms), source
    if summary is None or not summary.steps:
        return [], [], None
    walls = [st.duration_ms for st in summary.steps]
    return walls, [1.0] * len(walls), "profiled"


def _gpu_samples(record: RunRecord) -> tuple[float | None, int | None, int | None]:
    """(mean NVML utilisation %, peak memory used bytes, that GPU's total bytes)."""
    samples = record.samples
    if samples is None or not samples.gpus:
        return None, None, None
    merged = samples.rows_merged
    util_sum = util_weight = 0.0
    peak: float | None = None
    peak_total: int | None = None
    for gpu in samples.gpus:
        for i, u in enumerate(gpu.utilization_pct):
            if finite(u):
                # Each row is the mean of rows_merged[i] raw samples; weight it accordingly.
                w = float(merged[i]) if i < len(merged) and merged[i] > 0 else 1.0
                util_sum += w * u
                util_weight += w
        for m in gpu.memory_used_bytes:
            if finite(m) and (peak is None or m > peak):
                peak, peak_total = m, gpu.memory_total_bytes
    util = util_sum / util_weight if util_weight else None
    return util, (int(peak) if peak is not None else None), peak_total

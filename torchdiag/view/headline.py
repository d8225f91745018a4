"""The headline numbers of a run: one dictionary every output (cards, Markdown, text, JSON, diff)
reads, so the same quantity is the same number everywhere.

Step time, GPU busy share, input wait and throughput all come from the one step model
(:attr:`torchdiag.view.run_view.RunView.timing`); step-row percentiles from the record's step rows
(live) or the profiled steps (a trace), labelled as such.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torchdiag.record import RunRecord, TraceSummary
from torchdiag.view.numbers import rounded

if TYPE_CHECKING:
    from torchdiag.view.run_view import RunView


def headline(view: RunView) -> dict[str, Any]:
    """The key numbers of a run; a value is ``None`` when the record does not have it.

    ``step_ms_estimate`` is the un-profiled step (measured on a live run, estimated from a trace)
    with ``step_ms_estimate_range`` [low, high], which aims to hold it with probability
    ``step_ms_estimate_coverage`` (0.9: :mod:`torchdiag.view.step_model`); ``step_ms_profiled`` the
    mean step inside the profiler window; ``median_step_ms``/``p95_step_ms``/``p99_step_ms`` are
    over the live step rows, or over the profiled steps of a trace (``step_rows``: "live" or
    "profiled"); in an inference run the warm-up call and the profiled calls are left out of them
    (see :func:`torchdiag.view.step_rows.percentile_rows`). ``samples_per_s`` is the batch over
    ``step_ms_estimate``; ``gpu_busy_pct`` and ``input_wait_pct`` are shares of it. ``mode`` is the
    record's: "training" or "inference"; ``step_is_forward_call`` says whether a step is one call of
    the model (a live inference loop that marks no steps itself; a ``model.generate()`` call is one
    call), ``step_is_generate_call`` that every such call was a ``generate()`` call.
    ``tokens_per_s`` is the tokens ``generate()`` produced in the steady steps
    over their wall time (:attr:`torchdiag.view.run_view.RunView.steady`), in an inference run.
    ``warmup_steps`` are the numbers of the steps left out of the steady figures as warm-up (the
    first step, and the outliers right after it: :func:`torchdiag.view.steady.steady_rows`).
    """
    record = view.record
    forward_calls = record.steps.detection == "forward"
    timing = view.timing
    rows = view.rows
    quantiles = view.quantiles
    batch, _ = view.batch
    util = view.gpu_util_share
    memory = view.memory
    mem_peak = memory.device_used or memory.reserved or memory.allocated or None
    step = timing.step_ms if timing is not None and timing.step_ms > 0 else None
    low, high = timing.range_ms if timing is not None else (None, None)
    busy = timing.gpu_busy_share if timing is not None else None
    return {
        "mode": record.mode,
        # A step is one call of the model only where the live capture found it so (an inference
        # loop without run.step()); a trace's steps are its ProfilerStep spans.
        "step_is_forward_call": forward_calls,
        # ... and the call is model.generate() where every step was one (transformers).
        "step_is_generate_call": forward_calls and _all_generate(record),
        "steps": _step_count(record, view.summary),
        "warmup_steps": list(view.steady_rows.warmup) or None,
        "step_rows": rows.source,
        "duration_s": rounded(record.duration_s) if record.duration_s > 0 else None,
        "step_ms_estimate": rounded(step),
        "step_ms_estimate_range": [rounded(low), rounded(high)] if step is not None else None,
        # The probability the range aims to hold the un-profiled step with.
        "step_ms_estimate_coverage": timing.coverage if timing is not None and step else None,
        "step_time_measured": bool(timing is not None and timing.measured),
        "step_ms_profiled": rounded(timing.profiled_ms) if timing is not None else None,
        "estimate_steps": timing.steps if timing is not None else 0,
        "bound": timing.bound if timing is not None else None,
        "median_step_ms": rounded(quantiles.p50),
        "p95_step_ms": rounded(quantiles.p95),
        "p99_step_ms": rounded(quantiles.p99),
        "input_wait_pct": rounded(100 * timing.input_wait_share) if timing and step else None,
        "gpu_busy_pct": rounded(100 * busy) if busy is not None else None,
        "comm_pct": rounded(100 * timing.comm_ms / step)
        if timing and step and timing.comm_ms
        else None,
        "comm_overlap_pct": rounded(100 * timing.comm_overlap_ms / timing.comm_ms)
        if timing and timing.comm_ms
        else None,
        "batch_size": batch,
        "samples_per_s": rounded(batch * 1000.0 / step) if batch and step else None,
        # Generated tokens only: in a training run the tokens that matter are those trained on,
        # which are not counted, and generated ones would read as training throughput.
        "tokens_per_s": rounded(view.steady.tokens_per_s) if record.mode == "inference" else None,
        "gpu_util_mean_pct": rounded(100 * util) if util is not None else None,
        "tensor_active_pct": rounded(view.tensor_active_pct),
        "gpu_memory_peak_bytes": mem_peak,
        "gpu_memory_total_bytes": view.device_memory_bytes if mem_peak else None,
        "gpu_memory_peak_from": memory.source,
    }


def _all_generate(record: RunRecord) -> bool:
    """Whether the live capture counted at least as many ``generate()`` calls as steps."""
    calls = record.environment.model_calls
    return calls is not None and calls.generate > 0 and calls.generate >= record.steps.count


def _step_count(record: RunRecord, summary: TraceSummary | None) -> int:
    if record.steps.count or record.steps.wall_ms:
        return record.steps.count or int(sum(record.steps.steps))
    return len(summary.steps) if summary is not None else 0

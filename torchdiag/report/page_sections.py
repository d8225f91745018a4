"""View-models of the HTML report's deeper sections: headline extras, step distribution, input
pipeline, sortable op/kernel tables, memory, torchdiag's overhead and the raw-trace box.

Values are formatted here; each section gets a ``missing`` reason when the record lacks its data,
so the page says why instead of showing an empty box. Tables are cut to :data:`MAX_TABLE_ROWS`
with a totals line for the rest, which bounds the page size whatever the record, and show their
first :data:`SHOWN_ROWS` until asked for all.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from torchdiag.record import RunRecord, TraceSummary
from torchdiag.report.verdict import (
    format_bytes,
    format_ms,
    format_number,
    format_pct,
    format_seconds,
    format_value,
)
from torchdiag.view.memory_breakdown import MemoryBreakdown
from torchdiag.view.numbers import weighted_quantile
from torchdiag.view.run_view import RunView
from torchdiag.view.step_rows import WallStats

MAX_TABLE_ROWS = 50
# Rows of a table shown at first; the rest (up to MAX_TABLE_ROWS) are one click away.
SHOWN_ROWS = 15
# Kernel names can be whole C++ template instantiations; show the start, keep the rest in the
# cell's title (tooltip), itself cut so one name cannot blow up the page.
MAX_NAME_CHARS = 160
MAX_TITLE_CHARS = 2000


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def name_cell(name: str) -> dict[str, str]:
    """A table cell for a long name: shown cut, full (within reason) in the tooltip."""
    return {"text": _cut(name, MAX_NAME_CHARS), "full": _cut(name, MAX_TITLE_CHARS)}


def headline_extras(
    numbers: Mapping[str, Any], summary: TraceSummary | None
) -> list[tuple[str, str]]:
    """Cards the shared headline lacks: tensor-core activity (GPM when sampled, else the
    math-time share), when there is any to show."""
    text = _tensor_core_text(numbers, summary)
    return [("Tensor cores", text)] if text is not None else []


def _tensor_core_text(numbers: Mapping[str, Any], summary: TraceSummary | None) -> str | None:
    tensor = numbers["tensor_active_pct"]
    if tensor is not None:
        return f"{format_pct(tensor)} active (GPM)"
    math_stats = summary.math if summary is not None else None
    if math_stats is not None and math_stats.eligible_ms > 0:
        share = 100.0 * math_stats.tensor_core_ms / math_stats.eligible_ms
        return f"{format_pct(share)} of math time"
    return None


def distribution(stats: WallStats | None, mode: str = "training") -> dict[str, Any] | None:
    """Step-time percentiles and the outlier steps, formatted (p99 where a step is one call of
    the model: an inference run's tail latency)."""
    if stats is None:
        return None
    tail = [("p99", format_ms(stats.p99))] if mode == "inference" else []
    rows = [
        ("Step rows", format_number(stats.rows)),
        ("p50", format_ms(stats.p50)),
        ("p95", format_ms(stats.p95)),
        *tail,
        ("Max", format_ms(stats.max)),
        ("Mean", format_ms(stats.mean)),
        ("Outlier above", format_ms(stats.outlier_ms)),
        ("Outlier steps", format_number(len(stats.outliers))),
    ]
    slowest = [(f"step {n}", format_ms(w)) for n, w in stats.slowest]
    return {"rows": rows, "slowest": slowest}


def input_pipeline(view: RunView) -> dict[str, Any]:
    """Input wait numbers, loader settings and the DataLoader iterators the trace saw."""
    summary, numbers = view.summary, view.headline
    waits = view.step_waits
    rows: list[tuple[str, str]] = []
    if waits:
        rows = [
            ("Steps", format_number(len(waits))),
            ("Mean wait", format_ms(sum(waits) / len(waits))),
            ("p95 wait", format_ms(weighted_quantile(waits, [1.0] * len(waits), 0.95))),
            ("Max wait", format_ms(max(waits))),
        ]
        if numbers["input_wait_pct"] is not None:
            rows.append(("Share of step time", format_pct(numbers["input_wait_pct"])))
    iterators = sorted((summary.dataloader_iterators if summary else {}).items())
    return {
        "rows": rows,
        "iterators": [(k, format_number(v)) for k, v in iterators],
        "missing": ""
        if waits
        else "not recorded: no step timings, so there is no per-step input wait",
    }


def _total_row(rows: list[Any], fields: dict[str, float]) -> dict[str, str] | None:
    left = rows[MAX_TABLE_ROWS:]
    if not left:
        return None
    return {"count": format_number(len(left)), **{k: format_number(v) for k, v in fields.items()}}


def op_table(summary: TraceSummary | None) -> dict[str, Any]:
    """Top operators by total time, with raw sort keys and a line totalling the rest."""
    ops = sorted(summary.top_ops, key=lambda o: (-o.total_ms, o.name)) if summary else []
    rest = ops[MAX_TABLE_ROWS:]
    return {
        "rows": [
            {
                "name": name_cell(op.name),
                "calls": (op.calls, format_number(op.calls)),
                "total": (round(op.total_ms, 4), format_number(op.total_ms)),
                "self": (round(op.self_ms, 4), format_number(op.self_ms)),
                "gpu": (round(op.gpu_ms, 4), format_number(op.gpu_ms)),
                "dtypes": _cut(", ".join(op.input_dtypes[:4]), 120),
                "shapes": _cut("; ".join(op.input_shapes[:3]), 200),
            }
            for op in ops[:MAX_TABLE_ROWS]
        ],
        "total": len(ops),
        "shown": SHOWN_ROWS,
        "rest": _total_row(
            ops,
            {
                "total": sum(o.total_ms for o in rest),
                "self": sum(o.self_ms for o in rest),
                "gpu": sum(o.gpu_ms for o in rest),
            },
        ),
    }


def kernel_table(summary: TraceSummary | None) -> dict[str, Any]:
    """Top kernels by total time, with share of kernel time and a totals line for the rest."""
    kernels = sorted(summary.top_kernels, key=lambda k: (-k.total_ms, k.name)) if summary else []
    total_ms = (summary.kernel_time_ms if summary else 0.0) or sum(k.total_ms for k in kernels)
    rest = kernels[MAX_TABLE_ROWS:]
    return {
        "rows": [
            {
                "name": name_cell(k.name),
                "class": _cut(k.kernel_class, 40),
                "tensor_core": format_value(k.tensor_core),
                "calls": (k.calls, format_number(k.calls)),
                "total": (round(k.total_ms, 4), format_number(k.total_ms)),
                "share": (
                    round(k.total_ms / total_ms, 5) if total_ms else 0,
                    format_pct(100 * k.total_ms / total_ms) if total_ms else "—",
                ),
                "median": (round(k.median_us, 3), format_number(k.median_us)),
                "max": (round(k.max_us, 3), format_number(k.max_us)),
            }
            for k in kernels[:MAX_TABLE_ROWS]
        ],
        "total": len(kernels),
        "shown": SHOWN_ROWS,
        "rest": _total_row(kernels, {"total": sum(k.total_ms for k in rest)}),
    }


def memory_view(record: RunRecord, summary: TraceSummary | None) -> dict[str, Any]:
    """Peak memory against capacity, from the sampler (NVML) and the trace's allocator events."""
    rows: list[tuple[str, str]] = []
    capacity = {d.index: d.memory_total_bytes for d in record.environment.devices}
    if summary is not None:
        capacity.update({d.index: d.memory_total_bytes for d in summary.devices})
    for g in sorted(record.samples.gpus if record.samples else [], key=lambda g: g.index)[:16]:
        used = [m for m in g.memory_used_bytes if m is not None]
        if used:
            total = g.memory_total_bytes or capacity.get(g.index)
            rows.append((f"GPU {g.index} peak used (NVML)", _of(max(used), total)))
    for mem in (summary.memory if summary else [])[:16]:
        total = capacity.get(mem.device)
        rows.append((f"Device {mem.device} peak allocated", _of(mem.peak_allocated_bytes, total)))
        rows.append((f"Device {mem.device} peak reserved", _of(mem.peak_reserved_bytes, total)))
    has_events = bool(summary and any(m.t_us for m in summary.memory))
    return {
        "rows": rows,
        "missing": ""
        if rows
        else "not recorded: no GPU memory samples and no profiler memory "
        "events (profile with profile_memory=True for a timeline)",
        "timeline_missing": ""
        if has_events
        else "No allocator timeline: the trace has no "
        "memory events (torch.profiler(profile_memory=True) records them).",
    }


# Rows of the table of bytes by category at the peak, in this order.
MEMORY_CATEGORY_LABELS = (
    ("parameter", "Parameters"),
    ("gradient", "Gradients"),
    ("optimizer_state", "Optimizer state"),
    ("activation", "Activations"),
    ("input", "Inputs"),
    ("temporary", "Temporaries"),
    ("autograd_detail", "Autograd buffers"),
    ("unknown", "Unknown"),
)


def memory_categories_view(breakdown: MemoryBreakdown) -> dict[str, Any]:
    """The table of bytes by category at the window's peak, the largest-batch estimate and the
    operators holding most at the peak (empty rows: no categories in the record)."""
    at_peak, peak = breakdown.at_peak, breakdown.peak_bytes
    if not at_peak or not peak:
        return {"rows": [], "batch": [], "ops": []}
    rows = [
        (label, format_bytes(at_peak.get(key, 0)), format_pct(100 * at_peak.get(key, 0) / peak))
        for key, label in MEMORY_CATEGORY_LABELS
    ]
    rows.append(("Peak", format_bytes(peak), format_pct(100.0)))
    batch: list[tuple[str, str]] = []
    if breakdown.fixed_bytes is not None:
        batch.append(("Fixed (does not grow with the batch)", format_bytes(breakdown.fixed_bytes)))
    if breakdown.per_sample_bytes is not None:
        batch.append(("Per sample", format_bytes(breakdown.per_sample_bytes)))
    if breakdown.batch_size:
        batch.append(("Batch size", str(breakdown.batch_size)))
    if breakdown.capacity_bytes:
        batch.append(("Capacity", format_bytes(breakdown.capacity_bytes)))
    if breakdown.largest_batch is not None:
        batch.append(("Largest batch that fits (estimate)", str(breakdown.largest_batch)))
    if breakdown.largest_batch_rests_on:
        batch.append(("The estimate rests on", breakdown.largest_batch_rests_on))
    ops = [(str(op["name"]), format_bytes(op["bytes"])) for op in breakdown.top_at_peak]
    return {"rows": rows, "batch": batch, "ops": ops}


def _of(used: float, total: int | None) -> str:
    if total:
        return f"{format_bytes(used)} of {format_bytes(total)} ({format_pct(100 * used / total)})"
    return format_bytes(used)


_OVERHEAD_LABELS = {
    "sampler_cpu_s": "Sampler thread CPU time",
    "profiler_window_s": "Profiler window (wall time)",
    "profiler_export_s": "Trace export and summary (left out of step times)",
    "checkpoint_s": "Checkpoints of the record (snapshot, encoding, write; wall time)",
    "checkpoint_count": "Checkpoints taken while the block ran",
}


def overhead_rows(record: RunRecord) -> list[tuple[str, str]]:
    """torchdiag's own cost during the run (sampler CPU, profiler window, export), each once."""
    overhead = dict(record.overhead)
    if record.samples is not None and record.samples.sampler_cpu_s:
        # The session copies the sampler's CPU time into `overhead`; older records lack it.
        overhead.setdefault("sampler_cpu_s", record.samples.sampler_cpu_s)
    return [
        (
            _OVERHEAD_LABELS.get(key, key.replace("_", " ")),
            format_seconds(value) if key.endswith("_s") else format_number(value),
        )
        for key, value in sorted(overhead.items())
    ]


def raw_trace(record: RunRecord, summary: TraceSummary | None) -> dict[str, str]:
    """The raw trace file to open in Perfetto, or why there is none."""
    path = record.profiler.trace_file if record.profiler else None
    if not path and record.source == "trace":
        path = (summary.origin if summary else "") or record.name
    if path:
        return {"path": _cut(path, 500), "name": _cut(os.path.basename(path), 200), "missing": ""}
    reason = (
        "not recorded: the profiler window did not save a trace file"
        if record.profiler
        else "not recorded: this run had no torch.profiler window"
    )
    return {"path": "", "name": "", "missing": reason}

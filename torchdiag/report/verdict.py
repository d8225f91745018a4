"""The one-line verdict and the headline numbers every report format leads with.

Both are pure functions of the record (and its analysis), shared by the HTML, Markdown, text and
JSON renderers so that every format says the same thing in the same words.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torchdiag.analyze.finding import Finding, rank_findings
from torchdiag.analyze.registry import Analysis
from torchdiag.analyze.step_model import batch_size
from torchdiag.record import RunRecord, TraceSummary

EMPTY_VERDICT = "nothing to diagnose: the record has no steps"
CLEAN_VERDICT = "no problems found at warning level"

# Keys of :func:`headline`, in display order, with their labels.
HEADLINE_LABELS: dict[str, str] = {
    "steps": "Steps",
    "median_step_ms": "Median step",
    "p95_step_ms": "p95 step",
    "input_wait_pct": "Input wait",
    "samples_per_s": "Throughput",
    "gpu_util_mean_pct": "GPU utilisation (mean)",
    "gpu_memory_peak_bytes": "GPU memory peak",
    "duration_s": "Duration",
}


# ---------------------------------------------------------------------------------------------
# Verdict


def trace_summary(record: RunRecord) -> TraceSummary | None:
    """The trace summary the report describes: the live profiler window's, else the first trace."""
    if record.profiler is not None and record.profiler.summary is not None:
        return record.profiler.summary
    return record.traces[0] if record.traces else None


def has_steps(record: RunRecord) -> bool:
    """Whether there is any step timing at all, from the live step series or a trace."""
    if record.steps.count > 0 or record.steps.wall_ms:
        return True
    summary = trace_summary(record)
    return summary is not None and bool(summary.steps)


def top_finding(analysis: Analysis) -> Finding | None:
    """The most valuable finding at warning or critical severity, or ``None``."""
    for f in rank_findings(analysis.findings):
        if f.severity in ("critical", "warning"):
            return f
    return None


def verdict(record: RunRecord, analysis: Analysis) -> str:
    """One line saying what holds the run back, taken from the top warning/critical finding.

    The finding's title is used as is (rules write it as a verdict, e.g. "input-bound: 62% of
    each step waits for data"); the possible saving is appended when the title has no number.
    """
    if not has_steps(record):
        return EMPTY_VERDICT
    top = top_finding(analysis)
    thin = thin_trace_reason(record)
    if top is None and thin is not None:
        return f"too little in this trace to diagnose: {thin}"
    if top is None:
        notes = sum(1 for f in analysis.findings if f.severity == "info")
        if notes:
            return f"{CLEAN_VERDICT} ({notes} informational note{'s' if notes != 1 else ''})"
        return CLEAN_VERDICT
    line = top.title.strip() or top.id
    if top.saving_pct_max > 0 and not any(ch.isdigit() for ch in line):
        line += f" (up to {format_number(top.saving_pct_max)}% of step time)"
    more = sum(1 for f in analysis.findings if f.severity in ("critical", "warning")) - 1
    if more > 0:
        line += f" (+{more} more finding{'s' if more != 1 else ''})"
    return line


# Fewer operator calls than this, and no kernels: the trace holds too little to measure a step.
_THIN_TRACE_OPS = 20


def thin_trace_reason(record: RunRecord) -> str | None:
    """Why an imported trace holds too little to diagnose, or None when it holds enough."""
    if record.source != "trace" or not record.traces:
        return None
    for summary in record.traces:
        calls = sum(op.calls for op in summary.top_ops)
        if summary.kernel_count or calls >= _THIN_TRACE_OPS:
            return None
    notes = [n for t in record.traces for n in t.notes]
    for marker in ("nothing to diagnose", "too few", "no GPU activity"):
        for note in notes:
            if marker in note:
                return note
    return f"fewer than {_THIN_TRACE_OPS} operator calls and no GPU kernels"


# ---------------------------------------------------------------------------------------------
# Headline numbers


def headline(record: RunRecord) -> dict[str, Any]:
    """The key numbers of a run; a value is ``None`` when the record does not have it.

    Keys: ``steps``, ``duration_s``, ``median_step_ms``, ``p95_step_ms``, ``input_wait_pct``,
    ``batch_size``, ``samples_per_s``, ``gpu_util_mean_pct``, ``gpu_memory_peak_bytes`` and
    ``gpu_memory_total_bytes``. Step statistics come from the live step series, or from the trace
    steps when the record was built from a trace.
    """
    walls, weights, wait_pct, steps, total_s = _step_stats(record)
    batch, _ = batch_size(record)
    util, mem_peak, mem_total = _gpu_stats(record)
    return {
        "steps": steps,
        "duration_s": _round(record.duration_s) if record.duration_s > 0 else None,
        "median_step_ms": _round(weighted_quantile(walls, weights, 0.5)),
        "p95_step_ms": _round(weighted_quantile(walls, weights, 0.95)),
        "input_wait_pct": _round(wait_pct),
        "batch_size": batch,
        "samples_per_s": _round(batch * steps / total_s) if batch and total_s > 0 else None,
        "gpu_util_mean_pct": _round(util),
        "gpu_memory_peak_bytes": mem_peak,
        "gpu_memory_total_bytes": mem_total,
    }


def headline_items(numbers: dict[str, Any]) -> list[tuple[str, str]]:
    """``(label, formatted value)`` pairs of :func:`headline`'s numbers, for display."""
    items: list[tuple[str, str]] = []
    for key, label in HEADLINE_LABELS.items():
        value = numbers.get(key)
        if value is None:
            text = "not measured"
        elif key == "steps":
            text = f"{value:,}"
        elif key.endswith("_ms"):
            text = format_ms(value)
        elif key.endswith("_pct"):
            text = format_pct(value)
        elif key == "samples_per_s":
            text = f"{format_number(value)} samples/s (batch {numbers.get('batch_size')})"
        elif key == "gpu_memory_peak_bytes":
            total = numbers.get("gpu_memory_total_bytes")
            text = format_bytes(value) + (f" of {format_bytes(total)}" if total else "")
        elif key == "duration_s":
            text = format_seconds(value)
        else:
            text = format_number(value)
        items.append((label, text))
    return items


def weighted_quantile(values: Sequence[float], weights: Sequence[float], q: float) -> float | None:
    """Nearest-rank quantile where ``values[i]`` counts ``weights[i]`` times (merged step rows)."""
    pairs = sorted((v, w) for v, w in zip(values, weights, strict=False) if _finite(v) and w > 0)
    if not pairs:
        return None
    target = q * sum(w for _, w in pairs)
    seen = 0.0
    for value, weight in pairs:
        seen += weight
        if seen >= target:
            return value
    return pairs[-1][0]


def _step_stats(
    record: RunRecord,
) -> tuple[list[float], list[float], float | None, int, float]:
    """(row walls ms, row weights, input-wait %, step count, total wall s) from the best source."""
    s = record.steps
    if s.wall_ms:
        weights = [float(n) for n in s.steps] if len(s.steps) == len(s.wall_ms) else []
        weights = weights or [1.0] * len(s.wall_ms)
        total_s = s.total_wall_s or _weighted_sum(weights, s.wall_ms) / 1000
        waited_s = s.total_input_wait_s or _weighted_sum(weights, s.input_wait_ms) / 1000
        count = s.count or int(sum(weights))
        wait_pct = 100.0 * waited_s / total_s if total_s > 0 else None
        return list(s.wall_ms), weights, wait_pct, count, total_s
    summary = trace_summary(record)
    if summary is None or not summary.steps:
        return [], [], None, s.count, s.total_wall_s
    walls = [st.duration_ms for st in summary.steps]
    total_ms = sum(walls)
    waited_ms = sum(st.breakdown.input_wait for st in summary.steps)
    wait_pct = 100.0 * waited_ms / total_ms if total_ms > 0 else None
    return walls, [1.0] * len(walls), wait_pct, len(walls), total_ms / 1000


def _weighted_sum(weights: Sequence[float], values: Sequence[float]) -> float:
    return sum(w * v for w, v in zip(weights, values, strict=False) if _finite(v))


def _gpu_stats(record: RunRecord) -> tuple[float | None, int | None, int | None]:
    """(mean utilisation %, peak memory used bytes, that GPU's total bytes) over sampled GPUs."""
    samples = record.samples
    if samples is None or not samples.gpus:
        return None, None, None
    merged = samples.rows_merged
    util_sum = util_weight = 0.0
    peak: float | None = None
    peak_total: int | None = None
    for gpu in samples.gpus:
        for i, u in enumerate(gpu.utilization_pct):
            if _finite(u):
                # Each row is the mean of rows_merged[i] raw samples; weight it accordingly.
                w = float(merged[i]) if i < len(merged) and merged[i] > 0 else 1.0
                util_sum += w * u
                util_weight += w
        for m in gpu.memory_used_bytes:
            if _finite(m) and (peak is None or m > peak):
                peak, peak_total = m, gpu.memory_total_bytes
    util = util_sum / util_weight if util_weight else None
    return util, (int(peak) if peak is not None else None), peak_total


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _round(x: float | None) -> float | None:
    return round(x, 3) if x is not None and math.isfinite(x) else None


# ---------------------------------------------------------------------------------------------
# Number formatting shared by the renderers


def format_number(value: float | int | None) -> str:
    """A number for people: thousands separators, about four significant digits."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.1f}".rstrip("0").rstrip(".")
    if magnitude >= 1 or magnitude == 0:
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{value:.3g}"


def format_pct(pct: float | None) -> str:
    """A percentage with one decimal ("31.6%"); tiny non-zero shares as "<0.1%"."""
    if pct is None or not math.isfinite(pct):
        return "n/a"
    if 0 < abs(pct) < 0.05:
        return "<0.1%"
    return f"{pct:.1f}%".replace(".0%", "%")


def format_ms(ms: float | None) -> str:
    """Milliseconds, switching to seconds past ten seconds."""
    if ms is None:
        return "n/a"
    return format_seconds(ms / 1000) if ms >= 10_000 else f"{format_number(ms)} ms"


def format_seconds(seconds: float | None) -> str:
    """Seconds, as minutes and seconds past two minutes."""
    if seconds is None:
        return "n/a"
    if seconds >= 120:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest:02d} s"
    return f"{format_number(seconds)} s"


def format_bytes(n: float | int | None) -> str:
    """Bytes in binary units (GiB, MiB, ...)."""
    if n is None:
        return "n/a"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{format_number(value if unit != 'B' else int(value))} {unit}"
        value /= 1024
    return f"{format_number(value)} TiB"


def format_value(value: object) -> str:
    """An evidence or environment value: numbers formatted, booleans as yes/no, ``None`` as —."""
    if value is None:
        return "—"
    if isinstance(value, (bool, int, float)):
        return format_number(value)
    return str(value)

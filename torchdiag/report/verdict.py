"""The one-line verdict and the headline numbers every report format leads with.

Both are pure functions of the record (and its analysis), shared by the HTML, Markdown, text and
JSON renderers so that every format says the same thing in the same words.
"""

from __future__ import annotations

import math
from typing import Any

from torchdiag.analyze.finding import Finding, rank_findings
from torchdiag.analyze.registry import Analysis
from torchdiag.record import RunRecord
from torchdiag.view.step_model import primary_summary

EMPTY_VERDICT = "nothing to diagnose: the record has no steps"
CLEAN_VERDICT = "no problems found at warning level"

# Keys of :func:`torchdiag.view.headline.headline`, in display order, with their labels.
HEADLINE_LABELS: dict[str, str] = {
    "step_ms_estimate": "Step time",
    "samples_per_s": "Throughput",
    "gpu_busy_pct": "GPU busy",
    "input_wait_pct": "Input wait",
    "step_ms_profiled": "Profiled step",
    "median_step_ms": "Median step",
    "p95_step_ms": "p95 step",
    "steps": "Steps",
    "gpu_util_mean_pct": "GPU utilisation (NVML)",
    "gpu_memory_peak_bytes": "GPU memory peak",
    "duration_s": "Duration",
}


# ---------------------------------------------------------------------------------------------
# Verdict


def has_steps(record: RunRecord) -> bool:
    """Whether there is any step timing at all, from the live step series or a trace."""
    if record.steps.count > 0 or record.steps.wall_ms:
        return True
    summary = primary_summary(record)
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


def headline_items(numbers: dict[str, Any]) -> list[tuple[str, str]]:
    """``(label, formatted value)`` pairs of the headline numbers, for display.

    A number the record does not have is left out rather than shown as missing.
    """
    items: list[tuple[str, str]] = []
    profiled_rows = numbers.get("step_rows") == "profiled"
    for key, label in HEADLINE_LABELS.items():
        value = numbers.get(key)
        if value is None:
            continue
        if key == "step_ms_estimate":
            text = format_ms(value)
            if not numbers.get("step_time_measured"):
                low, high = numbers.get("step_ms_estimate_range") or (None, None)
                spread = (
                    f" ({format_number(low)}–{format_number(high)})"
                    if low is not None and high is not None and high - low >= 0.05 * value
                    else ""
                )
                text += f" estimated without the profiler{spread}"
        elif key == "steps":
            text = f"{value:,}"
        elif key.endswith("_ms"):
            text = format_ms(value)
            if profiled_rows and key in ("median_step_ms", "p95_step_ms"):
                label = f"{label} (profiled)"
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

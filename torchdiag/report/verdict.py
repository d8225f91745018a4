"""The one-line verdict and the headline numbers every report format leads with.

Both are pure functions of the record (and its analysis), shared by the HTML, Markdown, text and
JSON renderers so that every format says the same thing in the same words.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torchdiag.analyze.finding import Finding
from torchdiag.analyze.registry import Analysis
from torchdiag.record import RunRecord
from torchdiag.view.run_view import RunView

EMPTY_VERDICT = "nothing to diagnose: the record has no steps"
CLEAN_VERDICT = "no problems found at warning level"

# Keys of the headline numbers (:func:`torchdiag.view.headline.headline`), in display order,
# with their labels.
HEADLINE_LABELS: dict[str, str] = {
    "step_ms_estimate": "Step time",
    "samples_per_s": "Throughput",
    "tokens_per_s": "Tokens/s",
    "gpu_busy_pct": "GPU busy",
    "input_wait_pct": "Input wait",
    "comm_pct": "Communication",
    "comm_overlap_pct": "Communication hidden behind compute",
    "step_ms_profiled": "Profiled step",
    "median_step_ms": "Median step",
    "p95_step_ms": "p95 step",
    "p99_step_ms": "p99 step",
    "steps": "Steps",
    "warmup_steps": "Warm-up (left out of the steady figures)",
    "gpu_util_mean_pct": "GPU utilisation (NVML)",
    "gpu_memory_peak_bytes": "GPU memory peak",
    "duration_s": "Duration",
}

# Where a step is one call of the model (a live inference loop), the labels say so. The p99
# latency is shown for inference runs only (a training step's tail is the step-variance rule's
# business).
INFERENCE_LABELS: dict[str, str] = {
    "step_ms_estimate": "Step time (one forward call)",
    "median_step_ms": "Median forward call",
    "p95_step_ms": "p95 forward call",
    "p99_step_ms": "p99 forward call",
    "steps": "Steps (forward calls)",
}
# ... and where each call is a transformers ``model.generate()`` (one step per call, however many
# tokens it generates).
GENERATE_LABELS: dict[str, str] = {
    "step_ms_estimate": "Step time (one generate call)",
    "median_step_ms": "Median generate call",
    "p95_step_ms": "p95 generate call",
    "p99_step_ms": "p99 generate call",
    "steps": "Steps (generate calls)",
}


# What each part of a step's breakdown is called on every page (Markdown, diff).
BREAKDOWN_LABELS = {
    "compute": "compute",
    "memcpy": "memcpy",
    "memset": "memset",
    "communication": "communication",
    "input_wait": "input wait",
    "host_runtime": "host runtime",
    "cpu_only": "CPU only",
    "idle_host_wait": "idle: host waits",
    "idle_other": "idle: other",
}


# ---------------------------------------------------------------------------------------------
# Verdict


def has_steps(view: RunView) -> bool:
    """Whether there is any step timing at all, from the live step series or a trace."""
    record = view.record
    if record.steps.count > 0 or record.steps.wall_ms:
        return True
    return view.summary is not None and bool(view.summary.steps)


def top_finding(analysis: Analysis) -> Finding | None:
    """The most valuable finding at warning or critical severity, or ``None``."""
    for f in analysis.findings:
        if f.severity in ("critical", "warning"):
            return f
    return None


def verdict(view: RunView, analysis: Analysis) -> str:
    """One line saying what holds the run back, taken from the top warning/critical finding.

    The finding's title is used as is (rules write it as a verdict, e.g. "input-bound: 62% of
    each step waits for data"); the possible saving is appended when the title has no number.
    """
    top = top_finding(analysis)
    if top is not None and top.blocking:
        return top.title.strip() or top.id  # what stopped the run, steps or none
    if not has_steps(view):
        return EMPTY_VERDICT
    thin = thin_trace_reason(view.record)
    if top is None and thin is not None:
        return f"too little in this trace to diagnose: {thin}"
    if top is None:
        notes = sum(1 for f in analysis.findings if f.severity == "info")
        if notes:
            return f"{CLEAN_VERDICT} ({notes} informational note{'s' if notes != 1 else ''})"
        return CLEAN_VERDICT
    line = top.title.strip() or top.id
    saving = saving_text(top)
    if saving and not any(ch.isdigit() for ch in line):
        line += f" ({saving} of step time)"
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


def headline_items(numbers: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(label, formatted value)`` pairs of the headline numbers, for display.

    A number the record does not have is left out rather than shown as missing.
    """
    items: list[tuple[str, str]] = []
    profiled_rows = numbers.get("step_rows") == "profiled"
    inference = numbers.get("mode") == "inference"
    forward_calls = bool(numbers.get("step_is_forward_call"))
    call_labels = GENERATE_LABELS if numbers.get("step_is_generate_call") else INFERENCE_LABELS
    for key, label in HEADLINE_LABELS.items():
        value = numbers.get(key)
        if value is None or (key == "p99_step_ms" and not inference):
            continue
        if forward_calls:
            label = call_labels.get(key, label)
        if key == "step_ms_estimate":
            text = format_ms(value)
            if not numbers.get("step_time_measured"):
                label = label.replace("Step time", "Step time (estimated without the profiler)")
                low, high = numbers.get("step_ms_estimate_range") or (None, None)
                if low is not None and high is not None and high - low >= 0.05 * value:
                    text += f" ({format_number(low)}–{format_number(high)})"
        elif key == "steps":
            text = f"{value:,}"
        elif key == "warmup_steps":
            if len(value) < 2:
                continue  # the first step alone is left out of every run: no news
            noun = "calls" if forward_calls else "steps"
            text = f"{noun} {value[0]}–{value[-1]}"
        elif key == "step_ms_profiled" and profiled_rows:
            continue  # the profiled steps' own percentiles follow
        elif key.endswith("_ms") or key == "step_ms_profiled":
            text = format_ms(value)
            if profiled_rows and key in ("median_step_ms", "p95_step_ms", "p99_step_ms"):
                label = f"{label} (profiled)"
        elif key.endswith("_pct"):
            text = format_pct(value)
        elif key == "samples_per_s":
            text = f"{format_number(value)} samples/s (batch {numbers.get('batch_size')})"
        elif key == "tokens_per_s":
            text = f"{format_number(value)} tokens/s (generated)"
        elif key == "gpu_memory_peak_bytes":
            total = numbers.get("gpu_memory_total_bytes")
            text = format_bytes(value) + (f" of {format_bytes(total)}" if total else "")
            if numbers.get("gpu_memory_peak_from"):
                text += f" ({numbers['gpu_memory_peak_from']})"
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


# Evidence keys are snake_case identifiers (a stable contract in the JSON output); people read
# them as labels with units. Longest suffix first.
_UNIT_SUFFIXES = (
    ("_ms_per_step", "ms per step"),
    ("_mib_per_step", "MiB per step"),
    ("_gb_s", "GB/s"),
    ("_ms", "ms"),
    ("_us", "µs"),
    ("_pct", "%"),
    ("_gib", "GiB"),
    ("_bytes", "bytes"),
    ("_x", "×"),
)
_WORDS = {
    "gpu": "GPU",
    "cpu": "CPU",
    "sm": "SM",
    "gpm": "GPM",
    "nvml": "NVML",
    "cuda": "CUDA",
    "tf32": "TF32",
    "fp32": "fp32",
    "amp": "AMP",
    "nchw": "NCHW",
    "nhwc": "NHWC",
}


# Keys whose words alone would mislead: the step figure is the un-profiled one.
_LABELS = {"step_ms": "Step time (ms)", "step_ms_range": "Step time range (ms)"}


def evidence_label(key: str) -> str:
    """A readable label for an evidence key: ``fp32_math_ms_per_step`` → "fp32 math (ms per
    step)", ``calls_in_steps:aten::item`` → "Calls in steps: aten::item"."""
    if key in _LABELS:
        return _LABELS[key]
    key, sep, detail = key.partition(":")
    unit = ""
    for suffix, name in _UNIT_SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix):
            key, unit = key[: -len(suffix)], name
            break
    words = [_WORDS.get(w, w) for w in key.split("_") if w]
    text = " ".join(words)
    if words and key.split("_")[0] not in _WORDS:  # not an acronym or a dtype: capitalise
        text = text[:1].upper() + text[1:]
    if unit:
        text += f" ({unit})"
    return f"{text}: {detail}" if sep else text


def evidence_items(evidence: dict[str, Any]) -> list[tuple[str, str]]:
    """A finding's evidence as ``(label, formatted value)`` rows, in key order."""
    return [(evidence_label(k), format_value(v)) for k, v in sorted(evidence.items())]


def saving_text(finding: Finding) -> str:
    """What fixing a finding could save, as people read it: "about 42% (22–66%)" where the rule
    models the fix, "up to 30%" where only a bound is known; '' when nothing."""
    if finding.saving_pct is not None and finding.saving_pct_max > 0:
        low = finding.saving_pct_low if finding.saving_pct_low is not None else 0.0
        text = (
            f"about {format_number(finding.saving_pct)}% "
            f"({format_number(low)}–{format_number(finding.saving_pct_max)}%)"
        )
    elif finding.saving_pct_max > 0:
        text = f"up to {format_number(finding.saving_pct_max)}%"
    else:
        return ""
    return text


def finding_title(finding: Finding) -> str:
    """The title as shown: an alternative names the finding whose time it claims too."""
    title = finding.title.strip() or finding.id
    if finding.alternative_to:
        title += f" (an alternative to {finding.alternative_to}: the savings do not add up)"
    return title

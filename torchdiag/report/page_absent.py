"""What the HTML report leaves out, and why: one short list instead of a box per empty part.

A record built from a trace has no sampler series, loader settings or overhead; a CPU run has no
kernels. Each part of the page the record has nothing for is left out of the page and named,
with the reason, in the page's "Not in this record" list; :func:`page_parts` decides both from the
same view-model values, so the page never shows a part it also calls absent.
"""

from __future__ import annotations

from typing import Any

# Parts of the page, in page order: (key, title). The key names the part in the template.
PARTS: tuple[tuple[str, str], ...] = (
    ("steps_chart", "Step time per step"),
    ("breakdown", "Where each profiled step went"),
    ("distribution", "Step-time distribution"),
    ("input", "Input wait per step"),
    ("loaders", "DataLoader settings"),
    ("samples", "GPU and host timelines"),
    ("cpu_heatmap", "CPU per core"),
    ("ops", "Top operators"),
    ("kernels", "Top GPU kernels"),
    ("memory", "Memory"),
    ("memory_timeline", "Allocator memory timeline"),
    ("raw_trace", "Raw trace"),
    ("profiler", "Profiler window"),
    ("devices", "Accelerator devices"),
    ("optimizers", "Optimizers"),
    ("overhead", "torchdiag's own overhead"),
    ("collectors", "Collectors"),
)


def page_parts(context: dict[str, Any]) -> tuple[dict[str, bool], list[tuple[str, str]]]:
    """(which parts the page shows, ``(title, why not)`` for each part it leaves out).

    ``context`` is the page's view-model (:func:`torchdiag.report.page_context.build_context`
    without these two entries).
    """
    figures = set(context["figures"])
    summary = context["summary"]
    env = context["environment"]
    trace_only = context["source"] == "trace"
    reasons: dict[str, str | None] = {
        "steps_chart": None if "steps" in figures else context["steps_note"],
        "breakdown": None
        if "breakdown" in figures
        else "needs a torch.profiler trace with ProfilerStep markers",
        "distribution": None if context["distribution"] else "no step timings in this record",
        "input": None if context["input"]["rows"] else context["input"]["missing"],
        "loaders": None
        if env["loaders"]
        else (
            "a trace does not show DataLoader settings"
            if trace_only
            else "no DataLoader was iterated in the profiled block"
        ),
        "samples": None
        if "samples" in figures
        else (
            "a record built from a trace file has no background sampler series; capture live "
            "with torchdiag.profile() for GPU and host timelines"
            if trace_only
            else "no sampler series in this record (see Collectors for why)"
        ),
        "cpu_heatmap": None
        if "cpu_heatmap" in figures or "samples" not in figures
        else "no per-core host CPU samples in this record",
        "ops": None
        if context["ops"]["rows"]
        else (
            "the trace has no CPU operator events"
            if summary
            else "no operator statistics in this record"
        ),
        "kernels": None
        if context["kernels"]["rows"]
        else (
            "the trace has no GPU kernels (a CPU-only run, or CUDA activity was not profiled)"
            if summary
            else "no GPU kernel statistics in this record"
        ),
        "memory": None if context["memory"]["rows"] else context["memory"]["missing"],
        "memory_timeline": None
        if "memory" in figures or not summary
        else context["memory"]["timeline_missing"],
        "raw_trace": None if context["raw_trace"]["path"] else context["raw_trace"]["missing"],
        "profiler": None
        if summary
        else "no torch.profiler window or trace in this record, so there is no per-step "
        "breakdown, op or kernel table",
        "devices": None if env["devices"] else "no accelerator devices recorded",
        "optimizers": None if env["optimizers"] else "no optimizer step ran in the profiled block",
        "overhead": None
        if context["overhead"]
        else "records built from a trace file carry no overhead measurements"
        if trace_only
        else "this record carries no overhead measurements",
        "collectors": None if context["collectors"] else "the record lists no collectors",
    }
    shown = {key: reasons[key] is None for key, _ in PARTS}
    # Parts inside another part: not listed when their whole part is missing (no per-core map
    # without sampler series, no allocator timeline without a trace), but not shown either.
    shown["cpu_heatmap"] = "cpu_heatmap" in figures
    shown["memory_timeline"] = "memory" in figures
    # Only a live capture's profiler window has categories: shown where present, never listed
    # as absent (every imported trace would list it).
    shown["memory_categories"] = bool(context["memory_categories"]["rows"])
    absent = [(title, _sentence(why)) for key, title in PARTS if (why := reasons[key]) is not None]
    return shown, absent


def _sentence(text: str) -> str:
    """``text`` without a leading "not recorded:" and with a capital first letter."""
    text = text.strip()
    if text.lower().startswith("not recorded:"):
        text = text[len("not recorded:") :].strip()
    return text[:1].upper() + text[1:]

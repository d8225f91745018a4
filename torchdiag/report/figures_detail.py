"""Detail charts: step-time distribution, input waits, top ops and kernels, allocator memory.

Plain plotly-JSON dicts (see :mod:`torchdiag.report.figures`). Distributions are binned here and
bar charts cut to the top :data:`TOP_BARS`, so each figure's size is bounded whatever the record.
"""

from __future__ import annotations

from typing import Any

from torchdiag.record import TraceSummary
from torchdiag.report.figures_base import (
    GIB,
    LEGEND,
    OUTLIER_COLOR,
    axis,
    bar,
    count_axis,
    downsample_index,
    histogram_bins,
    layout,
    num,
    plotly_text,
)
from torchdiag.view.memory_breakdown import MemoryBreakdown
from torchdiag.view.run_view import RunView

TOP_BARS = 15
# Characters of an op or kernel name in a bar label; the full name is in the tables.
LABEL_CHARS = 60
MAX_MEMORY_POINTS = 800
MAX_MEMORY_DEVICES = 8


def detail_figures(view: RunView) -> dict[str, dict[str, Any]]:
    """The detail charts the run has data for, by name."""
    summary = view.summary
    figs: dict[str, dict[str, Any] | None] = {
        "step_distribution": _step_distribution(view),
        "input_waits": _input_wait_histogram(view),
    }
    if summary is not None:
        figs["top_ops"] = _top_ops(summary)
        figs["top_kernels"] = _top_kernels(summary)
        figs["memory"] = _memory(summary)
    figs["memory_categories"] = memory_categories_figure(view.memory_breakdown)
    return {k: v for k, v in figs.items() if v is not None}


def _histogram(
    values: list[float], label: str, *, outlier_above: float | None, marks: dict[str, float]
) -> dict[str, Any] | None:
    edges, counts, width = histogram_bins(values)
    if not edges:
        return None
    centres = [num(e + width / 2) for e in edges]
    colors = [
        OUTLIER_COLOR if outlier_above is not None and e + width > outlier_above else "#4c78a8"
        for e in edges
    ]
    shapes, notes = [], []
    for text, x in sorted(marks.items(), key=lambda kv: kv[1]):
        shapes.append(
            {
                "type": "line",
                "xref": "x",
                "yref": "paper",
                "x0": num(x),
                "x1": num(x),
                "y0": 0,
                "y1": 1,
                "line": {"color": "#1f2328", "width": 1, "dash": "dot"},
            }
        )
        notes.append(
            {
                "x": num(x),
                "y": 1,
                "xref": "x",
                "yref": "paper",
                "yanchor": "bottom",
                "text": text,
                "showarrow": False,
                "font": {"size": 11},
            }
        )
    return {
        "data": [
            bar(
                "steps",
                centres,
                counts,
                colors,
                width=num(width * 0.95),
                hovertemplate="%{x:.2f} ms: %{y} steps<extra></extra>",
            )
        ],
        "layout": layout(
            260,
            showlegend=False,
            hovermode="closest",
            shapes=shapes,
            annotations=notes,
            xaxis=axis(label),
            yaxis=count_axis("steps", max(counts)),
        ),
    }


def _step_distribution(view: RunView) -> dict[str, Any] | None:
    stats = view.wall_stats
    if stats is None:
        return None
    # An inference run's tail latency is marked too, as its distribution table lists it.
    tail = (("p99", stats.p99),) if view.record.mode == "inference" else ()
    pairs = (("p50", stats.p50), ("p95", stats.p95), *tail)
    marks = {k: v for k, v in pairs if v is not None}
    walls = view.step_walls
    return _histogram(walls, "step time (ms)", outlier_above=stats.outlier_ms, marks=marks)


def _input_wait_histogram(view: RunView) -> dict[str, Any] | None:
    waits = view.step_waits
    if not waits or not any(w > 0 for w in waits):
        return None
    return _histogram(waits, "input wait per step (ms)", outlier_above=None, marks={})


def _hbar(labels: list[str], traces: list[dict[str, Any]], title: str) -> dict[str, Any]:
    return {
        "data": traces,
        "layout": layout(
            90 + 22 * len(labels),
            barmode="group",
            hovermode="closest",
            margin={"l": 16, "r": 16, "t": 36, "b": 48},
            # From the figure's left edge (under the bar labels), not the plot's.
            legend={**LEGEND, "xref": "container"},
            xaxis=axis(title),
            yaxis=axis(type="category", automargin=True, autorange="reversed"),
        ),
    }


def _top_ops(summary: TraceSummary) -> dict[str, Any] | None:
    ops = sorted(summary.top_ops, key=lambda o: (-o.self_ms, o.name))[:TOP_BARS]
    if not ops:
        return None
    # Labels must be unique categories: two names cut to the same prefix get a rank.
    labels = [f"{i}. {plotly_text(o.name, LABEL_CHARS)}" for i, o in enumerate(ops, 1)]
    hover = "%{x:.2f} ms<extra>%{fullData.name}</extra>"
    return _hbar(
        labels,
        [
            bar(
                "self ms",
                [num(o.self_ms) for o in ops],
                labels,
                "#4c78a8",
                orientation="h",
                hovertemplate=hover,
            ),
            bar(
                "total ms",
                [num(o.total_ms) for o in ops],
                labels,
                "#bab0ac",
                orientation="h",
                hovertemplate=hover,
            ),
        ],
        "CPU time in window (ms), top operators by self time",
    )


def _top_kernels(summary: TraceSummary) -> dict[str, Any] | None:
    kernels = sorted(summary.top_kernels, key=lambda k: (-k.total_ms, k.name))[:TOP_BARS]
    if not kernels:
        return None
    labels = [f"{i}. {plotly_text(k.name, LABEL_CHARS)}" for i, k in enumerate(kernels, 1)]
    groups = (
        ("tensor cores", True, "#54a24b"),
        ("no tensor cores", False, "#4c78a8"),
        ("n/a", None, "#bab0ac"),
    )
    traces = []
    for name, flag, color in groups:
        # One trace per tensor-core state so the legend explains the colours; a bar is zero in
        # the other traces, and "overlay" keeps each label's bar full height.
        ys = [num(k.total_ms) if k.tensor_core is flag else None for k in kernels]
        if any(y is not None for y in ys):
            traces.append(
                bar(
                    name,
                    ys,
                    labels,
                    color,
                    orientation="h",
                    hovertemplate="%{x:.2f} ms<extra></extra>",
                )
            )
    fig = _hbar(labels, traces, "GPU time in window (ms), top kernels")
    fig["layout"]["barmode"] = "overlay"
    return fig


def _memory(summary: TraceSummary) -> dict[str, Any] | None:
    traces = []
    for mem in sorted(summary.memory, key=lambda m: m.device)[:MAX_MEMORY_DEVICES]:
        if not mem.t_us:
            continue
        idx = downsample_index(len(mem.t_us), MAX_MEMORY_POINTS)
        t0 = mem.t_us[0]
        x = [num((mem.t_us[i] - t0) / 1000, 2) for i in idx]
        for field, label, dash in (
            ("allocated_bytes", "allocated", "solid"),
            ("reserved_bytes", "reserved", "dash"),
        ):
            values = getattr(mem, field)
            ys = [num(values[i] / GIB, 3) if i < len(values) else None for i in idx]
            traces.append(
                {
                    "type": "scatter",
                    "mode": "lines",
                    "name": f"device {mem.device} {label}",
                    "x": x,
                    "y": ys,
                    "line": {"dash": dash, "width": 1.5, "shape": "hv"},
                    "hovertemplate": "%{y:.3f} GiB",
                }
            )
    if not traces:
        return None
    return {
        "data": traces,
        "layout": layout(
            300,
            xaxis=axis("ms since first memory event"),
            yaxis=axis("GiB", rangemode="tozero"),
        ),
    }


# Category labels and colours of the stacked memory timeline, bottom to top: what the batch does
# not change first (torch's own export uses the same hues for the same categories).
MEMORY_CATEGORY_STYLE = {
    "parameter": ("parameters", "#2f6b2f"),
    "gradient": ("gradients", "#4c78a8"),
    "optimizer_state": ("optimizer state", "#d4a017"),
    "unknown": ("unknown", "#9e9e9e"),
    "input": ("inputs", "#3b3b3b"),
    "activation": ("activations", "#e45756"),
    "temporary": ("temporaries", "#b279a2"),
    "autograd_detail": ("autograd buffers", "#72b7b2"),
}


def memory_categories_figure(breakdown: MemoryBreakdown) -> dict[str, Any] | None:
    """Stacked areas of the profiler window's memory by category (None without categories)."""
    if not breakdown.t_ms or not breakdown.timeline:
        return None
    x = [num(t, 3) for t in breakdown.t_ms]
    traces = []
    for name, (label, color) in MEMORY_CATEGORY_STYLE.items():
        values = breakdown.timeline.get(name, [])
        if not any(values):
            continue
        traces.append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": label,
                "x": x,
                "y": [num(v / GIB, 4) for v in values],
                "stackgroup": "memory",
                "line": {"width": 0.5, "color": color, "shape": "hv"},
                "fillcolor": color,
                "hovertemplate": "%{y:.3f} GiB",
            }
        )
    if not traces:
        return None
    return {
        "data": traces,
        "layout": layout(
            320,
            xaxis=axis("ms since the window's first memory event"),
            yaxis=axis("GiB", rangemode="tozero"),
        ),
    }

"""The HTML report's charts, as plotly figure JSON.

Figures are plain plotly-JSON dicts (``{"data": [...], "layout": {...}}``) built here, without
``plotly.graph_objects``, which is slow to import and not needed; ``report.js`` hands them to
``Plotly.newPlot``. Values are rounded so the page data stays small and the output deterministic.
"""

from __future__ import annotations

from typing import Any

from torchdiag.record import RunRecord, StepSeries, TraceSummary
from torchdiag.report.figures_base import MS_HOVER as _MS_HOVER
from torchdiag.report.figures_base import axis as _axis
from torchdiag.report.figures_base import band as _band
from torchdiag.report.figures_base import bar as _bar
from torchdiag.report.figures_base import layout as _layout
from torchdiag.report.figures_base import num as _num
from torchdiag.report.figures_base import plotly_text as _plotly_text
from torchdiag.report.figures_base import series as _series
from torchdiag.report.figures_detail import detail_figures
from torchdiag.report.figures_timeline import cpu_heatmap_figure, samples_figure, shared_time
from torchdiag.view.run_view import RunView

# BreakdownMs fields in stacking order (GPU work first, then idle time by host activity).
BREAKDOWN_PARTS: tuple[tuple[str, str, str], ...] = (
    ("compute", "compute", "#4c78a8"),
    ("memcpy", "memcpy", "#f58518"),
    ("memset", "memset", "#ff9da6"),
    ("communication", "communication", "#72b7b2"),
    ("input_wait", "input wait", "#e45756"),
    ("host_runtime", "host runtime", "#eeca3b"),
    ("cpu_only", "CPU only", "#b279a2"),
    ("idle_host_wait", "idle: host waits", "#9d755d"),
    ("idle_other", "idle: other", "#bab0ac"),
)


def build_figures(view: RunView) -> dict[str, dict[str, Any]]:
    """Every chart the run has data for, by name: ``steps``, ``breakdown``, ``samples``,
    ``kernel_classes``. Each value is a plotly figure (``{"data": [...], "layout": {...}}``).
    """
    record, summary = view.record, view.summary
    figs: dict[str, dict[str, Any]] = {}
    if record.steps.wall_ms:
        figs["steps"] = _steps_figure(record.steps, view.profiled_range)
    if summary is not None:
        breakdown = _breakdown_figure(summary, view.profiled_numbers)
        if breakdown is not None:
            figs["breakdown"] = breakdown
        if any(v > 0 for v in summary.kernel_class_ms.values()):
            figs["kernel_classes"] = _kernel_class_figure(summary.kernel_class_ms)
    for name, fig in (
        ("samples", samples_figure(view)),
        ("cpu_heatmap", cpu_heatmap_figure(view)),
    ):
        if fig is not None:
            figs[name] = fig
    figs.update(detail_figures(view))
    ranks = _ranks_figure(view)
    if ranks is not None:
        figs["ranks"] = ranks
    return figs


def _ranks_figure(view: RunView) -> dict[str, Any] | None:
    """Per rank, its step split into its own work and its time in collectives (stacked)."""
    figures = [f for f in view.ranks if f.step_ms is not None]
    if len(figures) < 2:
        return None
    names = [f"rank {f.rank}" for f in figures]
    return {
        "data": [
            _bar("own work", names, [_num(f.own_ms or 0.0) for f in figures], "#4c78a8"),
            _bar("in collectives", names, [_num(f.comm_ms) for f in figures], "#72b7b2"),
        ],
        "layout": _layout(
            300,
            barmode="stack",
            hovermode="x unified",
            xaxis=_axis(type="category"),
            yaxis=_axis("ms per step"),
        ),
    }


def shared_series(record: RunRecord) -> dict[str, list[float | None]]:
    """Arrays that many traces plot against, stored once in the data island.

    A trace whose ``x`` is the string ``SHARED_REF + name`` gets ``shared[name]`` in report.js;
    with 8 GPUs the sampler figure has ~70 traces on one time axis, so this halves the page data.
    """
    shared: dict[str, list[float | None]] = {}
    if record.samples is not None and record.samples.t_s:
        shared["t_s"] = shared_time(record.samples)
    return shared


# ---------------------------------------------------------------------------------------------
# Step times


# Bars in the step chart: a record keeps at most 2048 rows, but a hand-made or foreign one may
# not; past this, adjacent rows are merged as the recorder would.
MAX_STEP_ROWS = 2048


def cap_step_rows(s: StepSeries, limit: int = MAX_STEP_ROWS) -> StepSeries:
    """``s`` with at most ``limit`` rows, merging runs of adjacent rows (mean wall and wait
    weighted by steps, slowest step kept, profiled if any merged row was)."""
    n = len(s.wall_ms)
    if n <= limit:
        return s
    group = -(-n // limit)
    counts = s.steps if len(s.steps) == n else [1] * n
    firsts = s.first_step if len(s.first_step) == n else list(range(n))
    waits = (list(s.input_wait_ms) + [0.0] * n)[:n]
    maxes = s.max_wall_ms if len(s.max_wall_ms) == n else s.wall_ms
    profiled = (list(s.profiled) + [False] * n)[:n]
    starts = (list(s.start_s) + [0.0] * n)[:n]
    out = StepSeries(detection=s.detection, count=s.count, max_rows=limit)
    for a in range(0, n, group):
        b = min(a + group, n)
        w = [max(c, 1) for c in counts[a:b]]
        total = sum(w)
        out.first_step.append(firsts[a])
        out.steps.append(total)
        out.start_s.append(starts[a])
        out.wall_ms.append(sum(x * k for x, k in zip(s.wall_ms[a:b], w, strict=True)) / total)
        out.input_wait_ms.append(
            sum((x or 0.0) * k for x, k in zip(waits[a:b], w, strict=True)) / total
        )
        out.max_wall_ms.append(max(maxes[a:b]))
        out.profiled.append(any(profiled[a:b]))
    return out


def _steps_figure(s: StepSeries, profiled: tuple[int, int] | None) -> dict[str, Any]:
    s = cap_step_rows(s)
    n = len(s.wall_ms)
    counts = s.steps if len(s.steps) == n else [1] * n
    firsts = s.first_step if len(s.first_step) == n else list(range(n))
    waits = (list(s.input_wait_ms) + [0.0] * n)[:n]
    # A merged row covers `count` steps: centre its bar on them and make it that wide.
    x = [f + (c - 1) / 2 for f, c in zip(firsts, counts, strict=True)]
    width = [0.85 * max(c, 1) for c in counts]
    wait = [_num(min(w or 0.0, wall)) for w, wall in zip(waits, s.wall_ms, strict=True)]
    rest = [_num(max(wall - (w or 0.0), 0.0)) for w, wall in zip(waits, s.wall_ms, strict=True)]
    data: list[dict[str, Any]] = [
        _bar("input wait", x, wait, "#e45756", width=width),
        _bar("rest of step", x, rest, "#4c78a8", width=width),
    ]
    if any(c > 1 for c in counts) and len(s.max_wall_ms) == n:
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": "slowest step in row",
                "x": x,
                "y": _series(s.max_wall_ms),
                "marker": {"color": "#1f2328", "size": 4},
                "hovertemplate": _MS_HOVER,
            }
        )
    shapes, notes = [], []
    if profiled is not None:
        shape, note = _band(profiled[0] - 0.5, profiled[1] + 0.5)
        shapes.append(shape)
        notes.append(note)
    return {
        "data": data,
        "layout": _layout(
            340,
            barmode="stack",
            bargap=0,
            shapes=shapes,
            annotations=notes,
            xaxis=_axis("step"),
            yaxis=_axis("ms per step", rangemode="tozero"),
        ),
    }


# ---------------------------------------------------------------------------------------------
# Trace: step breakdown and kernel classes


def _breakdown_figure(summary: TraceSummary, numbers: list[int]) -> dict[str, Any] | None:
    """Each profiled step's breakdown, labelled with its ``numbers`` (the record's numbering)."""
    pairs = [(st, n) for st, n in zip(summary.steps, numbers, strict=True) if st.breakdown.wall > 0]
    if not pairs:
        return None
    steps = [st for st, _ in pairs]
    x = [str(n) for _, n in pairs]
    data = []
    for key, label, color in BREAKDOWN_PARTS:
        ys = [_num(getattr(st.breakdown, key)) for st in steps]
        if any(y for y in ys):
            data.append(_bar(label, x, ys, color))
    return {
        "data": data,
        "layout": _layout(
            340,
            barmode="stack",
            xaxis=_axis("profiled step", type="category"),
            yaxis=_axis("ms", rangemode="tozero"),
        ),
    }


def _kernel_class_figure(class_ms: dict[str, float]) -> dict[str, Any]:
    # Largest at the top: plotly draws horizontal categories bottom-up.
    items = sorted(class_ms.items(), key=lambda kv: (kv[1], kv[0]))
    return {
        "data": [
            _bar(
                "kernel time",
                [_num(v) for _, v in items],
                [_plotly_text(k) for k, _ in items],
                "#4c78a8",
                orientation="h",
                hovertemplate="%{x:.2f} ms<extra></extra>",
            )
        ],
        "layout": _layout(
            80 + 26 * len(items),
            showlegend=False,
            hovermode="closest",
            xaxis=_axis("kernel time in window (ms)"),
            yaxis=_axis(type="category", automargin=True),
        ),
    }

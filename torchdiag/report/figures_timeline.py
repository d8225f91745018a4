"""The sampler timeline: GPU and host series on one shared time axis, the profiled window shaded.

Plain plotly-JSON dicts (see :mod:`torchdiag.report.figures`). Long series are thinned to a fixed
point budget so the page stays small however many GPUs, cores and samples a record has.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torchdiag.record import Samples
from torchdiag.report.figures_base import (
    GIB,
    SHARED_REF,
    axis,
    band,
    downsample_index,
    gpu_color,
    layout,
    num,
)
from torchdiag.view.run_view import RunView

# Numbers the sampler figure may carry in all (rows x series); 70 series -> ~570 rows. The page
# budget is ~1 MB without plotly.js, and this figure is its largest part.
MAX_TIMELINE_VALUES = 40_000
MAX_TIMELINE_ROWS = 1024
# Cells of the per-core CPU heat map (time columns x cores).
MAX_HEATMAP_CELLS = 32_000
# Core labels on the heat map's axis; with more cores every n-th is labelled.
MAX_CORE_TICKS = 16
# GPUs drawn: past eight the lines are unreadable anyway; the rest are named in a note.
MAX_GPUS = 8
_GPM_FIELDS = (
    ("tensor_active_pct", "tensor active", "solid"),
    ("sm_active_pct", "SM active", "dash"),
    ("sm_occupancy_pct", "SM occupancy", "dot"),
    ("dram_bandwidth_pct", "DRAM bandwidth", "dashdot"),
)


def timeline_rows(samples: Samples) -> list[int]:
    """Indices of the sample rows the timeline shows (all of them while within budget)."""
    gpus = min(len(samples.gpus), MAX_GPUS)
    per_row = 4 * gpus + 4 * sum(1 for g in samples.gpus[:MAX_GPUS] if g.gpm) + 5
    limit = max(64, min(MAX_TIMELINE_ROWS, MAX_TIMELINE_VALUES // per_row))
    return downsample_index(len(samples.t_s), limit)


def shared_time(samples: Samples) -> list[float | None]:
    """The (thinned) time axis every sampler trace refers to as ``@shared:t_s``."""
    return [num(samples.t_s[i]) for i in timeline_rows(samples)]


def profiled_span_s(view: RunView) -> tuple[float, float] | None:
    """(start, end) seconds since the run start of the steps torch.profiler recorded."""
    steps = view.record.steps
    span = view.profiled_range
    n = len(steps.start_s)
    if span is None or not n or len(steps.first_step) != n or len(steps.wall_ms) != n:
        return None
    counts = steps.steps if len(steps.steps) == n else [1] * n
    idx = [
        i
        for i, (first, count) in enumerate(zip(steps.first_step, counts, strict=True))
        if first <= span[1] and first + max(count, 1) - 1 >= span[0]
    ]
    if not idx:
        return None
    last = idx[-1]
    end = steps.start_s[last] + steps.wall_ms[last] * max(counts[last], 1) / 1000
    return steps.start_s[idx[0]], end


def samples_figure(view: RunView) -> dict[str, Any] | None:
    """The sampler series as one figure: a row per metric, all rows on one shared time axis."""
    samples = view.record.samples
    if samples is None or not samples.t_s:
        return None
    rows_idx = timeline_rows(samples)
    rows: list[tuple[str, list[dict[str, Any]]]] = []
    gpus = sorted(samples.gpus, key=lambda g: g.index)[:MAX_GPUS]

    def pick(
        values: Sequence[float | None], scale: float = 1.0, ndigits: int = 1
    ) -> list[float | None]:
        n = len(values)
        picked = (values[i] if i < n else None for i in rows_idx)
        return [num(v / scale, ndigits) if v is not None else None for v in picked]

    def line(
        name: str, values: Sequence[float | None], color: str, group: str, dash: str = "solid"
    ) -> dict[str, Any]:
        return {
            "type": "scatter",
            "mode": "lines",
            "name": name,
            "x": SHARED_REF + "t_s",
            "y": values,
            "legendgroup": group,
            "line": {"color": color, "dash": dash, "width": 1.5},
            "connectgaps": False,
        }

    def gpu_line(
        index: int, name: str, values: Sequence[float | None], dash: str = "solid"
    ) -> dict[str, Any]:
        # A GPU keeps its colour and legend group in every row.
        return line(name, values, gpu_color(index), f"gpu{index}", dash)

    def add_row(title: str, traces: list[dict[str, Any]]) -> None:
        traces = [t for t in traces if any(v is not None for v in t["y"])]
        if traces:
            rows.append((title, traces))

    def per_gpu(field: str, scale: float = 1.0, ndigits: int = 1) -> list[dict[str, Any]]:
        return [
            gpu_line(g.index, f"GPU {g.index}", pick(getattr(g, field), scale, ndigits))
            for g in gpus
        ]

    add_row("GPU util %", per_gpu("utilization_pct"))
    add_row("GPU memory GiB", per_gpu("memory_used_bytes", GIB, 2))
    add_row("Power W", per_gpu("power_w", 1.0, 0))
    add_row("SM clock MHz", per_gpu("sm_clock_mhz", 1.0, 0))
    gpm_traces = [
        gpu_line(g.index, f"GPU {g.index} {label}", pick(getattr(g.gpm, field)), dash)
        for g in gpus
        if g.gpm is not None
        for field, label, dash in _GPM_FIELDS
    ]
    add_row("GPM % of peak", gpm_traces)
    host = samples.host
    if host is not None:
        cores = host.cpu_pct_per_core
        mean_cpu = [sum(c) / len(c) if c else None for c in cores]
        add_row(
            "Host CPU %",
            [
                line("host CPU (mean of cores)", pick(mean_cpu), "#1f2328", "host"),
                line("process CPU", pick(host.process_cpu_pct), "#b279a2", "proc"),
                line("workers CPU", pick(host.workers_cpu_pct), "#9d755d", "workers"),
            ],
        )
        add_row(
            "Host memory GiB",
            [
                line("process RSS", pick(host.process_rss_bytes, GIB, 2), "#b279a2", "proc"),
                line("workers RSS", pick(host.workers_rss_bytes, GIB, 2), "#9d755d", "workers"),
            ],
        )
    if not rows:
        return None
    fig_layout = _rows_layout([t for t, _ in rows])
    span = profiled_span_s(view)
    if span is not None:
        shape, note = band(num(span[0]) or 0.0, num(span[1]) or 0.0, "profiled window")
        fig_layout["shapes"], fig_layout["annotations"] = [shape], [note]
    return {"data": _stack_rows(rows), "layout": fig_layout}


def cpu_heatmap_figure(view: RunView) -> dict[str, Any] | None:
    """Host CPU % per core over time as a heat map (cores x time), thinned to a cell budget."""
    samples = view.record.samples
    host = samples.host if samples is not None else None
    if samples is None or host is None or not host.cpu_pct_per_core or not samples.t_s:
        return None
    cores = max((len(c) for c in host.cpu_pct_per_core), default=0)
    if cores == 0:
        return None
    n = min(len(samples.t_s), len(host.cpu_pct_per_core))
    cols = downsample_index(n, max(16, MAX_HEATMAP_CELLS // cores))
    z = [
        [
            round(host.cpu_pct_per_core[i][c]) if c < len(host.cpu_pct_per_core[i]) else None
            for i in cols
        ]
        for c in range(cores)
    ]
    # Core numbers are labels, not a scale: whole numbers only (at most MAX_CORE_TICKS of
    # them), the range fitted to the rows, core 0 at the top. The figure is tall enough for the
    # colour bar's three labels even with one or two cores.
    tick_every = -(-cores // MAX_CORE_TICKS)
    fig_layout = layout(
        min(max(220, 120 + 6 * cores), 520),
        hovermode="closest",
        xaxis=axis("seconds since start"),
        yaxis=axis(
            "core",
            range=[cores - 0.5, -0.5],
            autorange=False,
            tickmode="array",
            tickvals=list(range(0, cores, tick_every)),
            ticktext=[str(c) for c in range(0, cores, tick_every)],
            zeroline=False,
        ),
    )
    span = profiled_span_s(view)
    if span is not None:
        shape, note = band(num(span[0]) or 0.0, num(span[1]) or 0.0, "profiled window")
        # On a heat map a below-layer band is hidden; draw an outline above it instead.
        shape.update(
            layer="above", fillcolor="rgba(0,0,0,0)", line={"width": 2, "color": "#9a6700"}
        )
        fig_layout["shapes"], fig_layout["annotations"] = [shape], [note]
    return {
        "data": [
            {
                "type": "heatmap",
                "x": [num(samples.t_s[i]) for i in cols],
                "y": list(range(cores)),
                "z": z,
                "zmin": 0,
                "zmax": 100,
                "colorscale": "Viridis",
                "colorbar": {
                    "title": {"text": "CPU %", "side": "right"},
                    "thickness": 12,
                    "tickvals": [0, 50, 100],
                },
                "hovertemplate": "core %{y}<br>%{x:.1f} s<br>%{z}%<extra></extra>",
            }
        ],
        "layout": fig_layout,
    }


def _stack_rows(rows: list[tuple[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    data = []
    shown: set[str] = set()
    for i, (_, traces) in enumerate(rows, start=1):
        for t in traces:
            t["xaxis"], t["yaxis"] = ("x", "y") if i == 1 else (f"x{i}", f"y{i}")
            # "GPU 0" recurs in every row: list it once; its legend group toggles all its rows.
            t["showlegend"] = t["name"] not in shown
            shown.add(t["name"])
            t["hovertemplate"] = "%{y:.3~f}"
            data.append(t)
    return data


def _rows_layout(titles: list[str]) -> dict[str, Any]:
    k = len(titles)
    gap = 0.05 if k > 1 else 0.0
    h = (1.0 - gap * (k - 1)) / k
    axes: dict[str, Any] = {}
    for i, title in enumerate(titles, start=1):
        top = 1.0 - (i - 1) * (h + gap)
        suffix = "" if i == 1 else str(i)
        axes[f"yaxis{suffix}"] = axis(
            domain=[round(max(top - h, 0.0), 4), round(top, 4)],
            title={"text": title, "font": {"size": 11}},
            rangemode="tozero",
        )
        xaxis = axis(anchor=f"y{suffix}", showticklabels=i == k)
        if i > 1:
            xaxis["matches"] = "x"
        if i == k:
            xaxis["title"] = {"text": "seconds since start"}
        axes[f"xaxis{suffix}"] = xaxis
    return layout(90 + 150 * k, **axes)

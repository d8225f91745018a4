"""The HTML report's charts, as plotly figure JSON.

Figures are plain plotly-JSON dicts (``{"data": [...], "layout": {...}}``) built here, without
``plotly.graph_objects``, which is slow to import and not needed; ``report.js`` hands them to
``Plotly.newPlot``. Values are rounded so the page data stays small and the output deterministic.
"""

from __future__ import annotations

from typing import Any

from torchdiag.record import RunRecord, Samples, StepSeries, TraceSummary

_FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
_AXIS = {"gridcolor": "#eaeef2", "zerolinecolor": "#d0d7de", "linecolor": "#d0d7de"}
# One colour per GPU index, reused in every sampler row so a GPU keeps its colour.
_PALETTE = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#9d755d", "#eeca3b")
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
_GIB = 1024.0**3
_MS_HOVER = "%{y:.2f} ms"
SHARED_REF = "@shared:"


def build_figures(record: RunRecord, summary: TraceSummary | None) -> dict[str, dict[str, Any]]:
    """Every chart the record has data for, by name: ``steps``, ``breakdown``, ``samples``,
    ``kernel_classes``. Each value is a plotly figure (``{"data": [...], "layout": {...}}``).
    """
    figs: dict[str, dict[str, Any]] = {}
    if record.steps.wall_ms:
        figs["steps"] = _steps_figure(record.steps)
    if summary is not None:
        breakdown = _breakdown_figure(summary)
        if breakdown is not None:
            figs["breakdown"] = breakdown
        if any(v > 0 for v in summary.kernel_class_ms.values()):
            figs["kernel_classes"] = _kernel_class_figure(summary.kernel_class_ms)
    if record.samples is not None:
        samples = _samples_figure(record.samples)
        if samples is not None:
            figs["samples"] = samples
    return figs


def shared_series(record: RunRecord) -> dict[str, list[float | None]]:
    """Arrays that many traces plot against, stored once in the data island.

    A trace whose ``x`` is the string ``SHARED_REF + name`` gets ``shared[name]`` in report.js;
    with 8 GPUs the sampler figure has ~70 traces on one time axis, so this halves the page data.
    """
    shared: dict[str, list[float | None]] = {}
    if record.samples is not None and record.samples.t_s:
        shared["t_s"] = [_num(t) for t in record.samples.t_s]
    return shared


# ---------------------------------------------------------------------------------------------
# Shared pieces: layout, axes, bars and number rounding


def _layout(height: int, **extra: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "height": height,
        "margin": {"l": 64, "r": 16, "t": 36, "b": 48},
        "font": {"family": _FONT, "size": 12, "color": "#1f2328"},
        "paper_bgcolor": "#ffffff",
        "plot_bgcolor": "#ffffff",
        "legend": {"orientation": "h", "x": 0, "y": 1.0, "xanchor": "left", "yanchor": "bottom"},
        "hovermode": "x unified",
    }
    layout.update(extra)
    return layout


def _axis(label: str | None = None, **extra: Any) -> dict[str, Any]:
    """A styled axis, titled ``label`` when given; ``extra`` adds or overrides settings."""
    axis: dict[str, Any] = {**_AXIS, **extra}
    if label is not None:
        axis["title"] = {"text": label}
    return axis


def _bar(name: str, x: list, y: list, color: str, **extra: Any) -> dict[str, Any]:
    """A bar trace of millisecond values; ``extra`` adds or overrides trace settings."""
    return {
        "type": "bar",
        "name": name,
        "x": x,
        "y": y,
        "marker": {"color": color},
        "hovertemplate": _MS_HOVER,
        **extra,
    }


def _num(value: float | None, ndigits: int = 3) -> float | None:
    if value is None or isinstance(value, bool) or value != value or abs(value) == float("inf"):
        return None
    return round(float(value), ndigits)


def _series(values: list[float | None], scale: float = 1.0, ndigits: int = 2) -> list:
    return [_num(v / scale if v is not None else None, ndigits) for v in values]


def _plotly_text(text: str) -> str:
    # plotly.js renders labels as a small HTML subset (<b>, <a href>, ...) and decodes entities;
    # escaping makes a trace- or host-supplied name display literally.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _gpu_color(index: int) -> str:
    return _PALETTE[index % len(_PALETTE)]


# ---------------------------------------------------------------------------------------------
# Step times


def _steps_figure(s: StepSeries) -> dict[str, Any]:
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
    for start, end in _profiled_runs(firsts, counts, s.profiled):
        shapes.append(
            {
                "type": "rect",
                "xref": "x",
                "yref": "paper",
                "x0": start - 0.5,
                "x1": end + 0.5,
                "y0": 0,
                "y1": 1,
                "fillcolor": "rgba(191,135,0,0.13)",
                "line": {"width": 0},
                "layer": "below",
            }
        )
        notes.append(
            {
                "x": (start + end) / 2,
                "y": 1,
                "xref": "x",
                "yref": "paper",
                "yanchor": "top",
                "text": "profiled",
                "showarrow": False,
                "font": {"size": 11, "color": "#9a6700"},
            }
        )
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


def _profiled_runs(
    firsts: list[int], counts: list[int], profiled: list[bool]
) -> list[tuple[int, int]]:
    """Contiguous (first, last) step ranges of rows marked ``profiled``."""
    runs: list[tuple[int, int]] = []
    for first, count, flag in zip(firsts, counts, profiled, strict=False):
        if not flag:
            continue
        last = first + max(count, 1) - 1
        if runs and runs[-1][1] + 1 >= first:
            runs[-1] = (runs[-1][0], max(runs[-1][1], last))
        else:
            runs.append((first, last))
    return runs


# ---------------------------------------------------------------------------------------------
# Trace: step breakdown and kernel classes


def _breakdown_figure(summary: TraceSummary) -> dict[str, Any] | None:
    steps = [st for st in summary.steps if st.breakdown.wall > 0]
    if not steps:
        return None
    x = [str(st.number) for st in steps]
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


# ---------------------------------------------------------------------------------------------
# Sampler series


def _samples_figure(samples: Samples) -> dict[str, Any] | None:
    """The sampler series as one figure: a row per metric, all rows on one shared time axis."""
    if not samples.t_s:
        return None
    rows: list[tuple[str, list[dict[str, Any]]]] = []
    gpus = sorted(samples.gpus, key=lambda g: g.index)

    def line(name: str, values: list, color: str, group: str, dash: str = "solid") -> dict:
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

    def gpu_line(index: int, name: str, values: list, dash: str = "solid") -> dict:
        # A GPU keeps its colour and legend group in every row.
        return line(name, values, _gpu_color(index), f"gpu{index}", dash)

    def add_row(title: str, traces: list[dict[str, Any]]) -> None:
        traces = [t for t in traces if any(v is not None for v in t["y"])]
        if traces:
            rows.append((title, traces))

    def per_gpu(field: str, scale: float = 1.0) -> list[dict[str, Any]]:
        return [
            gpu_line(g.index, f"GPU {g.index}", _series(getattr(g, field), scale)) for g in gpus
        ]

    add_row("GPU util %", per_gpu("utilization_pct"))
    add_row("GPU memory GiB", per_gpu("memory_used_bytes", _GIB))
    add_row("Power W", per_gpu("power_w"))
    add_row("SM clock MHz", per_gpu("sm_clock_mhz"))
    gpm_traces = []
    for g in gpus:
        if g.gpm is None:
            continue
        for field, label, dash in (
            ("tensor_active_pct", "tensor active", "solid"),
            ("sm_active_pct", "SM active", "dash"),
            ("sm_occupancy_pct", "SM occupancy", "dot"),
            ("dram_bandwidth_pct", "DRAM bandwidth", "dashdot"),
        ):
            gpm_traces.append(
                gpu_line(g.index, f"GPU {g.index} {label}", _series(getattr(g.gpm, field)), dash)
            )
    add_row("GPM % of peak", gpm_traces)
    host = samples.host
    if host is not None:
        mean_cpu = [_num(sum(c) / len(c), 2) if c else None for c in host.cpu_pct_per_core]
        add_row(
            "Host CPU %",
            [
                line("host CPU (mean of cores)", mean_cpu, "#1f2328", "host"),
                line("process CPU", _series(host.process_cpu_pct), "#b279a2", "proc"),
                line("workers CPU", _series(host.workers_cpu_pct), "#9d755d", "workers"),
            ],
        )
        add_row(
            "Host memory GiB",
            [
                line("process RSS", _series(host.process_rss_bytes, _GIB), "#b279a2", "proc"),
                line("workers RSS", _series(host.workers_rss_bytes, _GIB), "#9d755d", "workers"),
            ],
        )
    if not rows:
        return None
    return {"data": _stack_rows(rows), "layout": _rows_layout([t for t, _ in rows])}


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
        axes[f"yaxis{suffix}"] = _axis(
            domain=[round(max(top - h, 0.0), 4), round(top, 4)],
            title={"text": title, "font": {"size": 11}},
            rangemode="tozero",
        )
        xaxis = _axis(anchor=f"y{suffix}", showticklabels=i == k)
        if i > 1:
            xaxis["matches"] = "x"
        if i == k:
            xaxis["title"] = {"text": "seconds since start"}
        axes[f"xaxis{suffix}"] = xaxis
    return _layout(90 + 150 * k, **axes)

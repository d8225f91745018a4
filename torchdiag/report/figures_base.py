"""Shared pieces of the report's plotly figures: layout, axes, bars, rounding and label escaping.

Every figure module builds plain plotly-JSON dicts from these, so the charts look alike and the
numbers in the page data are rounded the same way (small, deterministic output).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
AXIS_STYLE = {
    "gridcolor": "#eaeef2",
    "zerolinecolor": "#d0d7de",
    "linecolor": "#d0d7de",
    # Tick labels and titles get the room they need (the legend below takes its own).
    "automargin": True,
}
# One colour per GPU index, reused in every sampler row so a GPU keeps its colour.
PALETTE = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#9d755d", "#eeca3b")
GIB = 1024.0**3
MS_HOVER = "%{y:.2f} ms"
SHARED_REF = "@shared:"
# The profiled window is shaded in this colour on every chart that shows it.
PROFILED_FILL = "rgba(191,135,0,0.13)"
PROFILED_TEXT = "#9a6700"
OUTLIER_COLOR = "#cf222e"
LEGEND = {
    "orientation": "h",
    "x": 0,
    "xanchor": "left",
    "yref": "container",
    "y": 0,
    "yanchor": "bottom",
}


def layout(height: int, **extra: Any) -> dict[str, Any]:
    """The common figure layout, ``height`` pixels tall; ``extra`` adds or overrides keys."""
    out: dict[str, Any] = {
        "height": height,
        "margin": {"l": 64, "r": 16, "t": 36, "b": 48},
        "font": {"family": FONT, "size": 12, "color": "#1f2328"},
        "paper_bgcolor": "#ffffff",
        "plot_bgcolor": "#ffffff",
        # At the foot of the figure (the plot makes room for it): a legend above the plot ran
        # under the toolbar, which sits at the top right, once it was wider than the plot
        # minus the toolbar (nine breakdown parts in a narrow window, long kernel labels).
        "legend": LEGEND,
        "hovermode": "x unified",
    }
    out.update(extra)
    return out


def axis(label: str | None = None, **extra: Any) -> dict[str, Any]:
    """A styled axis, titled ``label`` when given; ``extra`` adds or overrides settings."""
    out: dict[str, Any] = {**AXIS_STYLE, **extra}
    if label is not None:
        out["title"] = {"text": label}
    return out


def bar(
    name: str, x: list[Any], y: list[Any], color: str | list[str], **extra: Any
) -> dict[str, Any]:
    """A bar trace of millisecond values; ``extra`` adds or overrides trace settings."""
    return {
        "type": "bar",
        "name": name,
        "x": x,
        "y": y,
        "marker": {"color": color},
        "hovertemplate": MS_HOVER,
        **extra,
    }


def num(value: float | None, ndigits: int = 3) -> float | None:
    """``value`` rounded, or ``None`` for missing, NaN and infinite values (JSON has neither)."""
    if value is None or isinstance(value, bool) or value != value or abs(value) == float("inf"):
        return None
    return round(float(value), ndigits)


def series(
    values: Sequence[float | None], scale: float = 1.0, ndigits: int = 2
) -> list[float | None]:
    """``values / scale``, rounded, ``None`` kept."""
    return [num(v / scale if v is not None else None, ndigits) for v in values]


def plotly_text(text: str, limit: int | None = None) -> str:
    """A label plotly.js shows literally, cut to ``limit`` characters when given.

    plotly.js renders labels as a small HTML subset (<b>, <a href>, ...) and decodes entities;
    escaping makes a trace- or host-supplied name display as text.
    """
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def gpu_color(index: int) -> str:
    """The colour of GPU ``index`` in every chart."""
    return PALETTE[index % len(PALETTE)]


def band(x0: float, x1: float, label: str = "profiled") -> tuple[dict[str, Any], dict[str, Any]]:
    """(shape, annotation) shading ``x0``..``x1`` across the whole plot height."""
    shape = {
        "type": "rect",
        "xref": "x",
        "yref": "paper",
        "x0": x0,
        "x1": x1,
        "y0": 0,
        "y1": 1,
        "fillcolor": PROFILED_FILL,
        "line": {"width": 0},
        "layer": "below",
    }
    note = {
        "x": (x0 + x1) / 2,
        "y": 1,
        "xref": "x",
        "yref": "paper",
        "yanchor": "top",
        "text": label,
        "showarrow": False,
        "font": {"size": 11, "color": PROFILED_TEXT},
    }
    return shape, note


def count_axis(label: str, top: int) -> dict[str, Any]:
    """An axis of counts up to ``top``: whole-number ticks only (no "0.5 steps")."""
    return axis(label, rangemode="tozero", tick0=0, dtick=_whole_tick(top), tickformat=",d")


def _whole_tick(top: int, ticks: int = 8) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... that puts at most ``ticks`` ticks up to ``top``."""
    magnitude = 1
    while True:
        for k in (1, 2, 5):
            if top <= ticks * k * magnitude:
                return k * magnitude
        magnitude *= 10


def histogram_bins(values: list[float], bins: int = 40) -> tuple[list[float], list[int], float]:
    """(bin left edges, counts, bin width) of ``values``: counted here, so the page carries at
    most ``bins`` numbers instead of every value, whatever the run length."""
    finite = [v for v in values if v is not None and v == v and abs(v) != float("inf")]
    if not finite:
        return [], [], 0.0
    # A few steps in 40 bins read as isolated spikes; about 2 sqrt(n) bins suit small runs.
    bins = max(5, min(bins, round(2 * len(finite) ** 0.5)))
    lo, hi = min(finite), max(finite)
    width = (hi - lo) / bins if hi > lo else max(abs(lo) * 0.05, 1e-3)
    counts = [0] * bins
    for v in finite:
        counts[min(int((v - lo) / width), bins - 1)] += 1
    return [lo + i * width for i in range(bins)], counts, width


def downsample_index(n: int, limit: int) -> list[int]:
    """At most ``limit`` evenly spread indices of a series of ``n`` rows (first and last kept)."""
    if n <= limit:
        return list(range(n))
    if limit <= 1:
        return [0]
    step = (n - 1) / (limit - 1)
    return sorted({round(i * step) for i in range(limit)})

"""The self-contained HTML report.

The page is rendered with jinja2 (autoescape on) from ``torchdiag.report_templates``. Chart data
enters the page once, as a JSON island (``<script type="application/json" id="torchdiag-data">``)
that ``report.js`` parses and hands to ``Plotly.newPlot``. Figures are plain plotly-JSON dicts
built here, without ``plotly.graph_objects``, which is slow to import and not needed.

By default plotly.js is inlined, so the page makes no network request and works offline;
``cdn=True`` links the matching plotly.js from the CDN instead (a ~4.7 MB smaller file).

Rendering is deterministic: the same record gives the same bytes (sorted keys, no render time,
no random ids).
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import re
from typing import Any

import jinja2
import msgspec

import torchdiag
from torchdiag.analyze.finding import rank_findings
from torchdiag.analyze.registry import Analysis, analyze
from torchdiag.record import RunRecord, Samples, StepSeries, TraceSummary
from torchdiag.report.json_report import to_jsonable
from torchdiag.report.verdict import (
    format_bytes,
    format_ms,
    format_number,
    format_pct,
    format_seconds,
    format_value,
    has_steps,
    headline,
    headline_items,
    trace_summary,
    verdict,
)

TEMPLATES_PACKAGE = "torchdiag.report_templates"
DATA_ELEMENT_ID = "torchdiag-data"
# Tables are cut here; the page says how many rows were left out.
MAX_TABLE_ROWS = 50
# Kernel names can be whole C++ template instantiations; show the start and keep the full name in
# the cell's title (tooltip).
MAX_NAME_CHARS = 160

# Characters that must not appear raw in an inline <script>: "</" ends it, "<!--" switches the
# HTML tokenizer into an escaped state, U+2028/U+2029 end lines in older JavaScript parsers.
_JSON_SCRIPT_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_JSON_SCRIPT_RE = re.compile("[<>&\u2028\u2029]")


def render_html(record: RunRecord, analysis: Analysis | None = None, *, cdn: bool = False) -> str:
    """Render ``record`` (and its analysis) as one HTML page.

    When ``analysis`` is omitted the registered rules are run on ``record``. With ``cdn=False``
    (the default) plotly.js is inlined and the page needs no network; with ``cdn=True`` it loads
    plotly.js from ``cdn.plot.ly``.
    """
    if analysis is None:
        analysis = analyze(record)
    version, plotly_js = _plotly_js(inline=not cdn)
    context = _context(record, analysis)
    context["plotly_src"] = f"https://cdn.plot.ly/plotly-{version}.min.js" if cdn else None
    context["plotly_js"] = plotly_js
    context["css"] = _asset("report.css")
    context["report_js"] = _asset("report.js")
    return _environment().get_template("report.html").render(context)


def json_for_script(data: Any) -> str:
    """JSON text that is safe verbatim inside ``<script type="application/json">``.

    ``<``, ``>``, ``&``, U+2028 and U+2029 can only occur inside JSON strings, where the ``\\uXXXX``
    spelling means the same character, so ``JSON.parse`` returns the original strings.
    """
    text = json.dumps(
        to_jsonable(data),
        sort_keys=True,
        ensure_ascii=False,
        allow_nan=False,
        separators=(",", ":"),
    )
    return _JSON_SCRIPT_RE.sub(lambda m: _JSON_SCRIPT_ESCAPES[m.group()], text)


# ---------------------------------------------------------------------------------------------
# Assets


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(importlib.resources.files(TEMPLATES_PACKAGE))),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


@functools.cache
def _asset(name: str) -> str:
    return (importlib.resources.files(TEMPLATES_PACKAGE) / name).read_text(encoding="utf-8")


@functools.cache
def _plotly_js(*, inline: bool) -> tuple[str, str | None]:
    """(plotly.js version, its code when ``inline``); read once per process (~4.7 MB)."""
    try:
        path = importlib.resources.files("plotly") / "package_data" / "plotly.min.js"
        if inline:
            code = path.read_text(encoding="utf-8")
            head = code[:512]
        else:
            code = None
            with path.open("r", encoding="utf-8") as fh:
                head = fh.read(512)
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise RuntimeError(
            "the HTML report inlines plotly.js from the 'plotly' package, which is not "
            "installed; install plotly or render with cdn=True"
        ) from exc
    match = re.search(r"plotly\.js v(\d+\.\d+\.\d+)", head)
    if match is None:
        raise RuntimeError("cannot tell the version of the installed plotly.js")
    if code is not None:
        # The bundle holds neither today; spell them out defensively so an inline copy could
        # never close its own <script> element. "<\/" means "</" in JS strings and regexes.
        code = code.replace("</script", "<\\/script").replace("<!--", "<\\!--")
    return match.group(1), code


# ---------------------------------------------------------------------------------------------
# Template context: every value is formatted here, so templates only lay it out.


def _context(record: RunRecord, analysis: Analysis) -> dict[str, Any]:
    summary = trace_summary(record)
    figs = build_figures(record, summary)
    data = {
        "figures": figs,
        "shared": shared_series(record),
        "run": {
            "name": record.name,
            "source": record.source,
            "status": msgspec.to_builtins(record.status),
        },
    }
    return {
        "version": torchdiag.__version__,
        "title": record.name or "torchdiag run",
        "verdict": verdict(record, analysis),
        "identity": _identity(record),
        "headline": headline_items(headline(record)),
        "status": _status(record),
        "findings": _findings(analysis),
        "skipped": [
            {"id": s.id, "reason": s.reason} for s in sorted(analysis.skipped, key=lambda s: s.id)
        ],
        "has_steps": has_steps(record),
        "steps_note": _steps_note(record),
        "figures": sorted(figs),
        "summary": _summary(record, summary, has_breakdown="breakdown" in figs),
        "environment": _environment_view(record),
        "collectors": [
            {"name": name, "available": c.available, "reason": c.reason or ""}
            for name, c in sorted(record.collectors.items())
        ],
        "data_json": json_for_script(data),
        "data_id": DATA_ELEMENT_ID,
    }


def _identity(record: RunRecord) -> list[tuple[str, str]]:
    env = record.environment
    devices = ", ".join(sorted({d.name for d in env.devices})) or "none recorded"
    rows = [
        ("Name", record.name or "(unnamed)"),
        ("Source", record.source),
        ("Status", record.status.state),
        ("Started", record.started_utc or "unknown"),
        ("Torch", env.torch_version or "unknown"),
        ("Devices", devices),
    ]
    if record.world_size > 1:
        rows.append(("Rank", f"{record.rank} of {record.world_size}"))
    return rows


def _status(record: RunRecord) -> dict[str, Any]:
    st = record.status
    rows = [
        ("State", st.state),
        ("Started (UTC)", record.started_utc or "unknown"),
        ("Ended (UTC)", record.ended_utc or "—"),
        ("Duration", format_seconds(record.duration_s) if record.duration_s else "—"),
        ("Rank", f"{record.rank} of {record.world_size}"),
    ]
    rows += [(f"Overhead: {k}", format_number(v)) for k, v in sorted(record.overhead.items())]
    return {
        "state": st.state,
        "failed": st.state == "failed",
        "exception_type": st.exception_type or "",
        "message": st.message or "",
        "rows": rows,
    }


def _findings(analysis: Analysis) -> list[dict[str, Any]]:
    out = []
    for i, f in enumerate(rank_findings(analysis.findings), start=1):
        out.append(
            {
                "n": i,
                "id": f.id,
                "severity": f.severity,
                "title": f.title,
                "evidence": [(k, format_value(v)) for k, v in sorted(f.evidence.items())],
                "recommendation": f.recommendation,
                "snippet": f.snippet,
                "saving": format_number(f.saving_pct_max) if f.saving_pct_max > 0 else "",
                "docs": _safe_href(f.docs),
            }
        )
    return out


def _safe_href(url: str) -> str:
    """``url`` if it is http(s) or a relative path; '' for ``javascript:`` and other schemes."""
    url = url.strip()
    scheme = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*):", url)
    if scheme and scheme.group(1).lower() not in ("http", "https"):
        return ""
    return url


def _steps_note(record: RunRecord) -> str:
    s = record.steps
    if s.wall_ms:
        merged = max(s.steps, default=1)
        note = f"{s.count:,} steps ({s.detection} detection)"
        if merged > 1:
            note += f"; rows merge up to {merged} steps each (bar = mean, dot = slowest step)"
        return note
    return f"no per-step timings in this record (step detection: {s.detection})"


def _name_cell(name: str) -> dict[str, str]:
    short = name if len(name) <= MAX_NAME_CHARS else name[: MAX_NAME_CHARS - 1] + "…"
    return {"text": short, "full": name}


def _summary(
    record: RunRecord, summary: TraceSummary | None, *, has_breakdown: bool
) -> dict[str, Any] | None:
    if summary is None:
        return None
    window = record.profiler
    info = [
        ("Origin", summary.origin or "—"),
        ("Format", summary.format or "—"),
        ("Events", format_number(summary.event_count)),
        ("Span", format_ms(summary.span_ms)),
        ("Device", summary.device_kind or ("GPU" if summary.has_gpu else "CPU only")),
        ("Step detection", summary.step_detection),
        ("Kernels", format_number(summary.kernel_count)),
        ("Kernel time", format_ms(summary.kernel_time_ms)),
        ("GPU busy", format_ms(summary.gpu_busy_ms)),
    ]
    if window is not None and window.summary is summary:
        info[:0] = [
            (
                "Profiled steps",
                f"{window.first_step} to {window.first_step + window.steps - 1}"
                if window.steps > 0
                else "none",
            ),
            ("Window wall time", format_seconds(window.wall_s)),
            ("Trace file", window.trace_file or "—"),
        ]
    kernel_total = summary.kernel_time_ms or sum(k.total_ms for k in summary.top_kernels)
    ops = [
        {
            "name": _name_cell(op.name),
            "calls": format_number(op.calls),
            "total": format_number(op.total_ms),
            "self": format_number(op.self_ms),
            "gpu": format_number(op.gpu_ms),
            "dtypes": ", ".join(op.input_dtypes[:4]),
            "shapes": "; ".join(op.input_shapes[:3]),
        }
        for op in summary.top_ops[:MAX_TABLE_ROWS]
    ]
    kernels = [
        {
            "name": _name_cell(k.name),
            "class": k.kernel_class,
            "tensor_core": format_value(k.tensor_core),
            "calls": format_number(k.calls),
            "total": format_number(k.total_ms),
            "share": format_pct(100 * k.total_ms / kernel_total) if kernel_total else "—",
            "median": format_number(k.median_us),
            "max": format_number(k.max_us),
        }
        for k in summary.top_kernels[:MAX_TABLE_ROWS]
    ]
    return {
        "info": info,
        "notes": list(summary.notes),
        "has_breakdown": has_breakdown,
        "ops": ops,
        "ops_more": max(0, len(summary.top_ops) - MAX_TABLE_ROWS),
        "kernels": kernels,
        "kernels_more": max(0, len(summary.top_kernels) - MAX_TABLE_ROWS),
        "other_traces": max(0, len(record.traces) - (0 if window and window.summary else 1)),
    }


def _environment_view(record: RunRecord) -> dict[str, Any]:
    env = record.environment
    cpus = "" if env.cpu_count_logical is None else str(env.cpu_count_logical)
    if cpus and env.cpu_count_physical is not None:
        cpus += f" logical, {env.cpu_count_physical} physical"
    versions = [
        ("torchdiag", env.torchdiag_version),
        ("Python", env.python),
        ("Platform", env.platform),
        ("Host", env.hostname),
        ("torch", env.torch_version),
        ("CUDA", env.cuda_version),
        # A version number, not a quantity: no thousands separator.
        ("cuDNN", None if env.cudnn_version is None else str(env.cudnn_version)),
        ("NVIDIA driver", env.nvidia_driver),
        ("CPUs", cpus),
        ("Host memory", env.memory_total_bytes and format_bytes(env.memory_total_bytes)),
        ("Command", " ".join(env.argv)),
    ]
    autocast = env.autocast
    flags = [
        ("cudnn.benchmark", env.cudnn_benchmark),
        ("cudnn.deterministic", env.cudnn_deterministic),
        ("TF32 matmul", env.tf32_matmul),
        ("TF32 cuDNN", env.tf32_cudnn),
        ("float32 matmul precision", env.float32_matmul_precision),
        ("Deterministic algorithms", env.deterministic_algorithms),
        ("Threads", env.num_threads),
        ("torch.compile used", env.compile_used),
        (
            "Autocast",
            None
            if autocast is None
            else f"{autocast.entered} regions, {', '.join(autocast.dtypes) or '—'}"
            f"{', GradScaler' if autocast.grad_scaler else ''}",
        ),
    ]
    dist = env.distributed
    params = env.parameters
    by_dtype = params.elements_by_dtype if params is not None else {}
    return {
        "versions": [(k, format_value(v)) for k, v in versions if v not in (None, "")],
        "flags": [(k, format_value(v)) for k, v in flags],
        "devices": [
            [
                str(d.index),
                d.name,
                d.kind,
                d.capability or "—",
                format_bytes(d.memory_total_bytes),
                format_value(d.multiprocessors),
            ]
            for d in env.devices
        ],
        "loaders": [
            [
                str(ld.loader_id),
                ld.dataset,
                format_value(ld.batch_size),
                str(ld.num_workers),
                format_value(ld.pin_memory),
                format_value(ld.persistent_workers),
                format_value(ld.prefetch_factor),
                format_number(ld.batches),
                format_seconds(ld.wait_s),
            ]
            for ld in env.loaders
        ],
        "optimizers": [
            [
                o.class_name,
                format_value(o.foreach),
                format_value(o.fused),
                format_number(o.param_groups),
                format_number(o.parameters),
                format_number(o.steps),
            ]
            for o in env.optimizers
        ],
        "parameters": None
        if params is None
        else [
            ("Tensors", format_number(params.tensors)),
            ("Elements", format_number(params.elements)),
            ("By dtype", ", ".join(f"{k}: {v:,}" for k, v in sorted(by_dtype.items()))),
            ("Devices", ", ".join(params.devices)),
        ],
        "distributed": [
            ("Initialised", format_value(dist.initialized)),
            ("Backend", format_value(dist.backend)),
            ("Rank / world size", f"{dist.rank} / {dist.world_size}"),
            (
                "Local rank / size",
                f"{format_value(dist.local_rank)} / {format_value(dist.local_world_size)}",
            ),
        ],
        "dynamo": [
            (f"{group}.{key}", format_number(n))
            for group, counters in sorted(env.dynamo_counters.items())
            for key, n in sorted(counters.items())
        ],
        "env_vars": sorted(env.env_vars.items()),
    }


# ---------------------------------------------------------------------------------------------
# Figures: plotly figure JSON as plain dicts, drawn by report.js


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
        {
            "type": "bar",
            "name": "input wait",
            "x": x,
            "y": wait,
            "width": width,
            "marker": {"color": "#e45756"},
            "hovertemplate": "%{y:.2f} ms",
        },
        {
            "type": "bar",
            "name": "rest of step",
            "x": x,
            "y": rest,
            "width": width,
            "marker": {"color": "#4c78a8"},
            "hovertemplate": "%{y:.2f} ms",
        },
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
                "hovertemplate": "%{y:.2f} ms",
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
            xaxis={**_AXIS, "title": {"text": "step"}},
            yaxis={**_AXIS, "title": {"text": "ms per step"}, "rangemode": "tozero"},
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


def _breakdown_figure(summary: TraceSummary) -> dict[str, Any] | None:
    steps = [st for st in summary.steps if st.breakdown.wall > 0]
    if not steps:
        return None
    x = [str(st.number) for st in steps]
    data = []
    for key, label, color in BREAKDOWN_PARTS:
        ys = [_num(getattr(st.breakdown, key)) for st in steps]
        if any(y for y in ys):
            data.append(
                {
                    "type": "bar",
                    "name": label,
                    "x": x,
                    "y": ys,
                    "marker": {"color": color},
                    "hovertemplate": "%{y:.2f} ms",
                }
            )
    return {
        "data": data,
        "layout": _layout(
            340,
            barmode="stack",
            xaxis={**_AXIS, "title": {"text": "profiled step"}, "type": "category"},
            yaxis={**_AXIS, "title": {"text": "ms"}, "rangemode": "tozero"},
        ),
    }


def _kernel_class_figure(class_ms: dict[str, float]) -> dict[str, Any]:
    # Largest at the top: plotly draws horizontal categories bottom-up.
    items = sorted(class_ms.items(), key=lambda kv: (kv[1], kv[0]))
    return {
        "data": [
            {
                "type": "bar",
                "orientation": "h",
                "name": "kernel time",
                "y": [_plotly_text(k) for k, _ in items],
                "x": [_num(v) for _, v in items],
                "marker": {"color": "#4c78a8"},
                "hovertemplate": "%{x:.2f} ms<extra></extra>",
            }
        ],
        "layout": _layout(
            80 + 26 * len(items),
            showlegend=False,
            hovermode="closest",
            xaxis={**_AXIS, "title": {"text": "kernel time in window (ms)"}},
            yaxis={**_AXIS, "type": "category", "automargin": True},
        ),
    }


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

    def add_row(title: str, traces: list[dict[str, Any]]) -> None:
        traces = [t for t in traces if any(v is not None for v in t["y"])]
        if traces:
            rows.append((title, traces))

    def per_gpu(field: str, scale: float = 1.0) -> list[dict[str, Any]]:
        return [
            line(
                f"GPU {g.index}",
                _series(getattr(g, field), scale),
                _gpu_color(g.index),
                f"gpu{g.index}",
            )
            for g in gpus
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
                line(
                    f"GPU {g.index} {label}",
                    _series(getattr(g.gpm, field)),
                    _gpu_color(g.index),
                    f"gpu{g.index}",
                    dash,
                )
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


def _gpu_color(index: int) -> str:
    return _PALETTE[index % len(_PALETTE)]


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
        axes[f"yaxis{suffix}"] = {
            **_AXIS,
            "domain": [round(max(top - h, 0.0), 4), round(top, 4)],
            "title": {"text": title, "font": {"size": 11}},
            "rangemode": "tozero",
        }
        xaxis: dict[str, Any] = {**_AXIS, "anchor": f"y{suffix}", "showticklabels": i == k}
        if i > 1:
            xaxis["matches"] = "x"
        if i == k:
            xaxis["title"] = {"text": "seconds since start"}
        axes[f"xaxis{suffix}"] = xaxis
    return _layout(90 + 150 * k, **axes)

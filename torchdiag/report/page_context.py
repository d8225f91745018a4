"""The HTML report's view-model: a record and its analysis turned into the template context.

Every value is formatted here (with the number formatting shared by all report formats, from
:mod:`torchdiag.report.verdict`), so the templates only lay it out. The chart data that the page
carries as a JSON island is built here too, but serialised by :mod:`torchdiag.report.html`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec

from torchdiag._version import __version__
from torchdiag.analyze.registry import Analysis
from torchdiag.record import RunRecord, TraceSummary
from torchdiag.report.figures import build_figures, shared_series
from torchdiag.report.page_absent import page_parts
from torchdiag.report.page_sections import (
    distribution,
    headline_extras,
    input_pipeline,
    kernel_table,
    memory_categories_view,
    memory_view,
    op_table,
    overhead_rows,
    raw_trace,
)
from torchdiag.report.ranks import RANK_HEAD, RANK_NUMBERS_FROM, rank_rows, ranks_note
from torchdiag.report.rule_docs import rule_doc_html
from torchdiag.report.trial_render import (
    MEASURED_HEAD,
    measured_for_finding,
    measured_rows,
    measured_summary,
)
from torchdiag.report.verdict import (
    evidence_items,
    finding_title,
    format_bytes,
    format_ms,
    format_number,
    format_seconds,
    format_value,
    has_steps,
    headline_items,
    saving_text,
    verdict,
)
from torchdiag.view.run_view import RunView

# Findings shown expanded; the rest are one click away.
OPEN_FINDINGS = 3


def build_context(view: RunView, analysis: Analysis) -> tuple[dict[str, Any], dict[str, Any]]:
    """(template context, chart data for the page's JSON island) of ``view`` and ``analysis``.

    The context lacks only what rendering adds: the serialised island and the page assets.
    """
    record, summary, numbers = view.record, view.summary, view.headline
    figs = build_figures(view)
    data = {
        "figures": figs,
        "shared": shared_series(record),
        "run": {
            "name": record.name,
            "source": record.source,
            "status": msgspec.to_builtins(record.status),
        },
    }
    context = {
        "version": __version__,
        "title": record.name or "torchdiag run",
        "source": record.source,
        "verdict": verdict(view, analysis),
        "identity": _identity(view),
        "headline": _headline(numbers, summary),
        "status": _status(view),
        "findings": _findings(analysis, record),
        "measured": {"head": MEASURED_HEAD, "rows": measured_rows(record.measured_fixes)},
        "ranks": {
            "head": RANK_HEAD,
            "rows": rank_rows(view),
            "note": ranks_note(view),
            "numbers_from": RANK_NUMBERS_FROM,
        },
        "skipped": [{"id": s.id, "reason": s.reason} for s in analysis.skipped],
        "has_steps": has_steps(view),
        "steps_note": _steps_note(record),
        "figures": sorted(figs),
        "summary": _summary(view, has_breakdown="breakdown" in figs),
        "distribution": distribution(view.wall_stats, record.mode),
        "input": input_pipeline(view),
        "ops": op_table(summary),
        "kernels": kernel_table(summary),
        "memory": memory_view(record, summary),
        "memory_categories": memory_categories_view(view.memory_breakdown),
        "overhead": overhead_rows(record),
        "raw_trace": raw_trace(record, summary),
        "environment": _environment_view(view),
        "collectors": [
            {"name": name, "available": c.available, "reason": c.reason or ""}
            for name, c in sorted(record.collectors.items())
        ],
    }
    context["show"], context["absent"] = page_parts(context)
    return context, data


# ---------------------------------------------------------------------------------------------
# Run: identity, status, findings


def _headline(numbers: Mapping[str, Any], summary: TraceSummary | None) -> list[tuple[str, str]]:
    """The shared headline cards plus the HTML-only ones."""
    items = headline_items(numbers)
    # Keep the most telling cards first: step time, throughput, GPU busy, tensor cores.
    return items[:3] + headline_extras(numbers, summary) + items[3:]


def _identity(view: RunView) -> list[tuple[str, str]]:
    record, summary = view.record, view.summary
    env = record.environment
    names = {d.name for d in env.devices}
    if not names and summary is not None:
        names = {d.name for d in summary.devices}
    devices = ", ".join(sorted(names)) or "none recorded"
    rows = [
        ("Name", record.name or "(unnamed)"),
        ("Script", env.argv[0] if env.argv else "—"),
        ("Source", record.source),
        ("Status", record.status.state),
        ("Started", record.started_utc or "unknown"),
        ("Torch", env.torch_version or "unknown"),
        ("Devices", devices),
    ]
    if record.world_size > 1:
        rows.append(("Rank", _rank(view)))
    return rows


def _status(view: RunView) -> dict[str, Any]:
    record, end = view.record, view.run_end
    st = record.status
    rows = [
        ("State", st.state),
        ("Started (UTC)", record.started_utc or "unknown"),
        ("Ended (UTC)", record.ended_utc or ("—" if end.ended else "no end recorded")),
    ]
    if not end.ended:
        rows.append(("Last checkpoint (UTC)", end.checkpoint_utc or "—"))
    rows += [
        ("Duration", format_seconds(record.duration_s) if record.duration_s else "—"),
        ("Rank", _rank(view)),
    ]
    return {
        "state": st.state,
        "failed": st.state == "failed",
        "end_note": "" if end.ended else end.note,
        "exception_type": st.exception_type or "",
        "message": st.message or "",
        "rows": rows,
    }


def _rank(view: RunView) -> str:
    """Which rank(s) the record holds: a directory of rank traces holds several."""
    record = view.record
    if record.ranks:
        listed = ", ".join(str(f.rank) for f in record.ranks)
        return (
            f"ranks {listed} ({len(record.ranks)} records) of {record.world_size}; details from "
            f"rank {record.rank}, which does the most work of its own"
        )
    ranks = sorted({t.rank for t in record.traces if t.rank is not None})
    if len(ranks) > 1:
        shown = view.summary
        listed = ", ".join(str(r) for r in ranks)
        text = f"ranks {listed} ({len(ranks)} traces) of {record.world_size}"
        if shown is not None and shown.rank is not None:
            text += f"; numbers from rank {shown.rank}, the slowest"
        return text
    return f"{record.rank} of {record.world_size}"


def _trace_optimizers(summary: TraceSummary | None) -> list[list[str]]:
    """Optimizer rows from a trace's ``Optimizer.step#...`` regions (settings are only known to
    a live capture: what the trace shows is the class, multi-tensor ops and the steps)."""
    if summary is None:
        return []
    return [
        [
            stat.name.split("#")[-1].removesuffix(".step"),
            "yes" if stat.foreach_ops_per_call > 0 else "no",
            "—",
            "—",
            "—",
            format_number(stat.calls),
        ]
        for stat in summary.optimizer_steps
    ]


def _findings(analysis: Analysis, record: RunRecord) -> list[dict[str, Any]]:
    out = []
    for i, f in enumerate(analysis.findings, start=1):
        measured = measured_for_finding(f.id, record.measured_fixes)
        out.append(
            {
                "n": i,
                "id": f.id,
                "severity": f.severity,
                "title": finding_title(f),
                "evidence": evidence_items(f.evidence),
                "recommendation": f.recommendation,
                "snippet": f.snippet,
                "saving": saving_text(f),
                "docs": _safe_href(f.docs),
                "docs_text": _docs_text(f.docs),
                # Escaped HTML rendered from the shipped copy of docs/rules.md.
                "doc_html": rule_doc_html(f.id) if _docs_text(f.docs) else None,
                "open": i <= OPEN_FINDINGS,
                # What `torchdiag try` measured for this finding's fixes, beside the estimate.
                "measured": [measured_summary(m) for m in measured],
            }
        )
    return out


def _docs_text(url: str) -> str:
    """A docs reference without a scheme (``docs/rules.md#id``), shown as text; '' otherwise."""
    url = url.strip()
    return "" if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", url) else url


def _safe_href(url: str) -> str:
    """``url`` if it is http(s) or a relative path; '' for ``javascript:`` and other schemes."""
    url = url.strip()
    if not url.lower().startswith(("http://", "https://")):
        # A relative path (docs/rules.md#id) means the project's docs, not a file beside the
        # report: the page shows it as text, not as a link that would be broken.
        return ""
    scheme = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*):", url)
    if scheme and scheme.group(1).lower() not in ("http", "https"):
        return ""
    return url


def _steps_note(record: RunRecord) -> str:
    s = record.steps
    if s.wall_ms:
        merged = max(s.steps, default=1)
        note = f"{format_number(s.count)} steps ({s.detection} detection)"
        if merged > 1:
            note += f"; rows merge up to {merged} steps each (bar = mean, dot = slowest step)"
        return note
    return f"no per-step timings in this record (step detection: {s.detection})"


# ---------------------------------------------------------------------------------------------
# Trace summary: window facts, top operators and kernels


def _summary(view: RunView, *, has_breakdown: bool) -> dict[str, Any] | None:
    record, summary = view.record, view.summary
    if summary is None:
        return None
    window = record.profiler
    info = [
        ("Profiled steps", _profiled_steps_text(view)),
        ("Origin", summary.origin or "—"),
        ("Format", summary.format or "—"),
        ("Events", format_number(summary.event_count)),
        ("Span", format_ms(summary.span_ms)),
        ("Device", summary.device_kind or ("GPU" if summary.has_gpu else "CPU only")),
        ("Step detection", summary.step_detection),
    ]
    if summary.has_gpu:
        # A CPU-only trace has no GPU: its zeros would read as an idle GPU.
        info += [
            ("Kernels", format_number(summary.kernel_count)),
            ("Kernel time", format_ms(summary.kernel_time_ms)),
            ("GPU busy", format_ms(summary.gpu_busy_ms)),
        ]
    if window is not None and window.summary is summary:
        info[1:1] = [
            ("Window wall time", format_seconds(window.wall_s)),
            ("Trace file", window.trace_file or "—"),
        ]
    return {
        "info": info,
        "notes": list(summary.notes),
        "has_breakdown": has_breakdown,
        "other_traces": max(0, len(record.traces) - (0 if window and window.summary else 1)),
    }


def _profiled_steps_text(view: RunView) -> str:
    """The steps torch.profiler recorded, numbered as everywhere on the page."""
    span = view.profiled_range
    if span is None:
        return "none"
    text = f"{span[0]} to {span[1]}" if span[1] > span[0] else str(span[0])
    warmup = view.profiler_warmup_steps
    if warmup:
        listed = ", ".join(str(n) for n in warmup)
        text += f" (after {listed}, which warmed the profiler up and is not counted)"
    return text


# ---------------------------------------------------------------------------------------------
# Environment: versions, flags, devices, loaders, optimizers, parameters


def _environment_view(view: RunView) -> dict[str, Any]:
    env = view.record.environment
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
        # Unknown flags (a trace records none) are left out rather than shown as "—".
        "flags": [(k, format_value(v)) for k, v in flags if v is not None],
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
        ]
        or _trace_optimizers(view.summary),
        "parameters": None
        if params is None
        else [
            ("Tensors", format_number(params.tensors)),
            ("Elements", format_number(params.elements)),
            (
                "By dtype",
                ", ".join(f"{k}: {format_number(v)}" for k, v in sorted(by_dtype.items())),
            ),
            ("Devices", ", ".join(params.devices)),
        ],
        "distributed": []
        if not dist.initialized and dist.world_size <= 1
        else [
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

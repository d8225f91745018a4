"""The live view of a running job: one panel (a terminal) or one line (a log), from its record.

A pure function of the record so far and its findings, drawn every second or so by
:mod:`torchdiag.report.live_display` (``profile(live=True)``, ``torchdiag run --live``,
``torchdiag watch``). Every figure comes from a :class:`~torchdiag.view.run_view.RunView`, as in
every report: the state and the ranks from the view of the whole record so far; the progress (its
time left at the recent step time), the step time, throughput, input wait, GPUs, host CPU and the
findings from the view of its last minute (:func:`~torchdiag.view.recent.recent_record`), so the
panel says how the run is doing now, not on average since it started.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from torchdiag.analyze.registry import Analysis
from torchdiag.record import RunRecord
from torchdiag.report.ranks import RANK_HEAD, RANK_NUMBERS_FROM, rank_rows, ranks_note
from torchdiag.report.text import plain_console
from torchdiag.report.verdict import (
    CLEAN_VERDICT,
    finding_title,
    format_bytes,
    format_ms,
    format_number,
    format_pct,
    format_seconds,
    saving_text,
)
from torchdiag.sanitize import terminal_safe
from torchdiag.view.recent import recent_record
from torchdiag.view.run_view import RunView

# Findings listed in the panel (the most valuable first); the rest are counted.
MAX_FINDINGS = 5
# Step rows drawn in the sparkline (the most recent).
SPARK_WIDTH = 48
_BARS = "▁▂▃▄▅▆▇█"


@dataclass(frozen=True)
class LiveViews:
    """The two views a frame reads: the whole record so far, and its last minute."""

    whole: RunView
    recent: RunView


def live_views(record: RunRecord) -> LiveViews:
    """The views of ``record`` and of its recent steps (one view when they are the same)."""
    whole = RunView(record)
    cut = recent_record(record)
    return LiveViews(whole, whole if cut is record else RunView(cut))


def live_panel(
    views: LiveViews,
    analysis: Analysis | None,
    *,
    analysis_age_s: float | None = None,
    updated_age_s: float | None = None,
) -> Panel:
    """The panel of one frame. ``analysis`` holds the findings on ``views.recent`` (None before
    the first), ``analysis_age_s`` how long ago they were found; ``updated_age_s`` how old the
    record is (``torchdiag watch`` reads a checkpoint; None for a fresh snapshot)."""
    whole, recent = views.whole, views.recent
    record = whole.record
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for label, value in _rows(views):
        grid.add_row(label, value)
    parts: list[RenderableType] = [grid]
    ranks = _rank_table(whole)
    if ranks is not None:
        parts.append(ranks)  # its box's blank top edge sets it apart
    if record.steps.count:
        parts += [Text(), _findings(recent, analysis, analysis_age_s)]
    subtitle = None
    if updated_age_s is not None:
        subtitle = Text(f"record written {format_seconds(round(updated_age_s))} ago")
    return Panel(
        Group(*parts),
        title=Text(_title(record)),
        title_align="left",
        subtitle=subtitle,
        subtitle_align="right",
        box=box.ROUNDED,
    )


def live_line(views: LiveViews, analysis: Analysis | None) -> str:
    """One line saying the same, for a log: where stdout is not a terminal."""
    whole, recent = views.whole, views.recent
    parts = [_title(whole.record)]
    if whole.run_end.process == "gone":
        parts.append(whole.run_end.note)
    parts.append(_progress_text(recent))
    if whole.record.steps.count:
        numbers = recent.headline
        parts.append(
            f"step {format_ms(numbers['median_step_ms'])} median, "
            f"{format_ms(numbers['p95_step_ms'])} p95 ({_window_text(recent)})"
        )
        throughput = _throughput(recent)
        if throughput:
            parts.append(throughput)
        if numbers["input_wait_pct"] is not None:
            parts.append(f"input wait {format_pct(numbers['input_wait_pct'])}")
        for gpu in recent.gpus:
            parts.append(f"GPU {gpu.index} {format_pct(gpu.utilization_pct)}")
        if analysis is not None:
            serious = [f.id for f in analysis.findings if f.severity in ("critical", "warning")]
            parts.append("findings: " + (", ".join(serious) if serious else "none at warning"))
    return terminal_safe(" · ".join(parts))


def panel_text(renderable: RenderableType, *, width: int = 100) -> str:
    """``renderable`` as plain text ``width`` columns wide (tests, the README's frame)."""
    console = plain_console(width)
    console.print(renderable)
    return "\n".join(line.rstrip() for line in console.export_text().splitlines()) + "\n"


def sparkline(values: Sequence[float], width: int = SPARK_WIDTH, top: float | None = None) -> str:
    """The last ``width`` values as bars from the lowest to the highest (NaN as a space).

    ``top`` caps the scale: values above it are drawn as full bars. Given the outlier limit, a
    slow first step or a checkpoint save stands out without flattening every other bar.
    """
    shown = list(values)[-width:]
    finite = [v for v in shown if math.isfinite(v)]
    if not finite:
        return ""
    low, high = min(finite), max(finite)
    if top is not None and low < top < high:
        high = top
    span = high - low
    out = []
    for v in shown:
        if not math.isfinite(v):
            out.append(" ")
        else:
            share = min(1.0, (v - low) / span) if span > 0 else 0.0
            out.append(_BARS[round(share * (len(_BARS) - 1))])
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# The parts of a frame


def _title(record: RunRecord) -> str:
    name = terminal_safe(record.name or "unnamed run")
    title = f"torchdiag · {name} · {record.status.state} · {format_seconds(record.duration_s)}"
    if record.world_size > 1 and not record.ranks:
        title += f" · rank {record.rank} of {record.world_size}"
    return title


def _rows(views: LiveViews) -> list[tuple[str, Text]]:
    whole, recent = views.whole, views.recent
    record = whole.record
    rows = [("Progress", Text(_progress_text(recent)))]
    status = record.status
    end = whole.run_end
    if end.process == "gone":  # killed without a word: the record still says running
        rows.append(("Ended", Text(terminal_safe(end.note))))
    if status.state == "failed":
        message = terminal_safe(f"{status.exception_type or 'exception'}: {status.message or ''}")
        rows.append(("Failed", Text(message)))
    if not record.steps.count:
        return rows
    numbers = recent.headline
    walls = recent.step_walls  # the recent rows end with the run's last one
    last = walls[-1] if walls and math.isfinite(walls[-1]) else None
    rows.append(
        (
            "Step time",
            Text(
                f"last {format_ms(last)} · median {format_ms(numbers['median_step_ms'])} · "
                f"p95 {format_ms(numbers['p95_step_ms'])} ({_window_text(recent)})"
            ),
        )
    )
    stats = recent.wall_stats
    spark = sparkline(recent.step_walls, top=stats.outlier_ms if stats is not None else None)
    if spark:
        rows.append(("", Text(spark)))
    throughput = _throughput(recent)
    if throughput:
        rows.append(("Throughput", Text(throughput)))
    if numbers["input_wait_pct"] is not None:
        rows.append(("Input wait", Text(f"{format_pct(numbers['input_wait_pct'])} of the step")))
    for gpu in recent.gpus:
        memory = format_bytes(gpu.memory_peak_bytes)
        if gpu.memory_total_bytes:
            memory += f" of {format_bytes(gpu.memory_total_bytes)}"
        value = (
            f"{terminal_safe(gpu.name) or 'GPU'} · utilisation "
            f"{format_pct(gpu.utilization_pct)} · memory peak {memory}"
        )
        rows.append((f"GPU {gpu.index}", Text(value)))
    host = recent.host_cpu
    if host is not None and host.machine_pct is not None:
        value = f"{format_pct(host.machine_pct)} of {host.cores} cores"
        if host.process_pct is not None:
            value += f" · this process {format_pct(host.process_pct)} of a core"
        rows.append(("Host CPU", Text(value)))
    return rows


def _progress_text(view: RunView) -> str:
    """Steps done, of how many, and the time left (at the step time of ``view``, the recent
    steps); where the epoch is."""
    p = view.progress
    if not p.steps:
        return "waiting for the first step"
    # Time left means something only while the run goes on.
    eta = p.eta_s if view.record.status.state == "running" else None
    parts = [f"step {p.steps:,}" + (f" of {p.total_steps:,}" if p.total_steps else "")]
    if p.eta_to == "limit" and eta is not None:
        parts.append(f"ETA {format_seconds(round(eta))}")
    if p.epoch is not None and p.epoch_length is not None:
        parts.append(f"epoch {p.epoch}: batch {p.epoch_batches or 0:,} of {p.epoch_length:,}")
        if p.eta_to == "epoch" and eta is not None:
            parts.append(f"ETA {format_seconds(round(eta))} to the epoch's end")
    return " · ".join(parts)


def _window_text(recent: RunView) -> str:
    record = recent.record
    n = record.steps.count
    return f"last {format_seconds(round(record.duration_s))}: {n:,} step{'s' if n != 1 else ''}"


def _throughput(recent: RunView) -> str:
    """Samples (or generated tokens) per second where the batch is known, else steps per
    second: the headline's step time, in the other unit."""
    numbers = recent.headline
    if numbers["samples_per_s"] is not None:
        batch = numbers["batch_size"]
        return f"{format_number(numbers['samples_per_s'])} samples/s (batch {batch})"
    if numbers["tokens_per_s"] is not None:
        return f"{format_number(numbers['tokens_per_s'])} tokens/s (generated)"
    step = numbers["step_ms_estimate"]
    return f"{format_number(1000.0 / step)} steps/s" if step else ""


def _rank_table(view: RunView) -> RenderableType | None:
    rows = rank_rows(view)
    if not rows:
        return None
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for i, head in enumerate(RANK_HEAD):
        table.add_column(head, justify="right" if i >= RANK_NUMBERS_FROM else "left")
    for row in rows:
        table.add_row(*(Text(terminal_safe(cell)) for cell in row))
    note = ranks_note(view)
    return Group(table, Text(terminal_safe(note))) if note else table


def _findings(recent: RunView, analysis: Analysis | None, age_s: float | None) -> RenderableType:
    where = _window_text(recent)
    if analysis is None:
        return Text(f"Findings ({where}): the rules run in a few seconds", style="bold")
    when = f", {format_seconds(round(age_s))} ago" if age_s is not None and age_s >= 1 else ""
    serious = [f for f in analysis.findings if f.severity in ("critical", "warning")]
    notes = len(analysis.findings) - len(serious)
    head = Text(f"Findings ({where}{when})", style="bold")
    if not serious:
        more = f" ({notes} informational note{'s' if notes != 1 else ''})" if notes else ""
        return Group(head, Text(CLEAN_VERDICT + more))
    table = Table.grid(padding=(0, 2))
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True)
    # The one column that gives way on a narrow terminal (its text cut short, on one line).
    table.add_column()
    table.add_column(justify="right", no_wrap=True)
    for f in serious[:MAX_FINDINGS]:
        title = Text(terminal_safe(finding_title(f)), no_wrap=True, overflow="ellipsis")
        table.add_row(f.severity, Text(terminal_safe(f.id)), title, Text(saving_text(f)))
    rest = len(serious) - MAX_FINDINGS
    tail = []
    if rest > 0:
        tail.append(f"{rest} more at warning or above")
    if notes:
        tail.append(f"{notes} informational note{'s' if notes != 1 else ''}")
    if tail:
        return Group(head, table, Text("(" + "; ".join(tail) + ")"))
    return Group(head, table)

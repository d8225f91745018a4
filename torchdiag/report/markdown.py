"""GitHub-flavoured Markdown: the run report, sized for a PR comment or a job summary.

GitHub rejects comments over 65,536 characters, so the output is kept under :data:`MAX_CHARS`:
tables are cut with a "... and N more" line and lower sections are dropped before the verdict,
key numbers and findings table are.

Everything that comes from a record or trace (names, titles, messages) goes through
:mod:`~torchdiag.report.markdown_text`, so no operator or kernel name can break a table, open HTML
or mention a GitHub user.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from torchdiag.analyze.finding import Finding
from torchdiag.analyze.registry import Analysis
from torchdiag.record import RunRecord, TraceSummary
from torchdiag.report.diff_render import render_diff_markdown
from torchdiag.report.markdown_text import (
    MAX_CELL_CHARS,
    MAX_NAME_CHARS,
    longest_run,
    md_code,
    md_text,
    md_url,
)
from torchdiag.report.page_sections import memory_categories_view
from torchdiag.report.ranks import RANK_HEAD, rank_rows, ranks_note
from torchdiag.report.renderer import Renderer, RenderOptions
from torchdiag.report.trial_render import (
    markdown_table,
    measured_for_finding,
    measured_rows,
    measured_summary,
    render_try_markdown,
)
from torchdiag.report.verdict import (
    BREAKDOWN_LABELS,
    evidence_items,
    finding_title,
    format_number,
    format_pct,
    headline_items,
    saving_text,
    verdict,
)
from torchdiag.view.run_view import RunView

if TYPE_CHECKING:
    from torchdiag.diff import RunDiff
    from torchdiag.trials.compare import TryResult

MAX_CHARS = 65_000
MAX_OP_ROWS = 15
MAX_SKIPPED_ROWS = 40
# Room kept for the closing lines ("... and N more", footer) whatever came before.
_RESERVE = 400


class MarkdownRenderer(Renderer):
    """GitHub-flavoured Markdown: the run report, a diff and measured fixes."""

    def render(self, view: RunView, analysis: Analysis, options: RenderOptions) -> str:
        return render_markdown(view, analysis, html_url=options.html_url)

    def render_diff(self, diff: RunDiff, options: RenderOptions) -> str:
        return render_diff_markdown(diff)

    def render_try(self, result: TryResult, options: RenderOptions) -> str:
        return render_try_markdown(result)


RENDERER = MarkdownRenderer()


def render_markdown(
    view: RunView,
    analysis: Analysis,
    *,
    html_url: str | None = None,
    pie: bool = True,
) -> str:
    """The report of ``view`` as GitHub-flavoured Markdown, always shorter than
    :data:`MAX_CHARS`.

    ``html_url`` (http or https) adds a link to the full HTML report under the verdict; ``pie``
    adds a mermaid pie chart of where a profiled step goes beside the breakdown table (GitHub
    renders it).
    """
    record = view.record
    link = f"[Full HTML report]({md_url(html_url)})\n\n" if html_url is not None else ""
    # The bounded sections are rendered first so that however many findings there are, the
    # findings table and details only take the room left over. The breakdown goes right under
    # the findings table (where a reviewer looks), the long tables after the details.
    breakdown = _breakdown_section(view, _Budget(MAX_CHARS // 8), pie=pie)
    tail = _tail_sections(view, analysis, _Budget(MAX_CHARS // 4))
    out = _Budget(MAX_CHARS - _RESERVE - len(tail) - len(breakdown))
    out.add(f"# torchdiag: {md_text(record.name or 'unnamed run', 200)}\n\n")
    out.add(f"**{md_text(verdict(view, analysis), 500)}**\n\n")
    out.add(link)
    status = record.status
    if status.state == "failed":
        message = f": {md_text(status.message)}" if status.message else ""
        out.add(
            "> **Run failed** with "
            f"{md_code(status.exception_type or 'an exception', table=False)}{message}\n\n"
        )
    elif not view.run_end.ended:
        out.add(f"> **Run did not end:** {md_text(view.run_end.note, 500)}\n\n")
    out.add(_identity_line(record) + "\n\n")
    out.add(_table(["Key number", "Value"], headline_items(view.headline), out) + "\n")

    findings = analysis.findings
    out.add(f"## Findings ({len(findings):,})\n\n")
    if findings:
        rows = [
            (
                str(i),
                f.severity,
                md_text(finding_title(f), MAX_CELL_CHARS),
                md_text(_saving_and_measured(f, record), MAX_CELL_CHARS) or "—",
                md_code(f.id),
            )
            for i, f in enumerate(findings, start=1)
        ]
        out.add(_table(["#", "Severity", "Finding", "Saving", "Rule"], rows, out) + "\n")
    else:
        out.add("No findings.\n\n")
    if record.measured_fixes:
        out.add("## Measured fixes\n\n" + markdown_table(measured_rows(record.measured_fixes)))
        out.add("\n")
    ranks, note = rank_rows(view), ranks_note(view)
    if ranks or note:
        out.add("## Ranks\n\n" + (md_text(note, 2000) + ".\n\n" if note else ""))
        if ranks:
            cells = [[md_text(c, MAX_CELL_CHARS) for c in row] for row in ranks]
            out.add(_table(RANK_HEAD, cells, out, MAX_OP_ROWS) + "\n")
    out.limit += len(breakdown)  # its room was set aside above
    out.add(breakdown)
    if findings:
        _finding_details(findings, out)
    return out.text() + tail + "<sub>Made by torchdiag from the run record.</sub>\n"


def _saving_and_measured(finding: Finding, record: RunRecord) -> str:
    """The finding's estimated saving, and what ``torchdiag try`` measured for its fixes."""
    measured = measured_for_finding(finding.id, record.measured_fixes)
    parts = [saving_text(finding)] + [f"measured {measured_summary(m)}" for m in measured]
    return "; ".join(p for p in parts if p)


def _breakdown_section(view: RunView, out: _Budget, *, pie: bool) -> str:
    """The mean step breakdown: a short table (and a mermaid pie when ``pie``)."""
    return "## Step breakdown\n\n" + _breakdown(view.record, view.summary, out, pie=pie) + "\n"


def _tail_sections(view: RunView, analysis: Analysis, out: _Budget) -> str:
    """Top ops and kernels, skipped rules: each table capped in rows."""
    summary = view.summary
    memory = _memory_section(view, out)
    if memory:
        out.add(memory)
    if summary is not None and summary.top_ops:
        rows = [
            (
                md_code(op.name, MAX_NAME_CHARS),
                format_number(op.calls),
                format_number(op.total_ms),
                format_number(op.self_ms),
                format_number(op.gpu_ms),
            )
            for op in summary.top_ops
        ]
        out.add(
            "## Top operators\n\n"
            + _table(["Operator", "Calls", "Total ms", "Self ms", "GPU ms"], rows, out, MAX_OP_ROWS)
            + "\n"
        )
    if summary is not None and summary.top_kernels:
        rows = [
            (
                md_code(k.name, MAX_NAME_CHARS),
                md_text(k.kernel_class),
                format_number(k.calls),
                format_number(k.total_ms),
                format_number(k.median_us),
            )
            for k in summary.top_kernels
        ]
        out.add(
            "## Top GPU kernels\n\n"
            + _table(["Kernel", "Class", "Calls", "Total ms", "Median µs"], rows, out, MAX_OP_ROWS)
            + "\n"
        )
    if analysis.skipped:
        skipped = [(md_code(s.id), md_text(s.reason, MAX_CELL_CHARS)) for s in analysis.skipped]
        out.add(
            f"<details><summary>{_plural(len(skipped), 'rule')} skipped for lack of data</summary>"
            "\n\n" + _table(["Rule", "Why"], skipped, out, MAX_SKIPPED_ROWS) + "\n</details>\n\n"
        )
    return out.text()


def _memory_section(view: RunView, out: _Budget) -> str:
    """Bytes by category at the profiler window's peak and the largest batch ("" without
    categories)."""
    view_model = memory_categories_view(view.memory_breakdown)
    if not view_model["rows"]:
        return ""
    text = "## What fills memory\n\n" + _table(
        ["At the peak", "Bytes", "Share"], view_model["rows"], out
    )
    if view_model["batch"]:
        rows = [(label, md_text(value, MAX_CELL_CHARS)) for label, value in view_model["batch"]]
        text += "\n" + _table(["Batch estimate", "Value"], rows, out)
    if view_model["ops"]:
        rows = [(md_code(name, MAX_NAME_CHARS), size) for name, size in view_model["ops"]]
        text += "\n" + _table(["Operator holding memory at the peak", "Bytes"], rows, out)
    return text + "\n"


def _mermaid_pie(parts: Sequence[tuple[str, float]]) -> str:
    """A mermaid ``pie`` of milliseconds per step by part (GitHub renders it as a chart)."""
    lines = ["```mermaid", "pie showData", "    title Where a profiled step goes (ms per step)"]
    lines += [f'    "{label}" : {value:.3f}' for label, value in parts]
    return "\n" + "\n".join(lines) + "\n```\n"


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'s' if n != 1 else ''}"


class _Budget:
    """Accumulates the document; ``fits`` tells whether more text stays under the limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[str] = []
        self.size = 0

    def fits(self, extra: int) -> bool:
        return self.size + extra <= self.limit

    def add(self, text: str, *, force: bool = False) -> bool:
        """Append ``text`` if it fits; ``force`` is for short notes paid from the reserve."""
        if not force and not self.fits(len(text)):
            return False
        self.parts.append(text)
        self.size += len(text)
        return True

    def text(self) -> str:
        return "".join(self.parts)


def _table(
    head: Sequence[str],
    rows: Sequence[Sequence[str]],
    budget: _Budget,
    max_rows: int | None = None,
) -> str:
    """A GFM table of as many rows as fit (and ``max_rows``), then "... and N more"."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    size = sum(len(line) + 1 for line in lines) + 40
    shown = 0
    for row in rows:
        line = "| " + " | ".join(row) + " |"
        if (max_rows is not None and shown >= max_rows) or not budget.fits(size + len(line) + 1):
            break
        lines.append(line)
        size += len(line) + 1
        shown += 1
    text = "\n".join(lines) + "\n"
    if shown < len(rows):
        text += f"\n... and {len(rows) - shown:,} more\n"
    return text


def _identity_line(record: RunRecord) -> str:
    env = record.environment
    bits = [f"source: {record.source}", f"status: {record.status.state}"]
    if record.started_utc:
        bits.append(f"started: {md_text(record.started_utc, 40)}")
    if env.torch_version:
        bits.append(f"torch {md_text(env.torch_version, 40)}")
    devices = sorted({d.name for d in env.devices})
    if devices:
        bits.append(md_text(", ".join(devices), 200))
    return " · ".join(bits)


def _finding_details(findings: list[Finding], out: _Budget) -> None:
    """Recommendation, evidence and snippet of each finding, as many as the budget allows.

    Folded into one ``<details>`` block: the table above is what a reviewer reads first, and the
    fixes are a click away. Its closing tag is paid from the reserve, so it is always written.
    """
    out.add(
        f"<details><summary>How to fix: {_plural(len(findings), 'finding')} in detail</summary>"
        "\n\n",
        force=True,
    )
    _finding_detail_parts(findings, out)
    out.add("</details>\n\n", force=True)


def _finding_detail_parts(findings: list[Finding], out: _Budget) -> None:
    for i, f in enumerate(findings, start=1):
        parts = [
            f"### {i}. {md_text(finding_title(f), MAX_CELL_CHARS)}\n\n",
            f"{md_text(f.recommendation, 2000)}\n\n",
        ]
        if f.evidence:
            ev = "; ".join(
                f"{md_text(label, 80)}: {md_text(value, 120)}"
                for label, value in evidence_items(f.evidence)
            )
            parts.append(f"Evidence: {ev}\n\n")
        if f.snippet:
            fence = "`" * max(3, longest_run(f.snippet, "`") + 1)
            parts.append(f"{fence}python\n{f.snippet.rstrip()}\n{fence}\n\n")
        if not out.add("".join(parts)):
            left = len(findings) - i + 1
            out.add(
                f"... details of {left:,} more finding{'s' if left != 1 else ''} left out "
                "(see the HTML or JSON report)\n\n",
                force=True,
            )
            return


def _breakdown(
    record: RunRecord, summary: TraceSummary | None, out: _Budget, *, pie: bool = False
) -> str:
    """Mean time per step by part: from the trace breakdown when there is one, else live steps.

    With ``pie``, a profiled breakdown also gets a mermaid pie chart. Its labels are this module's
    fixed part names, never text from the trace, so nothing in it needs escaping.
    """
    steps = [st for st in summary.steps if st.breakdown.wall > 0] if summary else []
    if steps:
        wall = sum(st.breakdown.wall for st in steps)
        rows = []
        means: list[tuple[str, float]] = []
        for key, label in BREAKDOWN_LABELS.items():
            total = sum(getattr(st.breakdown, key) for st in steps)
            if total > 0:
                rows.append(
                    (label, format_number(total / len(steps)), format_pct(100 * total / wall))
                )
                means.append((label, total / len(steps)))
        rows.append(("**step wall time**", format_number(wall / len(steps)), "100%"))
        note = f"Mean over {len(steps)} profiled step{'s' if len(steps) != 1 else ''}.\n\n"
        table = _table(["Part", "ms per step", "Share"], rows, out)
        # One slice is no chart; the table already says it all.
        return note + table + (_mermaid_pie(means) if pie and len(means) > 1 else "")
    s = record.steps
    if s.count and s.total_wall_s > 0:
        wait = 1000 * s.total_input_wait_s / s.count
        wall = 1000 * s.total_wall_s / s.count
        rows = [
            ("input wait", format_number(wait), format_pct(100 * wait / wall)),
            ("rest of step", format_number(wall - wait), format_pct(100 * (wall - wait) / wall)),
            ("**step wall time**", format_number(wall), "100%"),
        ]
        note = f"Mean over {s.count:,} steps (no profiler breakdown in this record).\n\n"
        return note + _table(["Part", "ms per step", "Share"], rows, out)
    return "No step timings in this record.\n"

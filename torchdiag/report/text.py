"""Plain-text report for the terminal and logs, laid out with ``rich``.

Rendered through a recording console with colour off, so the output is plain text of a fixed
width that does not depend on the terminal it is printed to.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from torchdiag.analyze.registry import Analysis
from torchdiag.report.diff_render import render_diff_text
from torchdiag.report.ranks import RANK_HEAD, RANK_NUMBERS_FROM, rank_rows, ranks_note
from torchdiag.report.renderer import Renderer, RenderOptions
from torchdiag.report.trial_render import render_try_text
from torchdiag.report.verdict import finding_title, headline_items, saving_text, verdict
from torchdiag.view.run_view import RunView

if TYPE_CHECKING:
    from torchdiag.diff import RunDiff
    from torchdiag.trials.compare import TryResult

MAX_TEXT_CHARS = 400


class TextRenderer(Renderer):
    """Plain text for a terminal or a log: the run report, a diff and measured fixes."""

    def render(self, view: RunView, analysis: Analysis, options: RenderOptions) -> str:
        return render_text(view, analysis, width=options.width)

    def render_diff(self, diff: RunDiff, options: RenderOptions) -> str:
        return render_diff_text(diff)

    def render_try(self, result: TryResult, options: RenderOptions) -> str:
        return render_try_text(result)


RENDERER = TextRenderer()


def plain_console(width: int) -> Console:
    """A console that records plain text ``width`` columns wide (no colour, markup highlighting,
    emoji or terminal codes) and prints nothing: read it with ``export_text()``."""
    return Console(
        record=True,
        width=width,
        force_terminal=False,
        force_jupyter=False,
        force_interactive=False,
        color_system=None,
        highlight=False,
        emoji=False,
        file=io.StringIO(),
    )


def render_text(view: RunView, analysis: Analysis, *, width: int = 100) -> str:
    """The verdict, key numbers and findings of ``view`` as plain text ``width`` columns wide.

    Every string from the record goes in as :class:`rich.text.Text`, so brackets in names are
    never read as markup.
    """
    record = view.record
    console = plain_console(width)
    console.print(Text(f"torchdiag: {_clip(record.name or 'unnamed run')}", style="bold"))
    console.print(Text(verdict(view, analysis)))
    status = record.status
    if status.state == "failed":
        console.print(
            Text(
                f"Run failed: {status.exception_type or 'exception'}: {_clip(status.message or '')}"
            )
        )
    elif not view.run_end.ended:
        console.print(Text(f"Run did not end: {view.run_end.note}"))
    elif status.state != "completed":
        console.print(Text(f"Run state: {status.state}"))
    console.print()

    numbers = Table(box=box.SIMPLE, show_header=False, pad_edge=False)
    numbers.add_column("Key number")
    numbers.add_column("Value")
    for label, value in headline_items(view.headline):
        numbers.add_row(Text(label), Text(value))
    console.print(numbers)
    ranks, note = rank_rows(view), ranks_note(view)
    if ranks:
        table = Table(title="Ranks", box=box.SIMPLE_HEAD, title_justify="left")
        for i, head in enumerate(RANK_HEAD):
            table.add_column(head, justify="right" if i >= RANK_NUMBERS_FROM else "left")
        for row in ranks:
            table.add_row(*(Text(cell) for cell in row))
        console.print(table)
    if note:
        console.print(Text(_clip(note)))

    findings = analysis.findings
    if findings:
        table = Table(
            title=f"Findings ({len(findings)})", box=box.SIMPLE_HEAD, title_justify="left"
        )
        table.add_column("#", justify="right")
        table.add_column("Severity")
        table.add_column("Rule", overflow="fold")
        table.add_column("Finding", ratio=1, overflow="fold")
        table.add_column("Saving", justify="right")
        for i, f in enumerate(findings, start=1):
            saving = saving_text(f) or "-"
            table.add_row(str(i), f.severity, Text(f.id), Text(_clip(finding_title(f))), saving)
        console.print(table)
        for i, f in enumerate(findings, start=1):
            if f.recommendation:
                console.print(Text(f"{i}. {_clip(f.recommendation)}"))
    else:
        console.print(Text("No findings."))
    if analysis.skipped:
        ids = ", ".join(s.id for s in analysis.skipped)
        console.print(Text(f"Skipped for lack of data: {_clip(ids)}"))
    # rich pads every line to the full width; the padding is noise in logs and diffs.
    return "\n".join(line.rstrip() for line in console.export_text().splitlines()) + "\n"


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_TEXT_CHARS else text[: MAX_TEXT_CHARS - 1] + "…"

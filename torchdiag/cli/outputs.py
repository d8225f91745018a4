"""What the commands write: rendered reports, to a file (atomically) or to stdout."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from torchdiag.cli.args import UsageError
from torchdiag.files import atomic_write
from torchdiag.record import RunRecord
from torchdiag.sanitize import terminal_safe

FORMATS = ("html", "md", "json", "text")
_SUFFIX = {"html": ".html", "md": ".md", "json": ".findings.json", "text": ".txt"}


def check_url(url: str) -> None:
    """Refuse a ``--html-url`` that is not an absolute http(s) URL."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"--html-url must be an http(s) URL, not {url!r}")


def check_output(output: str, sources: Sequence[Path]) -> None:
    """Refuse an output that would overwrite an input, or an empty output path."""
    if output == "-":
        return
    if not output.strip():
        raise UsageError("an output path is required ('-' for stdout)")
    target = Path(output)
    for source in sources:
        if source.is_file() and target.exists() and target.samefile(source):
            raise UsageError(f"the output would overwrite the input: {output}")


def write_output(rendered: str, output: str) -> None:
    """Write ``rendered`` to the file ``output``, or to stdout when it is ``-``."""
    if output == "-":
        # Whatever the format, what reaches a terminal shows control characters, never obeys
        # them (JSON escapes them itself; HTML is escaped for the browser).
        rendered = terminal_safe(rendered)
        sys.stdout.write(rendered if rendered.endswith("\n") else rendered + "\n")
    else:
        # All or nothing: a full disk leaves no truncated report behind.
        atomic_write(output, rendered.encode("utf-8", "replace"))


def beside(source: Path, fmt: str) -> Path:
    """Where a report of ``source`` in ``fmt`` goes by default: next to it, same stem."""
    folder = source if source.is_dir() else source.parent
    name = source.name
    for suffix in (".gz", ".json"):
        name = name.removesuffix(suffix)
    return folder / f"{name or 'report'}{_SUFFIX[fmt]}"


def render(
    fmt: str,
    record: RunRecord,
    analysis: object,
    *,
    cdn: bool = False,
    html_url: str | None = None,
) -> str:
    """The report of ``record`` in ``fmt``; each renderer is imported only when asked for."""
    if fmt == "html":
        from torchdiag.report.html import render_html

        return render_html(record, analysis, cdn=cdn)  # type: ignore[arg-type]
    if fmt == "md":
        from torchdiag.report.markdown import render_markdown

        return render_markdown(record, analysis, html_url=html_url)  # type: ignore[arg-type]
    if fmt == "json":
        from torchdiag.report.json_report import render_json

        return render_json(record, analysis)  # type: ignore[arg-type]
    from torchdiag.report.text import render_text

    return render_text(record, analysis)  # type: ignore[arg-type]


def say_written(what: str, output: str) -> None:
    """Tell the user where a file went, on stderr (stdout may carry a report for a pipeline);
    nothing when it went to stdout: the content is there."""
    if output != "-":
        print(terminal_safe(f"{what}: {output}"), file=sys.stderr)

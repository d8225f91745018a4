"""What the commands write: rendered reports, to a file (atomically) or to stdout.

Which formats there are, and what each is called, comes from the one registry,
:mod:`torchdiag.report.formats`."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from torchdiag.cli.args import UsageError
from torchdiag.files import atomic_write
from torchdiag.report.formats import OutputFormat
from torchdiag.sanitize import terminal_safe


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


def beside(source: Path, fmt: OutputFormat) -> Path:
    """Where a report of ``source`` in ``fmt`` goes by default: next to it, same stem."""
    folder = source if source.is_dir() else source.parent
    name = source.name
    for suffix in (".gz", ".json"):
        name = name.removesuffix(suffix)
    return folder / f"{name or 'report'}{fmt.suffix}"


def say_written(what: str, output: str) -> None:
    """Tell the user where a file went, on stderr (stdout may carry a report for a pipeline);
    nothing when it went to stdout: the content is there."""
    if output != "-":
        print(terminal_safe(f"{what}: {output}"), file=sys.stderr)

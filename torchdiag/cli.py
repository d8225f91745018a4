"""The ``torchdiag`` command line.

``torchdiag report INPUT`` reads a run record (``run.json``) or torch.profiler trace(s) and writes
a report. Bad input or usage gives one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from torchdiag.record import RecordError, RunRecord, decode_record

EXIT_OK = 0
EXIT_USAGE = 2

FORMATS = ("html", "md", "json", "text")
_SUFFIX = {"html": ".html", "md": ".md", "json": ".findings.json", "text": ".txt"}
# A run record is small (aggregates only); anything larger is certainly a trace.
_MAX_RECORD_BYTES = 64 * 1024 * 1024


class UsageError(Exception):
    """A problem with the command line or its input, reported in one line with exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = _Parser(
        prog="torchdiag",
        description="Diagnose PyTorch training runs: reports from run records and profiler traces.",
    )
    from torchdiag import __version__

    parser.add_argument("--version", action="version", version=f"torchdiag {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    report = commands.add_parser(
        "report",
        help="write a report for a run.json or torch.profiler trace(s)",
        description=(
            "Report on a run record or torch.profiler trace (.json, .json.gz, or a directory of "
            "them). Without --format: the HTML report is written beside the input and a summary "
            "is printed."
        ),
    )
    report.add_argument("input", help="run.json, a trace file, or a directory of traces")
    report.add_argument(
        "-o", "--output", help="output file; '-' for stdout (default: beside the input for html)"
    )
    report.add_argument("--format", choices=FORMATS, help="html, md, json or text")
    report.add_argument(
        "--cdn", action="store_true", help="HTML: load plotly.js from its CDN instead of inlining"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        if args.command == "report":
            return _report(args)
        raise UsageError("a command is required: report (see 'torchdiag --help')")
    except UsageError as err:
        _fail(str(err))
    except (RecordError, OSError) as err:
        _fail(_one_line(err))
    except KeyboardInterrupt:
        _fail("interrupted")
    except Exception as err:
        # Input we could not make sense of must still end in one line, not a traceback; the
        # traceback stays one variable away for whoever debugs torchdiag itself.
        if os.environ.get("TORCHDIAG_DEBUG"):
            raise
        _fail(f"{_one_line(err)} ({type(err).__name__}; TORCHDIAG_DEBUG=1 shows the traceback)")
    return EXIT_USAGE


def _fail(message: str) -> None:
    print(f"torchdiag: error: {message}", file=sys.stderr)


def _one_line(err: BaseException) -> str:
    if isinstance(err, OSError) and err.filename:
        return f"{err.strerror or type(err).__name__}: {err.filename}"
    text = " ".join(str(err).split())
    return text or type(err).__name__


def load_input(path: Path) -> RunRecord:
    """A record from ``run.json``, or one built from trace file(s); raises on bad input."""
    if not path.exists():
        raise UsageError(f"no such file or directory: {path}")
    if path.is_file() and not path.name.endswith(".gz"):
        size = path.stat().st_size
        if size <= _MAX_RECORD_BYTES:
            data = path.read_bytes()
            if b'"schema":"torchdiag.run/' in data or b'"schema": "torchdiag.run/' in data:
                return decode_record(data)
    from torchdiag.traces.load import record_from_traces

    return record_from_traces(path)


def _report(args: argparse.Namespace) -> int:
    from torchdiag.analyze.registry import analyze

    source = Path(args.input)
    record = load_input(source)
    analysis = analyze(record)
    fmt = args.format
    summary_too = fmt is None and args.output is None
    fmt = fmt or "html"
    rendered = _render(fmt, record, analysis, cdn=args.cdn)
    output = args.output
    if output is None:
        output = str(_beside(source, fmt)) if fmt == "html" else "-"
    if output == "-":
        sys.stdout.write(rendered if rendered.endswith("\n") else rendered + "\n")
    else:
        target = Path(output)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(rendered, encoding="utf-8")
    if summary_too:
        sys.stdout.write(_render("text", record, analysis))
        print(f"HTML report: {output}")
    return EXIT_OK


def _beside(source: Path, fmt: str) -> Path:
    folder = source if source.is_dir() else source.parent
    name = source.name
    for suffix in (".gz", ".json"):
        name = name.removesuffix(suffix)
    return folder / f"{name or 'report'}{_SUFFIX[fmt]}"


def _render(fmt: str, record: RunRecord, analysis: object, *, cdn: bool = False) -> str:
    if fmt == "html":
        from torchdiag.report.html import render_html

        return render_html(record, analysis, cdn=cdn)  # type: ignore[arg-type]
    if fmt == "md":
        from torchdiag.report.markdown import render_markdown

        return render_markdown(record, analysis)  # type: ignore[arg-type]
    if fmt == "json":
        from torchdiag.report.json_report import render_json

        return render_json(record, analysis)  # type: ignore[arg-type]
    from torchdiag.report.text import render_text

    return render_text(record, analysis)  # type: ignore[arg-type]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

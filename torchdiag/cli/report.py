"""``torchdiag report INPUT``: one report of a run record, a folder of rank records or traces."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from torchdiag.cli.args import add_jobs, add_no_progress
from torchdiag.cli.command import Command
from torchdiag.cli.inputs import check_input, load_input
from torchdiag.cli.outputs import beside, check_output, check_url, say_written, write_output
from torchdiag.cli.progress import read_progress
from torchdiag.report.formats import format_names, output_format
from torchdiag.report.renderer import RenderOptions
from torchdiag.sanitize import terminal_safe

EXIT_OK = 0


class ReportCommand(Command):
    """``torchdiag report INPUT``."""

    name = "report"
    help = "write a report for a run.json or torch.profiler trace(s)"
    description = (
        "Report on a run record or torch.profiler trace (.json, .json.gz, or a directory of "
        "them). Without --format: the HTML report is written beside the input and a summary "
        "is printed."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("input", help="run.json, a trace file, or a directory of traces")
        parser.add_argument(
            "-o",
            "--output",
            help="output file; '-' for stdout (default: beside the input for html)",
        )
        names = format_names("run")
        parser.add_argument(
            "--format", choices=names, help=", ".join(names[:-1]) + f" or {names[-1]}"
        )
        parser.add_argument(
            "--cdn",
            action="store_true",
            help="HTML: load plotly.js from its CDN instead of inlining",
        )
        parser.add_argument(
            "--html-url",
            metavar="URL",
            help="md: link to the HTML report at this http(s) URL (e.g. a CI artifact)",
        )
        add_no_progress(parser)
        add_jobs(parser)

    def run(self, args: argparse.Namespace) -> int:
        """Write the report; prints where it went."""
        source = check_input(args.input)
        if args.html_url is not None:
            check_url(args.html_url)
        write_report(
            source,
            args.format,
            args.output,
            cdn=args.cdn,
            html_url=args.html_url,
            progress=not args.no_progress,
            jobs=args.jobs,
        )
        return EXIT_OK


def report_beside(source: Path) -> None:
    """The default report: the summary on stdout, the HTML report beside ``source``."""
    write_report(check_input(str(source)), None, None)


def write_report(
    source: Path,
    fmt: str | None,
    output: str | None,
    *,
    cdn: bool = False,
    html_url: str | None = None,
    progress: bool = True,
    jobs: int | None = None,
) -> None:
    """Read ``source`` and write its report in ``fmt`` to ``output``.

    Neither given: the HTML report beside the input and the text summary on stdout. Only ``fmt``
    given: HTML beside the input, the others on stdout.
    """
    from torchdiag.analyze.registry import analyze
    from torchdiag.view.run_view import RunView

    summary_too = fmt is None and output is None
    chosen = output_format(fmt or "html")
    if output is None:
        output = str(beside(source, chosen)) if chosen.name == "html" else "-"
    check_output(output, [source])
    # JSON on stdout is for pipelines (`| jq`): keep the terminal quiet there too.
    wanted = progress and not (chosen.name == "json" and output == "-")
    with read_progress(wanted) as bar:
        record = load_input(source, progress=bar, jobs=jobs)
    view = RunView(record)
    analysis = analyze(view)
    options = RenderOptions(cdn=cdn, html_url=html_url)
    write_output(chosen.renderer().render(view, analysis, options), output)
    if summary_too:
        summary = output_format("text").renderer().render(view, analysis, options)
        sys.stdout.write(terminal_safe(summary))
    say_written(f"{chosen.label} report", output)

"""``torchdiag diff BASE HEAD``: is HEAD slower than BASE, with confidence? Exit 1 when it is."""

from __future__ import annotations

import argparse
from pathlib import Path

from torchdiag.cli.args import add_jobs, add_no_progress, percentage
from torchdiag.cli.inputs import check_input, load_input
from torchdiag.cli.outputs import check_output, say_written, write_output
from torchdiag.cli.progress import read_progress

EXIT_OK = 0
EXIT_REGRESSION = 1


def add_parser(commands: argparse._SubParsersAction) -> None:
    """The ``diff`` subcommand's arguments."""
    from torchdiag.diff import DEFAULT_THRESHOLD_PCT

    diff = commands.add_parser(
        "diff",
        help="compare two runs (run.json or traces): step time, breakdown, findings, ops",
        description=(
            "Compare HEAD against BASE (each a run.json, a trace file or a directory of traces). "
            "Exit status: 1 when HEAD is slower beyond --threshold with confidence (the lower "
            "bound of the 95% bootstrap interval of the HEAD/BASE median step-time ratio is "
            "above 1 + PCT/100), 0 otherwise, 2 on bad input or usage."
        ),
    )
    diff.add_argument("base", help="the baseline run: run.json, a trace file, or a directory")
    diff.add_argument("head", help="the run to judge: run.json, a trace file, or a directory")
    diff.add_argument("-o", "--output", default="-", help="output file; '-' for stdout (default)")
    diff.add_argument(
        "--format", choices=("text", "md", "json"), default="text", help="text (default), md, json"
    )
    diff.add_argument(
        "--threshold",
        metavar="PCT",
        type=percentage,
        default=DEFAULT_THRESHOLD_PCT,
        help=f"slowdown in percent that fails the comparison (default {DEFAULT_THRESHOLD_PCT:g})",
    )
    add_no_progress(diff)
    add_jobs(diff)


def run(args: argparse.Namespace) -> int:
    """Compare and write the comparison; the exit status is the verdict."""
    from torchdiag.diff import diff_runs
    from torchdiag.report.diff_render import render_diff

    wanted = not args.no_progress and not (args.format == "json" and args.output == "-")
    sources = [check_input(args.base), check_input(args.head)]
    check_output(args.output, sources)
    records = []
    for path in sources:
        with read_progress(wanted) as progress:
            records.append(load_input(Path(path), progress=progress, jobs=args.jobs))
    result = diff_runs(records[0], records[1], threshold_pct=args.threshold)
    write_output(render_diff(result, args.format), args.output)
    say_written("Comparison", args.output)
    return EXIT_REGRESSION if result.regression else EXIT_OK

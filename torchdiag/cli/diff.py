"""``torchdiag diff BASE HEAD`` (or ``--base A1 A2 A3 --head B1 B2 B3``, or two folders of run
records): is HEAD slower than BASE, with confidence? Exit 1 when it is."""

from __future__ import annotations

import argparse
from pathlib import Path

from torchdiag.cli.args import UsageError, add_jobs, add_no_progress, percentage
from torchdiag.cli.command import Command
from torchdiag.cli.inputs import check_input, load_runs
from torchdiag.cli.outputs import check_output, say_written, write_output
from torchdiag.record import RunRecord
from torchdiag.report.formats import format_names, output_format
from torchdiag.report.renderer import RenderOptions

EXIT_OK = 0
EXIT_REGRESSION = 1


class DiffCommand(Command):
    """``torchdiag diff BASE HEAD``."""

    name = "diff"
    help = "compare runs (run.json or traces): step time, breakdown, findings, ops"
    usage = "%(prog)s (BASE HEAD | --base RUN [RUN ...] --head RUN [RUN ...]) [options]"
    description = (
        "Compare HEAD against BASE. Each side is one run (a run.json, a trace file or a "
        "directory of traces or rank records) or several: --base/--head with several inputs, "
        "or a directory of run records of separate single-process runs. With several runs a "
        "side, each run counts once by its step time and the interval is a t-interval over "
        "runs, so the variation between runs is in it; with one run a side it is a bootstrap "
        "over that run's steps, which is not. Exit status: 1 when HEAD is slower beyond "
        "--threshold with confidence (the lower bound of the 95% interval of the HEAD/BASE "
        "step-time ratio is above 1 + PCT/100) or a --fail-on counter rose, 0 otherwise, 2 on "
        "bad input or usage."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from torchdiag.diff import DEFAULT_THRESHOLD_PCT
        from torchdiag.view.counters import COUNTER_NAMES

        parser.add_argument("base", nargs="?", help="the baseline: a run, or a directory of runs")
        parser.add_argument(
            "head", nargs="?", help="the runs to judge: a run, or a directory of runs"
        )
        parser.add_argument(
            "--base",
            dest="base_runs",
            nargs="+",
            metavar="RUN",
            help="the baseline's runs (instead of BASE), e.g. three repeats of the same job",
        )
        parser.add_argument(
            "--head",
            dest="head_runs",
            nargs="+",
            metavar="RUN",
            help="the runs to judge (instead of HEAD)",
        )
        parser.add_argument(
            "-o", "--output", default="-", help="output file; '-' for stdout (default)"
        )
        parser.add_argument(
            "--format",
            choices=format_names("diff"),
            default="text",
            help="text (default), " + ", ".join(n for n in format_names("diff") if n != "text"),
        )
        parser.add_argument(
            "--threshold",
            metavar="PCT",
            type=percentage,
            default=DEFAULT_THRESHOLD_PCT,
            help="slowdown in percent that fails the comparison "
            f"(default {DEFAULT_THRESHOLD_PCT:g})",
        )
        parser.add_argument(
            "--fail-on",
            dest="fail_on",
            action="append",
            default=[],
            metavar="COUNTER",
            help="also fail (exit 1) when this exact counter increased, whatever the timing "
            "noise: NAME (any increase), NAME>PCT%% or NAME>N (beyond that much); repeatable "
            "or a comma list. Counters: " + ", ".join(COUNTER_NAMES),
        )
        add_no_progress(parser)
        add_jobs(parser)

    def run(self, args: argparse.Namespace) -> int:
        """Compare and write the comparison; the exit status is the verdict."""
        from torchdiag.diff import diff_run_sets
        from torchdiag.diff.counters import parse_counter_rules
        from torchdiag.view.run_view import RunView

        try:
            rules = parse_counter_rules(args.fail_on)
        except ValueError as err:
            raise UsageError(str(err)) from None
        base_inputs, head_inputs = _diff_sides(args)
        wanted = not args.no_progress and not (args.format == "json" and args.output == "-")
        sources = [check_input(text) for text in (*base_inputs, *head_inputs)]
        check_output(args.output, sources)
        sides: list[list[tuple[str, RunRecord]]] = [[], []]
        for side, inputs in zip(sides, (base_inputs, head_inputs), strict=True):
            for text in inputs:
                side += load_runs(Path(text), wanted_progress=wanted, jobs=args.jobs)
        base, head = sides
        result = diff_run_sets(
            [RunView(record) for _, record in base],
            [RunView(record) for _, record in head],
            threshold_pct=args.threshold,
            base_labels=[label for label, _ in base],
            head_labels=[label for label, _ in head],
            fail_on=rules,
        )
        rendered = output_format(args.format).renderer().render_diff(result, RenderOptions())
        write_output(rendered, args.output)
        say_written("Comparison", args.output)
        return EXIT_REGRESSION if result.failed else EXIT_OK


def _diff_sides(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The inputs of each side: BASE HEAD, or --base ... --head ... (never a mix)."""
    positional = [a for a in (args.base, args.head) if a is not None]
    flagged = args.base_runs is not None or args.head_runs is not None
    if positional and flagged:
        raise UsageError("give BASE HEAD, or --base RUN... --head RUN..., not both")
    if flagged:
        if not args.base_runs or not args.head_runs:
            raise UsageError("--base and --head are both required, each with one or more runs")
        return list(args.base_runs), list(args.head_runs)
    if len(positional) != 2:
        raise UsageError("two inputs are required: BASE HEAD (or --base RUN... --head RUN...)")
    return [positional[0]], [positional[1]]

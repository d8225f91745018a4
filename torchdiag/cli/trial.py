"""``torchdiag try [--fix F ...] script.py [args...]``: rerun the script's first steps with each fix
and report what it really changed (:mod:`torchdiag.trials.runner` runs them).

``--fix auto`` (the default) tries the fixes behind the baseline's own findings. The records
are kept in the output folder, beside ``try.json`` and the baseline's HTML report with its
"Measured fixes" table.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from torchdiag.cli.args import UsageError, non_negative_int, positive_int
from torchdiag.cli.command import Command, valued_options
from torchdiag.cli.outputs import say_written, write_output
from torchdiag.cli.run import split_argv
from torchdiag.report.formats import format_names, output_format
from torchdiag.report.renderer import RenderOptions
from torchdiag.sanitize import terminal_safe

# The defaults of torchdiag.trials.runner, repeated here so that `torchdiag --help` does not
# import the rules and the comparison (tests/test_try.py keeps them equal).
DEFAULT_STEPS = 30
DEFAULT_REPEAT = 3
AUTO = "auto"

EXIT_OK = 0


class TryCommand(Command):
    """``torchdiag try [--fix F ...] SCRIPT [ARGS ...]``."""

    name = "try"
    help = "rerun a script's first steps with each fix and measure the real change"
    usage = "torchdiag try [options] (SCRIPT | -m MODULE) [ARGS ...]"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from torchdiag.capture.fixes import FIX_NAMES

        parser.add_argument(
            "--fix",
            action="append",
            default=[],
            metavar="FIX",
            help="a fix to measure (repeatable; default: auto, the baseline's findings): "
            + FIX_NAMES,
        )
        parser.add_argument(
            "--steps", type=positive_int, default=30, help="steps per run (default 30)"
        )
        parser.add_argument(
            "--skip-first",
            type=non_negative_int,
            default=5,
            help="steps before the profiler window (default 5)",
        )
        parser.add_argument(
            "--profile-steps",
            type=non_negative_int,
            default=5,
            help="profiled steps per run (default 5; the baseline's findings need them)",
        )
        parser.add_argument(
            "--output", help="folder for the records and reports (default: torchdiag_try/<time>/)"
        )
        parser.add_argument(
            "--format",
            choices=format_names("try"),
            default="text",
            help="what is printed: text (default), json (torchdiag.try/1) or md",
        )
        parser.add_argument(
            "-o", dest="result", default="-", help="where the result goes ('-': stdout, default)"
        )
        parser.add_argument(
            "--repeat",
            type=positive_int,
            default=DEFAULT_REPEAT,
            help=f"runs of the baseline and of each fix, interleaved (default {DEFAULT_REPEAT}): "
            "runs of the same code differ, and only several show by how much",
        )
        parser.add_argument(
            "--timeout", type=positive_int, default=3600, help="seconds each run may take (3600)"
        )

    def main(self, argv: Sequence[str]) -> int:
        """``torchdiag try ARGV``: the script and its arguments are split off before parsing;
        returns the exit status."""
        from torchdiag.capture.fixes import parse_fix
        from torchdiag.cli.report import write_report
        from torchdiag.trials.runner import (
            TrialError,
            TrialSettings,
            baseline_record_path,
            try_fixes,
        )

        parser = self.parser()
        own, target = split_argv(argv, valued=valued_options(parser))
        args = parser.parse_args(own)
        for spec in args.fix:
            if spec != AUTO:
                try:
                    parse_fix(spec)
                except ValueError as err:
                    raise UsageError(str(err)) from None
        if target.script is None and target.module is None:
            raise UsageError("a script or -m MODULE is required (see 'torchdiag try --help')")
        if target.script is not None and not Path(target.script).is_file():
            raise UsageError(f"no such script: {target.script}")
        settings = TrialSettings(
            steps=args.steps,
            skip_first=args.skip_first,
            profile_steps=args.profile_steps,
            repeat=args.repeat,
            timeout_s=args.timeout,
        )
        folder = Path(args.output) if args.output else None
        try:
            result = try_fixes(
                target.script,
                target.args,
                module=target.module,
                fixes=args.fix or [AUTO],
                settings=settings,
                output=folder,
                on_run=_say_run,
            )
        except (ValueError, TrialError) as err:
            raise UsageError(str(err)) from None
        folder = Path(result.baseline.records[0]).parent.parent
        write_report(
            baseline_record_path(folder), "html", str(folder / "report.html"), progress=False
        )
        rendered = output_format(args.format).renderer().render_try(result, RenderOptions())
        write_output(rendered, args.result)
        say_written("Try result", str(folder / "try.json"))
        return EXIT_OK


def _say_run(name: str, round_: int, rounds: int) -> None:
    print(terminal_safe(f"torchdiag try: {name}, run {round_} of {rounds}"), file=sys.stderr)

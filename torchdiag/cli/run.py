"""``torchdiag run [options] script.py [args...]``: profile an unmodified script, then report.

The script runs in this process, as ``python script.py args...`` would run it: ``__name__`` is
``"__main__"``, ``sys.argv`` is the script's own, the script's folder leads ``sys.path``, and
``-m module`` works like python's. It runs inside ``torchdiag.profile()`` (whose options are this
command's flags); PyTorch Lightning and Hugging Face trainers it builds get torchdiag's callback,
so their steps come from the trainer. Afterwards the terminal summary is printed and the HTML
report written beside the record. The script's exit status is this command's; an exception it
raises is printed as python prints it (the launcher's own frames left out) and exits with 1.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from torchdiag.cli.args import (
    UsageError,
    non_negative_int,
    non_negative_seconds,
    positive_int,
    positive_seconds,
)
from torchdiag.cli.command import Command, valued_options

EXIT_EXCEPTION = 1
# Python exits with 128 + SIGINT after an uncaught KeyboardInterrupt.
_EXIT_FOR: dict[type[BaseException], int] = {KeyboardInterrupt: 130}


@dataclass
class Target:
    """What to run: a script file, or a module (``-m``), with its own arguments."""

    script: str | None
    module: str | None
    args: list[str]

    @property
    def label(self) -> str:
        """The script's file name or the module's name (the run's default name)."""
        return Path(self.script).name if self.script else str(self.module)


def split_argv(argv: Sequence[str], *, valued: frozenset[str]) -> tuple[list[str], Target]:
    """This command's own options, and the target with its arguments.

    Like python's own command line: the first argument that is not one of our options is the
    script, ``-m MODULE`` names a module, ``--`` ends our options; the rest is the target's.
    ``valued`` are the command's options that take a value
    (:func:`~torchdiag.cli.command.valued_options`).
    """
    argv = list(argv)
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            if i + 1 >= len(argv):
                break
            return argv[:i], Target(argv[i + 1], None, argv[i + 2 :])
        if arg == "-m":
            if i + 1 >= len(argv):
                raise UsageError("-m needs a module name (see 'torchdiag run --help')")
            return argv[:i], Target(None, argv[i + 1], argv[i + 2 :])
        if arg.startswith("-m") and len(arg) > 2:  # python's "-mpkg.mod"
            return argv[:i], Target(None, arg[2:], argv[i + 1 :])
        if not arg.startswith("-") or arg == "-":
            return argv[:i], Target(arg, None, argv[i + 1 :])
        i += 2 if arg in valued else 1
    return argv, Target(None, None, [])


class RunCommand(Command):
    """``torchdiag run [options] SCRIPT [ARGS ...]``."""

    name = "run"
    help = "run a training script under torchdiag (no code change), then report"
    usage = "torchdiag run [options] (SCRIPT | -m MODULE) [ARGS ...]"
    description = (
        "Run SCRIPT (or -m MODULE) with its arguments under torchdiag.profile(), then print "
        "the summary and write the HTML report beside the record. Exit status: the script's."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        # Imported here: every command's module is imported for dispatch, and only run/try need it.
        from torchdiag.capture.checkpoint import DEFAULT_INTERVAL_S as DEFAULT_CHECKPOINT_INTERVAL_S
        from torchdiag.capture.fixes import FIX_NAMES

        parser.add_argument(
            "-o",
            "--output",
            help="path of the record (default: torchdiag_runs/<time>-<pid>/run.json)",
        )
        parser.add_argument(
            "--profile-steps",
            type=non_negative_int,
            default=5,
            help="steps recorded by torch.profiler (default 5; 0 monitors only)",
        )
        parser.add_argument(
            "--skip-first",
            type=non_negative_int,
            default=5,
            help="steps run before the profiler window (default 5)",
        )
        parser.add_argument(
            "--sample-interval",
            type=positive_seconds,
            default=0.5,
            help="seconds between background samples (default 0.5)",
        )
        parser.add_argument(
            "--checkpoint-interval",
            type=non_negative_seconds,
            default=DEFAULT_CHECKPOINT_INTERVAL_S,
            metavar="S",
            help="rewrite the record every S seconds while the script runs, so that a kill -9 "
            "leaves the steps so far (default 60; 0 turns it off)",
        )
        parser.add_argument("--trace", action="store_true", help="keep the raw profiler trace")
        parser.add_argument("--with-stack", action="store_true", help="record Python stacks")
        parser.add_argument(
            "--name", help="name of the run in reports (default: the script's name)"
        )
        parser.add_argument(
            "--no-redact",
            action="store_true",
            help="record the host name and command line as they are (default: redacted)",
        )
        parser.add_argument(
            "--fix",
            action="append",
            default=[],
            metavar="FIX",
            help="apply a fix from outside the script (repeatable): " + FIX_NAMES,
        )
        parser.add_argument(
            "--max-steps", type=positive_int, help="stop the script after this many steps"
        )
        parser.add_argument(
            "--record-loss",
            action="store_true",
            help="keep the scalar losses backward() is called on (record.losses)",
        )
        parser.add_argument(
            "--record-outputs",
            action="store_true",
            help="keep digests of the model's first outputs (record.outputs)",
        )
        parser.add_argument(
            "--seed",
            type=int,
            help="seed random, torch and numpy before the script starts (same data every run)",
        )
        parser.add_argument(
            "--live",
            action="store_true",
            help="a live panel while the script runs (rank 0; summary lines when stdout is "
            "not a terminal)",
        )
        parser.add_argument(
            "--live-log-interval",
            type=positive_seconds,
            default=30.0,
            metavar="S",
            help="with --live where stdout is not a terminal: seconds between summary lines "
            "(default 30)",
        )
        parser.add_argument(
            "--no-report", action="store_true", help="write the record only, no summary or HTML"
        )

    def main(self, argv: Sequence[str]) -> int:
        """``torchdiag run ARGV``: the script and its arguments are split off before parsing
        (:func:`split_argv`); returns the script's exit status."""
        parser = self.parser()
        own, target = split_argv(argv, valued=valued_options(parser))
        args = parser.parse_args(own)
        if target.script is None and target.module is None:
            raise UsageError("a script or -m MODULE is required (see 'torchdiag run --help')")
        if target.script is not None and not Path(target.script).is_file():
            raise UsageError(f"no such script: {target.script}")
        from torchdiag.capture.fixes import parse_fix

        for spec in args.fix:
            try:
                parse_fix(spec)
            except ValueError as err:
                raise UsageError(str(err)) from None
        outcome = _profiled(target, args)
        if outcome.record_path is not None and not args.no_report and _is_reporting_rank():
            _report(outcome.record_path)
        if outcome.error is not None:
            _print_user_exception(outcome.error)
        return outcome.exit_status


@dataclass
class Outcome:
    """How the script ended: its exit status, the exception it raised, where the record went."""

    exit_status: int
    error: BaseException | None
    record_path: Path | None


def _profiled(target: Target, args: argparse.Namespace) -> Outcome:
    from torchdiag.capture.session import profile

    session = profile(
        args.output,
        profile_steps=args.profile_steps,
        skip_first=args.skip_first,
        sample_interval=args.sample_interval,
        checkpoint_interval=args.checkpoint_interval,
        trace=args.trace,
        with_stack=args.with_stack,
        name=args.name or target.label,
        redact=not args.no_redact,
        max_steps=args.max_steps,
        fixes=args.fix,
        record_loss=args.record_loss,
        record_outputs=args.record_outputs,
        live=args.live,
        live_log_interval=args.live_log_interval,
        shared=True,  # the script's own torchdiag.profile(), if any, joins this run
    )
    status, error, run = 0, None, None
    with _as_python_would(target):
        try:
            with session as run, _trainer_callbacks():
                if args.seed is not None:
                    from torchdiag.capture.seeding import seed_everything

                    seed_everything(args.seed)
                try:
                    _execute(target)
                except SystemExit as stop:
                    status = _exit_status(stop.code)
                    if status:  # a script that ends with sys.exit(0) finished; others stopped
                        raise
        except SystemExit:
            pass  # its status is kept above; the record says the run was stopped
        except BaseException as raised:  # the user's: reported as python would, after the record
            status, error = _EXIT_FOR.get(type(raised), EXIT_EXCEPTION), raised
    path = run.path if run is not None else None
    return Outcome(status, error, path if path is not None and path.is_file() else None)


@contextmanager
def _trainer_callbacks() -> Iterator[None]:
    """Lightning and Hugging Face trainers the script builds mark their own steps on the run."""
    from torchdiag.integrations.auto import install

    undo = install()
    try:
        yield
    finally:
        undo()


def _execute(target: Target) -> None:
    if target.module is not None:
        runpy.run_module(target.module, run_name="__main__", alter_sys=True)
    else:
        assert target.script is not None
        runpy.run_path(target.script, run_name="__main__")


@contextmanager
def _as_python_would(target: Target) -> Iterator[None]:
    """``sys.argv`` and ``sys.path[0]`` as ``python SCRIPT ARGS`` / ``python -m MODULE ARGS``
    set them, restored afterwards."""
    saved_argv, saved_path0 = sys.argv[:], sys.path[0] if sys.path else None
    if target.script is not None:
        sys.argv = [target.script, *target.args]
        first = os.path.dirname(os.path.realpath(target.script))
    else:
        sys.argv = [str(target.module), *target.args]  # run_module replaces [0] with the file
        first = os.getcwd()
    if sys.path:
        sys.path[0] = first
    else:
        sys.path.insert(0, first)
    try:
        yield
    finally:
        sys.argv = saved_argv
        if saved_path0 is not None and sys.path:
            sys.path[0] = saved_path0


def _exit_status(code: object) -> int:
    """What python's exit status would be for ``sys.exit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)  # python prints a non-integer exit value and exits with 1
    return 1


def _is_reporting_rank() -> bool:
    """Only one process of a torch.distributed job prints the report: rank 0."""
    return os.environ.get("RANK", "0") == "0"


def _report(record_path: Path) -> None:
    from torchdiag.cli.report import report_beside

    try:
        report_beside(record_path)
    except Exception as err:  # the run is over and its record written: say so, do not hide it
        message = f"torchdiag: the report could not be written ({err}); record: {record_path}"
        print(message, file=sys.stderr)


def _print_user_exception(error: BaseException) -> None:
    """The traceback python would print: from the script's first frame on."""
    tb = error.__traceback__
    while tb is not None and _is_launcher(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    traceback.print_exception(type(error), error, tb, file=sys.stderr)


def _is_launcher(filename: str) -> bool:
    """This module's frames and runpy's (frozen in recent Pythons) are ours, not the script's."""
    if filename.startswith("<frozen runpy"):
        return True
    return os.path.realpath(filename) in (
        os.path.realpath(__file__),
        os.path.realpath(runpy.__file__),
    )

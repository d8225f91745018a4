"""The ``torchdiag`` command line: one module per subcommand, listed in
:mod:`~torchdiag.cli.commands`.

``torchdiag report INPUT`` reads a run record (``run.json``), a folder of rank records, or
torch.profiler trace(s) and writes a report (:mod:`~torchdiag.cli.report`). ``torchdiag diff BASE
HEAD`` compares two of them and exits 1 when HEAD is slower beyond a threshold with confidence
(:mod:`~torchdiag.cli.diff`). ``torchdiag run SCRIPT`` profiles an unmodified script and reports
on it (:mod:`~torchdiag.cli.run`); ``torchdiag try SCRIPT`` reruns it with fixes and measures
what each changed (:mod:`~torchdiag.cli.trial`); ``torchdiag watch PATH`` follows a running
job's record in a live panel (:mod:`~torchdiag.cli.watch`). Bad input or usage gives one line on
stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from torchdiag.cli.args import Parser, UsageError
from torchdiag.cli.commands import COMMANDS, command_named, command_names
from torchdiag.record import RecordError
from torchdiag.sanitize import terminal_safe

EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser, with every command's arguments (for ``--help`` and tests)."""
    parser = Parser(
        prog="torchdiag",
        description="Diagnose PyTorch training runs: reports from run records and profiler traces.",
    )
    from torchdiag._version import __version__

    parser.add_argument("--version", action="version", version=f"torchdiag {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for command in COMMANDS:
        sub = subparsers.add_parser(
            command.name,
            help=command.help,
            description=command.description,
            usage=command.usage,
        )
        command.add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        command = command_named(argv[0]) if argv else None
        if command is not None:
            return command.main(argv[1:])
        build_parser().parse_args(argv)  # --help, --version, or an unknown command's error
        raise UsageError(f"a command is required: {command_names()} (see 'torchdiag --help')")
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
    print(terminal_safe(f"torchdiag: error: {message}"), file=sys.stderr)


def _one_line(err: BaseException) -> str:
    if isinstance(err, OSError) and err.filename:
        return f"{err.strerror or type(err).__name__}: {err.filename}"
    text = " ".join(str(err).split())
    return text or type(err).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The ``torchdiag`` subcommands, listed once: ``--help``, dispatch and usage errors read this.

Adding a command is one module with a :class:`~torchdiag.cli.command.Command` and one line here.
"""

from __future__ import annotations

from torchdiag.cli.command import Command
from torchdiag.cli.diff import DiffCommand
from torchdiag.cli.report import ReportCommand
from torchdiag.cli.run import RunCommand
from torchdiag.cli.trial import TryCommand
from torchdiag.cli.watch import WatchCommand

COMMANDS: tuple[Command, ...] = (
    ReportCommand(),
    DiffCommand(),
    RunCommand(),
    TryCommand(),
    WatchCommand(),
)


def command_named(name: str) -> Command | None:
    """The command called ``name``, or ``None``."""
    return next((c for c in COMMANDS if c.name == name), None)


def command_names() -> str:
    """The commands' names as a sentence lists them: "report, diff, run, try or watch"."""
    names = [c.name for c in COMMANDS]
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]

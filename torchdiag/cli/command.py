"""What every ``torchdiag`` subcommand is: a name, its help, its arguments, and a ``main``.

One module per subcommand defines one :class:`Command`; :mod:`torchdiag.cli.commands` lists them,
and the top-level ``--help``, dispatch and usage errors all come from that list.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import ClassVar

from torchdiag.cli.args import Parser


class Command:
    """A subcommand: ``torchdiag NAME ARGV``.

    Subclasses set :attr:`name`, :attr:`help` (one line in ``torchdiag --help``) and, where it
    helps, :attr:`description` and :attr:`usage`; they add their arguments in
    :meth:`add_arguments` and act in :meth:`run`. A command whose arguments end in a script's own
    (``run``, ``try``) overrides :meth:`main` to split them off first.
    """

    name: ClassVar[str]
    help: ClassVar[str]
    description: ClassVar[str | None] = None
    usage: ClassVar[str | None] = None

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the command's arguments to ``parser``."""

    def run(self, args: argparse.Namespace) -> int:
        """Act on the parsed arguments; returns the exit status."""
        raise NotImplementedError

    def parser(self) -> Parser:
        """The command's own parser, ``torchdiag NAME`` in its messages."""
        parser = Parser(
            prog=f"torchdiag {self.name}", usage=self.usage, description=self.description
        )
        self.add_arguments(parser)
        return parser

    def main(self, argv: Sequence[str]) -> int:
        """``torchdiag NAME ARGV``; returns the exit status."""
        return self.run(self.parser().parse_args(list(argv)))


def valued_options(parser: argparse.ArgumentParser) -> frozenset[str]:
    """The options of ``parser`` that take a value (the others are flags)."""
    return frozenset(
        option
        for action in parser._actions
        if action.nargs != 0
        for option in action.option_strings
    )

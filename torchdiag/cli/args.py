"""Command-line plumbing shared by the subcommands: usage errors, argument types, ``--jobs``."""

from __future__ import annotations

import argparse
import math
from typing import NoReturn


class UsageError(Exception):
    """A problem with the command line or its input, reported in one line with exit status 2."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are :class:`UsageError` (one line, exit status 2)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def add_jobs(parser: argparse.ArgumentParser) -> None:
    """The ``--jobs N`` option of the commands that read folders of traces."""
    parser.add_argument(
        "--jobs",
        metavar="N",
        type=positive_int,
        default=None,
        help="processes reading a folder of traces (default: the machine's cores)",
    )


def add_no_progress(parser: argparse.ArgumentParser) -> None:
    """The ``--no-progress`` option of the commands that read traces."""
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar on stderr while reading a large trace",
    )


def positive_int(text: str) -> int:
    """``argparse`` type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """``argparse`` type: a whole number of at least 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text!r}")
    return value


def percentage(text: str) -> float:
    """``argparse`` type: a finite, non-negative percentage."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative percentage: {text!r}")
    return value


def positive_seconds(text: str) -> float:
    """``argparse`` type: a finite number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0: {text!r}")
    return value

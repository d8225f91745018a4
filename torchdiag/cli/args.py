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


def _number(
    text: str, convert: type[int] | type[float], least: float, above: bool, what: str
) -> float:
    """``text`` as a finite number of at least (or above) ``least``; argparse's error otherwise."""
    try:
        value = convert(text)
    except ValueError:
        kind = "whole number" if convert is int else "number"
        raise argparse.ArgumentTypeError(f"not a {kind}: {text!r}") from None
    if not math.isfinite(value) or value < least or (above and value == least):
        raise argparse.ArgumentTypeError(f"must be {what}: {text!r}")
    return value


def positive_int(text: str) -> int:
    """``argparse`` type: a whole number of at least 1."""
    return int(_number(text, int, 1, False, "1 or more"))


def non_negative_int(text: str) -> int:
    """``argparse`` type: a whole number of at least 0."""
    return int(_number(text, int, 0, False, "0 or more"))


def percentage(text: str) -> float:
    """``argparse`` type: a finite, non-negative percentage."""
    return float(_number(text, float, 0.0, False, "a non-negative percentage"))


def positive_seconds(text: str) -> float:
    """``argparse`` type: a finite number of seconds above 0."""
    return float(_number(text, float, 0.0, True, "a number of seconds above 0"))


def non_negative_seconds(text: str) -> float:
    """``argparse`` type: a finite number of seconds, 0 or more."""
    return float(_number(text, float, 0.0, False, "a number of seconds, 0 or more"))

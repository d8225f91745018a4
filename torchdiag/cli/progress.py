"""A transient progress bar on stderr while a large trace is read."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

# A read shorter than this shows no bar at all: a bar that flashes up and vanishes is noise.
PROGRESS_DELAY_S = 1.0


class ReadProgress:
    """A transient progress bar on a terminal for trace reads slower than ``delay_s``.

    Called as the reader's ``progress`` callback. Nothing is drawn (and rich's progress module is
    not even imported) until a call comes ``delay_s`` after construction; from then on the bar
    shows bytes read out of the total, or a running count when the total is unknown. ``close``
    removes it (``transient``), so the report printed afterwards starts on a clean line.
    """

    def __init__(self, stream: TextIO, *, delay_s: float = PROGRESS_DELAY_S) -> None:
        self._stream = stream
        self._deadline = time.monotonic() + delay_s
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def __call__(self, done: int, total: int | None) -> None:
        if self._bar is None:
            if time.monotonic() < self._deadline:
                return
            self._show(done, total)
            return
        assert self._task is not None
        self._bar.update(self._task, completed=done, total=total)

    def _show(self, done: int, total: int | None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._bar = Progress(
            TextColumn("reading trace"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(file=self._stream),
            transient=True,
            # The report is written to stdout only after the bar is gone; leave both streams be.
            redirect_stdout=False,
            redirect_stderr=False,
        )
        # Added before start, so the first frame drawn already shows how far the read is.
        self._task = self._bar.add_task("read", total=total, completed=done)
        self._bar.start()

    @property
    def shown(self) -> bool:
        """Whether the bar has appeared."""
        return self._bar is not None

    def close(self) -> None:
        """Remove the bar, if it was shown."""
        if self._bar is not None:
            self._bar.stop()


@contextmanager
def read_progress(wanted: bool) -> Iterator[ReadProgress | None]:
    """A :class:`ReadProgress` on stderr when ``wanted`` and stderr is a terminal, else None."""
    stream = sys.stderr
    if not wanted or stream is None or not stream.isatty():
        yield None
        return
    bar = ReadProgress(stream, delay_s=PROGRESS_DELAY_S)
    try:
        yield bar
    finally:
        # Also on errors: the one-line error message must not land inside a live bar.
        bar.close()

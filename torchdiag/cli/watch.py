"""``torchdiag watch PATH``: the live panel of a running job, from outside its process.

A job run with ``torchdiag run --live`` (or any ``torchdiag.profile()``) rewrites its record
every checkpoint interval while it runs (``status.state == "running"``). ``watch`` follows that
file, or a run folder of rank records (``run.rank<R>.json`` of a torchrun job: the rank table
live), from another terminal or a login node on a shared filesystem: it polls the files' mtimes,
redraws the panel of :mod:`torchdiag.report.live_panel`, and exits 0 once the run has ended (or
its process is gone: killed without a word, its record still says running).

Exit status: 0 when the run ended (or ``--once``); 1 when ``--timeout`` passed first; 2 on bad
input (one line on stderr); 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from torchdiag.cli.args import UsageError, positive_seconds
from torchdiag.cli.command import Command
from torchdiag.cli.inputs import check_input, load_rank_records, records_in
from torchdiag.record import RecordError, RunRecord, load_record

EXIT_ENDED = 0
EXIT_TIMEOUT = 1
EXIT_INTERRUPTED = 130
# Columns of ``--once`` written to a file or a pipe (unless COLUMNS is set).
ONCE_WIDTH = 120

# A file's identity between polls: its name, its modification time (ns) and its size.
Signature = tuple[tuple[str, int, int], ...]


class WatchCommand(Command):
    """``torchdiag watch PATH``."""

    name = "watch"
    help = "follow a running job's record (a file or a run folder of ranks) in a live panel"
    description = (
        "Show the live panel of a running job from its checkpointed record: run.json, or a run "
        "folder of rank records (run.rank<R>.json). Redraws as the files change and exits 0 when "
        "the run has ended; 1 when --timeout passes first. Where stdout is not a terminal, one "
        "summary line every --log-interval seconds instead."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("path", help="the run's record (run.json) or its folder")
        parser.add_argument(
            "--interval",
            type=positive_seconds,
            default=1.0,
            metavar="S",
            help="seconds between looks at the files (default 1)",
        )
        parser.add_argument(
            "--log-interval",
            type=positive_seconds,
            default=30.0,
            metavar="S",
            help="seconds between summary lines where stdout is not a terminal (default 30)",
        )
        parser.add_argument(
            "--timeout",
            type=positive_seconds,
            metavar="S",
            help="give up after this many seconds if the run has not ended (exit 1)",
        )
        parser.add_argument(
            "--once", action="store_true", help="show the panel once and exit (no following)"
        )

    def run(self, args: argparse.Namespace) -> int:
        """Follow the record(s) at ``args.path`` until the run ends; returns the exit status."""
        from torchdiag.report.live_display import stream_display

        follower = RecordFollower(check_input(args.path))
        record = follower.poll()  # bad input fails here, before anything is drawn
        if args.once:
            return _show_once(follower, record)
        display = stream_display(sys.stdout, args.log_interval)
        deadline = None if args.timeout is None else time.monotonic() + args.timeout
        waiting_said = False
        try:
            while True:
                if record is None and not waiting_said:
                    print(
                        f"torchdiag watch: waiting for a run record in {follower.path}",
                        file=sys.stderr,
                    )
                    waiting_said = True
                if record is not None:
                    if run_ended(follower.records):
                        display.close(record, updated_age_s=follower.age_s())
                        return EXIT_ENDED
                    display.update(record, updated_age_s=follower.age_s())
                if deadline is not None and time.monotonic() >= deadline:
                    display.close(record, updated_age_s=follower.age_s())
                    print(
                        f"torchdiag watch: --timeout {args.timeout:g} s passed; the run has not "
                        "ended",
                        file=sys.stderr,
                    )
                    return EXIT_TIMEOUT
                time.sleep(args.interval)
                record = follower.poll() or record
        except KeyboardInterrupt:
            display.close(None)
            return EXIT_INTERRUPTED


def run_ended(records: list[RunRecord]) -> bool:
    """Whether the run is over: every record read (each rank's, in a run folder) says its block
    ended, or its writing process is gone (killed without a word: the record still says
    running); judged by :attr:`~torchdiag.view.run_view.RunView.run_end`, as every report
    judges it."""
    from torchdiag.view.run_view import RunView

    def over(record: RunRecord) -> bool:
        end = RunView(record).run_end
        return end.ended or end.process == "gone"

    return bool(records) and all(over(r) for r in records)


@dataclass
class RecordFollower:
    """Reads the record at ``path`` (a file, or the records of a run folder merged over their
    ranks) again whenever its files change."""

    path: Path
    # The records last read, one per file (each rank's, in a run folder).
    records: list[RunRecord] = field(default_factory=list, init=False)
    _signature: Signature | None = field(default=None, init=False)
    _mtime_ns: int | None = field(default=None, init=False)

    def poll(self) -> RunRecord | None:
        """The record, when the files changed since the last call (or on the first call); None
        when nothing changed or a folder holds no record yet.

        The first read of a bad file raises (a usage error: exit 2); a later one that fails
        (the writer replacing the file on a filesystem without atomic renames) is retried on
        the next poll.
        """
        signature = self._files()
        if signature == self._signature:
            return None
        first = self._signature is None
        try:
            record = self._read()
        except (OSError, RecordError):
            if first:
                raise
            return None
        self._signature = signature
        self._mtime_ns = max((m for _, m, _ in signature), default=None)
        return record

    def age_s(self) -> float | None:
        """Seconds since the newest file was written (None before one was read)."""
        if self._mtime_ns is None:
            return None
        return max(0.0, time.time() - self._mtime_ns / 1e9)

    def _files(self) -> Signature:
        paths = [self.path] if self.path.is_file() else sorted(self.path.glob("*.json"))
        found = []
        for p in paths:
            try:
                st = p.stat()
            except OSError:
                continue  # replaced between the listing and the stat: the next poll sees it
            found.append((p.name, st.st_mtime_ns, st.st_size))
        return tuple(found)

    def _read(self) -> RunRecord | None:
        if self.path.is_file():
            self.records = [load_record(self.path)]
            return self.records[0]
        self.records = [record for _, record in records_in(self.path, unreadable=[])]
        if len(self.records) == 1:
            return self.records[0]
        return load_rank_records(self.path) if self.records else None


def _show_once(follower: RecordFollower, record: RunRecord | None) -> int:
    """``--once``: the panel of the record as it stands."""
    if record is None:
        raise UsageError(f"no run record in {follower.path}")
    from rich.console import Console

    from torchdiag.analyze.registry import analyze
    from torchdiag.report.live_panel import live_panel, live_views, panel_text

    views = live_views(record)
    analysis = analyze(views.recent) if record.steps.count else None
    panel = live_panel(views, analysis, updated_age_s=follower.age_s())
    console = Console(file=sys.stdout)
    if console.is_terminal:
        console.print(panel)
    else:  # a file or a pipe: plain text, wide enough for the rank table unless COLUMNS says
        width = console.width if os.environ.get("COLUMNS") else ONCE_WIDTH
        sys.stdout.write(panel_text(panel, width=width))
    return EXIT_ENDED

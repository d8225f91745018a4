"""The ``torchdiag`` command line.

``torchdiag report INPUT`` reads a run record (``run.json``) or torch.profiler trace(s) and writes
a report. ``torchdiag diff BASE HEAD`` (or ``--base A1 A2 A3 --head B1 B2 B3``, or two folders of
run records) compares runs and exits 1 when HEAD is slower beyond a threshold with confidence.
Bad input or usage gives one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TextIO

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


from torchdiag.files import atomic_write
from torchdiag.record import RecordError, RunRecord, decode_record, is_record
from torchdiag.sanitize import terminal_safe

EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_USAGE = 2

FORMATS = ("html", "md", "json", "text")
_SUFFIX = {"html": ".html", "md": ".md", "json": ".findings.json", "text": ".txt"}
# A run record is small (aggregates only); anything larger is certainly a trace.
_MAX_RECORD_BYTES = 64 * 1024 * 1024
# A read shorter than this shows no bar at all: a bar that flashes up and vanishes is noise.
PROGRESS_DELAY_S = 1.0

ProgressCallback = Callable[[int, "int | None"], None]
"""What the trace reader calls as it goes: (bytes done, total bytes or None when unknown)."""


class UsageError(Exception):
    """A problem with the command line or its input, reported in one line with exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = _Parser(
        prog="torchdiag",
        description="Diagnose PyTorch training runs: reports from run records and profiler traces.",
    )
    from torchdiag import __version__

    parser.add_argument("--version", action="version", version=f"torchdiag {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    report = commands.add_parser(
        "report",
        help="write a report for a run.json or torch.profiler trace(s)",
        description=(
            "Report on a run record or torch.profiler trace (.json, .json.gz, or a directory of "
            "them). Without --format: the HTML report is written beside the input and a summary "
            "is printed."
        ),
    )
    report.add_argument("input", help="run.json, a trace file, or a directory of traces")
    report.add_argument(
        "-o", "--output", help="output file; '-' for stdout (default: beside the input for html)"
    )
    report.add_argument("--format", choices=FORMATS, help="html, md, json or text")
    report.add_argument(
        "--cdn", action="store_true", help="HTML: load plotly.js from its CDN instead of inlining"
    )
    report.add_argument(
        "--html-url",
        metavar="URL",
        help="md: link to the HTML report at this http(s) URL (e.g. a CI artifact)",
    )
    report.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar on stderr while reading a large trace",
    )
    _add_jobs(report)
    _add_diff_parser(commands)
    return parser


def _add_diff_parser(commands: argparse._SubParsersAction) -> None:
    from torchdiag.diff import DEFAULT_THRESHOLD_PCT

    diff = commands.add_parser(
        "diff",
        help="compare runs (run.json or traces): step time, breakdown, findings, ops",
        usage="%(prog)s (BASE HEAD | --base RUN [RUN ...] --head RUN [RUN ...]) [options]",
        description=(
            "Compare HEAD against BASE. Each side is one run (a run.json, a trace file or a "
            "directory of traces or rank records) or several: --base/--head with several inputs, "
            "or a directory of run records of separate single-process runs. With several runs a "
            "side, each run counts once by its step time and the interval is a t-interval over "
            "runs, so the variation between runs is in it; with one run a side it is a bootstrap "
            "over that run's steps, which is not. Exit status: 1 when HEAD is slower beyond "
            "--threshold with confidence (the lower bound of the 95% interval of the HEAD/BASE "
            "step-time ratio is above 1 + PCT/100), 0 otherwise, 2 on bad input or usage."
        ),
    )
    diff.add_argument("base", nargs="?", help="the baseline: a run, or a directory of runs")
    diff.add_argument("head", nargs="?", help="the runs to judge: a run, or a directory of runs")
    diff.add_argument(
        "--base",
        dest="base_runs",
        nargs="+",
        metavar="RUN",
        help="the baseline's runs (instead of BASE), e.g. three repeats of the same job",
    )
    diff.add_argument(
        "--head",
        dest="head_runs",
        nargs="+",
        metavar="RUN",
        help="the runs to judge (instead of HEAD)",
    )
    diff.add_argument("-o", "--output", default="-", help="output file; '-' for stdout (default)")
    diff.add_argument(
        "--format", choices=("text", "md", "json"), default="text", help="text (default), md, json"
    )
    diff.add_argument(
        "--threshold",
        metavar="PCT",
        type=_percentage,
        default=DEFAULT_THRESHOLD_PCT,
        help=f"slowdown in percent that fails the comparison (default {DEFAULT_THRESHOLD_PCT:g})",
    )
    diff.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar on stderr while reading a large trace",
    )
    _add_jobs(diff)


def _add_jobs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--jobs",
        metavar="N",
        type=_positive_int,
        default=None,
        help="processes reading a folder of traces (default: the machine's cores)",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {text!r}")
    return value


def _percentage(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative percentage: {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        if args.command == "report":
            return _report(args)
        if args.command == "diff":
            return _diff(args)
        raise UsageError("a command is required: report or diff (see 'torchdiag --help')")
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


def check_input(text: str) -> Path:
    """The input path, if it names a regular file or a directory; raises :class:`UsageError`.

    Refused up front: an empty path (it would mean the current directory), anything that is not
    a regular file or directory (a FIFO or a device would block the read forever), a symlink
    loop (said as such, not as "no such file").
    """
    if not text.strip():
        raise UsageError("an input path is required (an empty one would read the current folder)")
    path = Path(text)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise UsageError(f"no such file or directory: {path}") from None
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror or type(err).__name__}") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise UsageError(f"not a file or directory (a FIFO, socket or device?): {path}")
    return path


def load_input(
    path: Path, *, progress: ProgressCallback | None = None, jobs: int | None = None
) -> RunRecord:
    """A record from ``run.json``, a folder of rank records, or one built from trace file(s);
    raises on bad input.

    ``progress`` is handed to the trace reader (see :class:`ReadProgress`); ``jobs`` bounds the
    processes that read a folder of traces.
    """
    path = check_input(str(path))
    if path.is_dir():
        merged = load_rank_records(path)
        if merged is not None:
            return merged
    if path.is_file() and not path.name.endswith(".gz"):
        size = path.stat().st_size
        if size <= _MAX_RECORD_BYTES:
            data = path.read_bytes()
            if is_record(data):
                return decode_record(data)
    from torchdiag.traces.load import record_from_traces

    return record_from_traces(path, progress=progress, jobs=jobs)


def load_rank_records(folder: Path) -> RunRecord | None:
    """One record over the run records in ``folder`` (``run.rank<R>.json`` of a torchrun job, or
    any records), or None when it holds none. A rank whose record is missing or unreadable is
    listed as missing; the others are reported."""
    from torchdiag.record import CollectorStatus
    from torchdiag.view.ranks import merge_rank_records

    records: list[RunRecord] = []
    unreadable: list[str] = []
    for f in sorted(folder.glob("*.json")):
        try:
            # torch.profiler's own traces are never records: not read twice.
            if f.name.endswith(".pt.trace.json") or not f.is_file():
                continue
            if f.stat().st_size > _MAX_RECORD_BYTES:
                continue
            data = f.read_bytes()
            # The substring test is a cheap filter for the traces that share the folder.
            if b"torchdiag.run/" in data and is_record(data):
                records.append(decode_record(data))
        except (OSError, RecordError):
            unreadable.append(f.name)
    if not records:
        return None
    merged = merge_rank_records(records)
    # Each rank's own findings, from its own record (the merged one keeps only its figures).
    own = {r.rank: _serious_findings(r) for r in records}
    for figures in merged.ranks:
        figures.findings = own.get(figures.rank, [])
    if unreadable:
        merged.collectors["ranks"] = CollectorStatus(
            available=False, reason="unreadable records, skipped: " + ", ".join(unreadable)
        )
    return merged


def _serious_findings(record: RunRecord) -> list[str]:
    """Finding ids at warning or above, the critical ones marked, most valuable first."""
    from torchdiag.analyze.registry import analyze

    return [
        f"{f.id} (critical)" if f.severity == "critical" else f.id
        for f in analyze(record).findings
        if f.severity in ("critical", "warning")
    ]


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
def _read_progress(wanted: bool) -> Iterator[ReadProgress | None]:
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


def _report(args: argparse.Namespace) -> int:
    from torchdiag.analyze.registry import analyze

    source = check_input(args.input)
    fmt = args.format
    if args.html_url is not None:
        _check_url(args.html_url)
    summary_too = fmt is None and args.output is None
    fmt = fmt or "html"
    output = args.output
    if output is None:
        output = str(_beside(source, fmt)) if fmt == "html" else "-"
    _check_output(output, [source])
    # JSON on stdout is for pipelines (`| jq`): keep the terminal quiet there too.
    wanted = not args.no_progress and not (fmt == "json" and output == "-")
    with _read_progress(wanted) as progress:
        record = load_input(source, progress=progress, jobs=args.jobs)
    analysis = analyze(record)
    rendered = _render(fmt, record, analysis, cdn=args.cdn, html_url=args.html_url)
    _write(rendered, output)
    if summary_too:
        sys.stdout.write(terminal_safe(_render("text", record, analysis)))
        print(terminal_safe(f"HTML report: {output}"))
    return EXIT_OK


def _diff(args: argparse.Namespace) -> int:
    from torchdiag.diff import diff_run_sets
    from torchdiag.report.diff_render import render_diff

    base_inputs, head_inputs = _diff_sides(args)
    wanted = not args.no_progress and not (args.format == "json" and args.output == "-")
    sources = [check_input(text) for text in (*base_inputs, *head_inputs)]
    _check_output(args.output, sources)
    sides: list[list[tuple[str, RunRecord]]] = [[], []]
    for side, inputs in zip(sides, (base_inputs, head_inputs), strict=True):
        for text in inputs:
            side += load_runs(Path(text), wanted_progress=wanted, jobs=args.jobs)
    (base, head) = sides
    result = diff_run_sets(
        [record for _, record in base],
        [record for _, record in head],
        threshold_pct=args.threshold,
        base_labels=[label for label, _ in base],
        head_labels=[label for label, _ in head],
    )
    _write(render_diff(result, args.format), args.output)
    return EXIT_REGRESSION if result.regression else EXIT_OK


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


def load_runs(
    path: Path, *, wanted_progress: bool = False, jobs: int | None = None
) -> list[tuple[str, RunRecord]]:
    """The runs ``path`` stands for, each with a label (its path): the records in a directory of
    separate single-process runs (at least two), else the one run :func:`load_input` reads."""
    path = check_input(str(path))
    if path.is_dir():
        separate = _separate_runs(path)
        if separate is not None:
            return separate
    with _read_progress(wanted_progress) as progress:
        return [(str(path), load_input(path, progress=progress, jobs=jobs))]


def _separate_runs(folder: Path) -> list[tuple[str, RunRecord]] | None:
    """The run records in ``folder`` when they are separate runs (at least two, none a rank of a
    distributed job, whose records belong together); None otherwise."""
    runs: list[tuple[str, RunRecord]] = []
    for f in sorted(folder.glob("*.json")):
        if f.name.endswith(".pt.trace.json") or not f.is_file():
            continue
        if f.stat().st_size > _MAX_RECORD_BYTES:
            continue
        data = f.read_bytes()
        if b"torchdiag.run/" in data and is_record(data):
            record = decode_record(data)
            if record.world_size > 1:
                return None
            runs.append((str(f), record))
    return runs if len(runs) >= 2 else None


def _check_url(url: str) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"--html-url must be an http(s) URL, not {url!r}")


def _check_output(output: str, sources: Sequence[Path]) -> None:
    """Refuse an output that would overwrite an input, or an empty output path."""
    if output == "-":
        return
    if not output.strip():
        raise UsageError("an output path is required ('-' for stdout)")
    target = Path(output)
    for source in sources:
        if source.is_file() and target.exists() and target.samefile(source):
            raise UsageError(f"the output would overwrite the input: {output}")


def _write(rendered: str, output: str) -> None:
    if output == "-":
        # Whatever the format, what reaches a terminal shows control characters, never obeys
        # them (JSON escapes them itself; HTML is escaped for the browser).
        rendered = terminal_safe(rendered)
        sys.stdout.write(rendered if rendered.endswith("\n") else rendered + "\n")
    else:
        # All or nothing: a full disk leaves no truncated report behind.
        atomic_write(output, rendered.encode("utf-8", "replace"))


def _beside(source: Path, fmt: str) -> Path:
    folder = source if source.is_dir() else source.parent
    name = source.name
    for suffix in (".gz", ".json"):
        name = name.removesuffix(suffix)
    return folder / f"{name or 'report'}{_SUFFIX[fmt]}"


def _render(
    fmt: str,
    record: RunRecord,
    analysis: object,
    *,
    cdn: bool = False,
    html_url: str | None = None,
) -> str:
    if fmt == "html":
        from torchdiag.report.html import render_html

        return render_html(record, analysis, cdn=cdn)  # type: ignore[arg-type]
    if fmt == "md":
        from torchdiag.report.markdown import render_markdown

        return render_markdown(record, analysis, html_url=html_url)  # type: ignore[arg-type]
    if fmt == "json":
        from torchdiag.report.json_report import render_json

        return render_json(record, analysis)  # type: ignore[arg-type]
    from torchdiag.report.text import render_text

    return render_text(record, analysis)  # type: ignore[arg-type]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

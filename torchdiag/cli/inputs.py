"""What the commands read: a run record, a folder of rank records, or torch.profiler trace(s)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from torchdiag.cli.args import UsageError
from torchdiag.record import RecordError, RunRecord, decode_record, is_record

if TYPE_CHECKING:
    from torchdiag.view.run_view import RunView

# A run record is small (aggregates only); anything larger is certainly a trace.
_MAX_RECORD_BYTES = 64 * 1024 * 1024

ProgressCallback = Callable[[int, "int | None"], None]
"""What the trace reader calls as it goes: (bytes done, total bytes or None when unknown)."""


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
    from torchdiag.view.run_view import RunView

    unreadable: list[str] = []
    views = [RunView(record) for _, record in records_in(folder, unreadable)]
    if not views:
        return None
    merged = merge_rank_records(views)
    # Each rank's own findings, from its own record (the merged one keeps only its figures).
    own = {v.record.rank: _serious_findings(v) for v in views}
    for figures in merged.ranks:
        figures.findings = own.get(figures.rank, [])
    if unreadable:
        merged.collectors["ranks"] = CollectorStatus(
            available=False, reason="unreadable records, skipped: " + ", ".join(unreadable)
        )
    return merged


def _serious_findings(view: RunView) -> list[str]:
    """Finding ids at warning or above, the critical ones marked, most valuable first."""
    from torchdiag.analyze.registry import analyze

    return [
        f"{f.id} (critical)" if f.severity == "critical" else f.id
        for f in analyze(view).findings
        if f.severity in ("critical", "warning")
    ]


def load_runs(
    path: Path, *, wanted_progress: bool = False, jobs: int | None = None
) -> list[tuple[str, RunRecord]]:
    """The runs ``path`` stands for, each with a label (its path): the records in a directory of
    separate single-process runs (at least two), else the one run :func:`load_input` reads."""
    from torchdiag.cli.progress import read_progress

    path = check_input(str(path))
    if path.is_dir():
        separate = _separate_runs(path)
        if separate is not None:
            return separate
    with read_progress(wanted_progress) as progress:
        return [(str(path), load_input(path, progress=progress, jobs=jobs))]


def _separate_runs(folder: Path) -> list[tuple[str, RunRecord]] | None:
    """The run records in ``folder`` when they are separate runs (at least two, none a rank of a
    distributed job, whose records belong together); None otherwise."""
    runs = [(str(path), record) for path, record in records_in(folder)]
    if len(runs) < 2 or any(record.world_size > 1 for _, record in runs):
        return None
    return runs


def records_in(folder: Path, unreadable: list[str] | None = None) -> list[tuple[Path, RunRecord]]:
    """The run records among ``folder``'s JSON files, by name. Files that look like records but
    cannot be read are named in ``unreadable`` when it is given, else their error is raised."""
    found: list[tuple[Path, RunRecord]] = []
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
                found.append((f, decode_record(data)))
        except (OSError, RecordError):
            if unreadable is None:
                raise
            unreadable.append(f.name)
    return found

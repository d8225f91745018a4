"""Columns of numbers that overflow to temporary files, and sorting rows larger than memory.

A trace's events do not arrive in time order, so the global passes need them sorted, and a trace
can hold far more events than fit in memory. The reader keeps what it needs of each event in a
:class:`ColumnLog` (typed ``array`` columns, in arrival order): once a log holds its budget of
rows, the columns are appended to a temporary file and emptied, so the memory a log takes is
bounded whatever the trace's size. :func:`sort_rows` then sorts rows built from a log's blocks
the classic external way: budget-sized blocks are sorted in memory and written as sorted *runs*,
which :func:`heapq.merge` reads back in small pieces. A small trace never spills: its one block
is sorted in memory and nothing is written.

Every file lives in one :class:`SpillDir`, a temporary directory created on first use and removed
by :meth:`SpillDir.close` (the reader calls it in a ``finally``). Its name carries the process id,
so the next reader that spills removes the directories of processes that no longer run (kill -9
gives a process no chance to clean up after itself).
"""

from __future__ import annotations

import contextlib
import heapq
import os
import shutil
import struct
import tempfile
from array import array
from collections.abc import Iterable, Iterator
from itertools import islice, starmap
from pathlib import Path
from typing import Any, BinaryIO

from torchdiag.files import pid_alive

__all__ = [
    "DIR_PREFIX",
    "ColumnLog",
    "SpillDir",
    "remove_stale_dirs",
    "sort_floats",
    "sort_rows",
    "values_at",
]

# Runs merged at once; more are first merged in groups (each run holds an open file and a buffer).
_MAX_FAN_IN = 64
_READ_BYTES = 1 << 16  # read-back buffer per run
DIR_PREFIX = "torchdiag-spill-"  # then the process id, "-" and mkdtemp's random part
_WRITE_ROWS = 1 << 14  # rows packed at once when writing a run


class SpillDir:
    """A temporary directory for spilled columns and sorted runs, created on first use."""

    def __init__(self) -> None:
        self._path: str | None = None
        self._count = 0
        self._files: list[BinaryIO] = []

    @property
    def used(self) -> bool:
        """Whether anything was spilled."""
        return self._path is not None

    def new_file(self) -> BinaryIO:
        """A new empty file (read/write) in the directory; removed with it."""
        if self._path is None:
            remove_stale_dirs(tempfile.gettempdir())
            self._path = tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getpid()}-")
        self._count += 1
        f = open(os.path.join(self._path, f"{self._count}.bin"), "w+b")  # noqa: SIM115
        self._files.append(f)
        return f

    def close(self) -> None:
        """Close every file and remove the directory with everything in it (idempotent)."""
        for f in self._files:
            f.close()
        self._files = []
        if self._path is not None:
            shutil.rmtree(self._path, ignore_errors=True)
            self._path = None


def remove_stale_dirs(folder: str | os.PathLike[str]) -> int:
    """Remove the spill directories in ``folder`` left by processes that no longer run; returns
    how many. Those of live processes, and names without a pid, are left."""
    removed = 0
    with contextlib.suppress(OSError):
        for path in Path(folder).glob(f"{DIR_PREFIX}*"):
            pid = path.name[len(DIR_PREFIX) :].split("-", 1)[0]
            if pid.isdigit() and not pid_alive(int(pid)) and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
    return removed


class ColumnLog:
    """Append-only table of typed columns (``array``), kept in arrival order.

    Callers append to :attr:`cols` directly (one ``append`` per column per row, the cheapest
    thing Python can do) and call :meth:`check` now and then (the reader: after every chunk of
    events); once the columns hold ``rows`` rows they are written to a file and emptied in place.
    :meth:`blocks` yields the columns back, block by block, in arrival order.
    """

    __slots__ = ("_blocks", "_file", "_spill", "_width", "cols", "rows", "spilled")

    def __init__(self, typecodes: str, spill: SpillDir, rows: int) -> None:
        self.cols: tuple[array[Any], ...] = tuple(array(t) for t in typecodes)
        self.rows = rows
        self.spilled = 0
        self._spill = spill
        self._file: BinaryIO | None = None
        self._blocks: list[tuple[int, int]] = []  # (file offset, rows)
        self._width = sum(c.itemsize for c in self.cols)

    def __len__(self) -> int:
        return self.spilled + len(self.cols[0])

    def check(self) -> None:
        """Spill the columns if they hold their budget of rows."""
        if len(self.cols[0]) >= self.rows:
            self._write()

    def _write(self) -> None:
        if self._file is None:
            self._file = self._spill.new_file()
        f = self._file
        f.seek(0, os.SEEK_END)
        n = len(self.cols[0])
        self._blocks.append((f.tell(), n))
        for col in self.cols:
            col.tofile(f)
            del col[:]
        self.spilled += n

    def blocks(self) -> Iterator[tuple[array[Any], ...]]:
        """The columns, one block at a time, in arrival order: spilled blocks, then the rest.

        A block's row ``i`` is the log's row ``start + i``, where ``start`` is the rows of the
        blocks before it.
        """
        for offset, n in self._blocks:
            assert self._file is not None
            self._file.seek(offset)
            out = []
            for col in self.cols:
                back = array(col.typecode)
                back.fromfile(self._file, n)
                out.append(back)
            yield tuple(out)
        if len(self.cols[0]) or not self._blocks:
            yield self.cols

    def numbered_blocks(self) -> Iterator[tuple[int, tuple[array[Any], ...]]]:
        """:meth:`blocks`, each with the arrival index of its first row."""
        start = 0
        for block in self.blocks():
            yield start, block
            start += len(block[0])


def sort_rows(
    rows: Iterable[tuple[Any, ...]], fmt: str, spill: SpillDir, budget: int
) -> Iterator[tuple[Any, ...]]:
    """``rows`` in sorted order, holding at most ``budget`` of them in memory at once.

    ``rows`` is consumed entirely before this returns (so a generator's side effects are done).
    ``fmt`` is the :mod:`struct` format of one row (``"<"`` and numbers only), used to write the
    sorted runs; it must round-trip every field exactly (``d`` for floats, ``q`` for ints).
    Sorting is stable for equal rows, which are equal in every field anyway.
    """
    it = iter(rows)
    first = sorted(islice(it, budget))
    if len(first) < budget:
        return iter(first)
    codec = struct.Struct(fmt)
    runs = [_write_run(spill, codec.pack, first)]
    del first
    while True:
        block = sorted(islice(it, budget))
        if not block:
            break
        runs.append(_write_run(spill, codec.pack, block))
        del block
    return _merge(
        runs, lambda f: _read_rows(f, codec), lambda rs: _write_run(spill, codec.pack, rs)
    )


def sort_floats(values: Iterable[float], spill: SpillDir, budget: int) -> Iterator[float]:
    """Floats in ascending order, at most ``budget`` of them in memory at once."""
    it = iter(values)
    first = sorted(islice(it, budget))
    if len(first) < budget:
        return iter(first)
    runs = [_write_floats(spill, first)]
    del first
    while True:
        block = sorted(islice(it, budget))
        if not block:
            break
        runs.append(_write_floats(spill, block))
        del block
    return _merge(runs, _read_floats, lambda vs: _write_floats(spill, vs))


def values_at(ordered: Iterable[Any], positions: Iterable[int]) -> dict[int, Any]:
    """The items at the given 0-based positions of ``ordered`` (positions past its end left out)."""
    out: dict[int, Any] = {}
    it = iter(ordered)
    at = 0
    for pos in sorted(set(positions)):
        if pos < at:
            continue
        found = next(islice(it, pos - at, None), _END)
        if found is _END:
            break
        out[pos] = found
        at = pos + 1
    return out


_END = object()


def _write_run(spill: SpillDir, pack: Any, rows: Iterable[tuple[Any, ...]]) -> BinaryIO:
    f = spill.new_file()
    it = iter(rows)
    while piece := b"".join(starmap(pack, islice(it, _WRITE_ROWS))):
        f.write(piece)
    return f


def _write_floats(spill: SpillDir, values: Iterable[float]) -> BinaryIO:
    f = spill.new_file()
    it = iter(values)
    while piece := array("d", islice(it, _WRITE_ROWS)):
        piece.tofile(f)
    return f


def _read_rows(f: BinaryIO, codec: struct.Struct) -> Iterator[tuple[Any, ...]]:
    f.seek(0)
    size = max(1, _READ_BYTES // codec.size) * codec.size
    try:
        while piece := f.read(size):
            yield from codec.iter_unpack(piece)
    finally:
        _discard(f)


def _read_floats(f: BinaryIO) -> Iterator[float]:
    f.seek(0)
    try:
        while piece := f.read(_READ_BYTES):
            yield from array("d", piece)
    finally:
        _discard(f)


def _discard(f: BinaryIO) -> None:
    """Close and delete a run once read: its disk space is not needed any more."""
    f.close()
    with contextlib.suppress(OSError):
        os.remove(f.name)


def _merge(runs: list[BinaryIO], read: Any, write: Any) -> Iterator[Any]:
    """Merge sorted runs, in groups of :data:`_MAX_FAN_IN` first when there are more."""
    while len(runs) > _MAX_FAN_IN:
        runs = [
            write(heapq.merge(*(read(f) for f in runs[i : i + _MAX_FAN_IN])))
            for i in range(0, len(runs), _MAX_FAN_IN)
        ]
    return heapq.merge(*(read(f) for f in runs))

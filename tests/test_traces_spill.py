"""The reader's external-memory path: columns spilled to temporary files, sorted runs merged.

A small budget of rows makes an ordinary trace spill many blocks and sort through many runs
(more than one merge level for the smallest budget); the summary must be the very same as
with the default budget, where nothing spills, and no temporary file may be left behind,
also when the read fails half-way.
"""

from __future__ import annotations

import gzip
import os
import random
import subprocess
import sys
import tempfile
from bisect import bisect_right
from pathlib import Path

import msgspec
import pytest

from torchdiag.traces import spill, summary
from torchdiag.traces.decode import TraceError
from torchdiag.traces.intervals import length, length_in, merge_intervals, partition, union
from torchdiag.traces.load import read_trace
from torchdiag.traces.spill import ColumnLog, SpillDir, sort_floats, sort_rows, values_at
from torchdiag.traces.sweep import (
    Gaps,
    LengthIn,
    TotalLength,
    Union,
    WindowLengths,
    partitions,
    sweep,
)

DATA = Path(__file__).resolve().parent / "data"
TRACES = [
    DATA / "external" / "hta" / "df_index_resolver.json.gz",  # 216k events, 5 steps
    DATA / "h200" / "transformer_sync_each_step.pt.trace.json.gz",  # synchronisations
    DATA / "external" / "hta" / "nccl_data.json.gz",  # communication kernels
]


@pytest.fixture
def spill_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """Temporary files go under ``tmp_path``; the list names every spill file created."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    created: list[str] = []
    new_file = SpillDir.new_file

    def counting(self: SpillDir):  # type: ignore[no-untyped-def]
        f = new_file(self)
        created.append(f.name)
        return f

    monkeypatch.setattr(SpillDir, "new_file", counting)
    return created


_DEFAULT_ROWS = summary.DEFAULT_SPILL_ROWS


def _summary(path: Path, rows: int | None, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """The encoded summary of ``path`` read with a budget of ``rows`` (None: the default)."""
    monkeypatch.setattr(summary, "DEFAULT_SPILL_ROWS", rows or _DEFAULT_ROWS)
    return msgspec.json.encode(read_trace(path))


@pytest.mark.parametrize("trace", TRACES, ids=lambda p: p.name)
def test_spilled_summary_is_identical(
    trace: Path, spill_files: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    spilled = _summary(trace, 2000, monkeypatch)
    assert spill_files, "a budget of 2000 rows must spill"
    assert list(tmp_path.iterdir()) == [], "temporary files left behind"
    assert spilled == _summary(trace, None, monkeypatch)


def test_many_runs_merge_in_levels(
    spill_files: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # 56k operators in blocks of 300 rows: about 190 runs, more than one merge takes at once.
    trace = TRACES[0]
    spilled = _summary(trace, 300, monkeypatch)
    assert len(spill_files) > 3 * spill._MAX_FAN_IN
    assert list(tmp_path.iterdir()) == []
    assert spilled == _summary(trace, None, monkeypatch)


def test_failed_read_removes_its_files(
    spill_files: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A trace cut short: several chunks are read (and spilled) before the decoder fails.
    with gzip.open(TRACES[0], "rb") as fh:
        head = fh.read(12 << 20)
    broken = tmp_path / "cut" / "broken.json"
    broken.parent.mkdir()
    broken.write_bytes(head)
    monkeypatch.setattr(summary, "DEFAULT_SPILL_ROWS", 500)
    with pytest.raises(TraceError):
        read_trace(broken)
    assert spill_files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut"]


def test_stale_spill_directories_of_dead_processes_are_removed(
    spill_files: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A process that ended (as if killed -9 mid-read) left its directory; a live one's stays.
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = tmp_path / f"{spill.DIR_PREFIX}{int(done.stdout)}-abc"
    live = tmp_path / f"{spill.DIR_PREFIX}{os.getppid()}-def"
    for folder in (dead, live):
        folder.mkdir()
        (folder / "1.bin").write_bytes(b"x" * 64)
    _summary(TRACES[1], 300, monkeypatch)
    assert spill_files
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name]


def test_column_log_blocks_keep_arrival_order() -> None:
    files = SpillDir()
    try:
        log = ColumnLog("dq", files, rows=7)
        for i in range(40):
            log.cols[0].append(i / 2)
            log.cols[1].append(-i)
            log.check()
        assert files.used and log.spilled == 35 and len(log) == 40
        starts = [start for start, _ in log.numbered_blocks()]
        rows = [
            (x, y) for _, (xs, ys) in log.numbered_blocks() for x, y in zip(xs, ys, strict=True)
        ]
        assert starts == [0, 7, 14, 21, 28, 35]
        assert rows == [(i / 2, -i) for i in range(40)]
    finally:
        files.close()
    assert not files.used


@pytest.mark.parametrize("budget", [3, 50, 10_000])
def test_sort_rows_and_floats_match_sorted(budget: int) -> None:
    rng = random.Random(budget)
    rows = [(rng.randrange(5), rng.random(), i) for i in range(5000)]
    values = [rng.uniform(-1, 1) for _ in range(3000)]
    files = SpillDir()
    try:
        assert list(sort_rows(iter(rows), "<qdq", files, budget)) == sorted(rows)
        assert list(sort_floats(iter(values), files, budget)) == sorted(values)
    finally:
        files.close()


def test_values_at_picks_positions() -> None:
    assert values_at(iter("abcdef"), [4, 0, 4, -1, 9]) == {0: "a", 4: "e"}


def _random_layers(rng: random.Random, n: int) -> list[list[tuple[float, float]]]:
    """Interval layers with overlaps, touching ends and empty intervals."""
    layers = []
    for _ in range(n):
        raw = []
        for _ in range(rng.randrange(0, 60)):
            s = float(rng.randrange(0, 400))
            raw.append((s, s + rng.choice([0.0, 1.0, 2.5, rng.randrange(1, 30)])))
        layers.append(raw)
    return layers


@pytest.mark.parametrize("seed", range(12))
def test_sweep_matches_the_interval_functions(seed: int) -> None:
    rng = random.Random(seed)
    layers = _random_layers(rng, 4)
    windows = [(float(a), float(a + rng.randrange(1, 120))) for a in rng.sample(range(400), 6)]
    merged = [merge_intervals([s for s, _ in raw], [e for _, e in raw]) for raw in layers]
    prefixes = [WindowLengths(windows) for _ in layers]
    unions = [Union([p]) for p in prefixes]
    total, inside = TotalLength(), LengthIn(*windows[0])
    queries = [float(rng.randrange(0, 430)) + 0.5 * rng.randrange(2) for _ in range(20)]
    gaps = Gaps(queries)
    unions[-1].sinks += [total, inside, gaps]
    rows = sorted((s, e, k) for k, raw in enumerate(layers) for s, e in raw)
    sweep(rows, [unions[k:] for k in range(len(layers))], flush_rows=7)

    everything = union(merged)
    assert partitions(windows, prefixes) == [partition(a, b, merged) for a, b in windows]
    assert total.total == length(everything)
    assert inside.length == length_in(everything, *windows[0])
    starts, ends = everything
    for t in queries:
        i = bisect_right(starts, t)
        expected = None if (i > 0 and ends[i - 1] > t) or i >= len(starts) else (t, starts[i])
        assert gaps.found[t] == expected

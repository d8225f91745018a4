"""Public entry points: a trace file (or a directory of them) to a summary or a run record.

``read_trace`` is what the live capture calls on the window it just recorded; ``record_from_traces``
is what ``torchdiag report TRACE`` calls on a user's trace (one file, or a directory with one trace
per rank). Neither imports torch.

Both take an optional ``progress(done, total)`` callback: bytes of the file(s) consumed so far
(compressed bytes for ``.gz``: the position in the file on disk) and their total size. It is
called once per block read (1 MiB of JSON by default, a few milliseconds of work) and once
at the end of every file.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from torchdiag.record import (
    CollectorStatus,
    DeviceInfo,
    DistributedInfo,
    Environment,
    RunMode,
    RunRecord,
    RunStatus,
    StepSeries,
    TraceSummary,
)
from torchdiag.sanitize import safe_text
from torchdiag.traces.decode import (
    DEFAULT_BLOCK_SIZE,
    NotATraceError,
    TraceDecoder,
    TraceError,
    open_trace,
)
from torchdiag.traces.formats import distributed_info
from torchdiag.traces.summary import SummaryBuilder

__all__ = ["Progress", "find_trace_files", "read_trace", "record_from_traces"]

PathLike = str | os.PathLike[str]
Progress = Callable[[int, "int | None"], None]
"""``progress(bytes_done, total_bytes)``; ``total_bytes`` is None when unknown."""
_TRACE_SUFFIXES = (".json", ".json.gz")
_PROFILER_SUFFIXES = (".pt.trace.json", ".pt.trace.json.gz")
# How a summary's steps were found -> StepSeries.detection (whole-trace "steps" are no series).
_SERIES_DETECTION = {"profiler": "profiler", "optimizer": "optimizer", "annotation": "manual"}


@dataclass(frozen=True)
class _Trace:
    """A summary plus the file-level facts a run record needs beyond it."""

    summary: TraceSummary
    metadata: Mapping[str, Any]
    start_epoch_s: float | None
    step_source: str


def read_trace(
    path: PathLike,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    progress: Progress | None = None,
) -> TraceSummary:
    """Summarise one trace file (``.json`` or gzip-compressed ``.json.gz``).

    Raises :class:`~torchdiag.traces.decode.TraceError` for a file that is not a readable trace,
    and ``OSError`` when it cannot be opened. ``progress`` is described in the module docstring.
    """
    p = Path(path)
    size = _size(p)
    return _read(p, block_size, _file_progress(progress, 0, size)).summary


def _read(path: Path, block_size: int, on_block: Callable[[BinaryIO], None] | None) -> _Trace:
    with _cyclic_gc_paused():
        return _read_file(path, block_size, on_block)


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the read, and as it was afterwards.

    The read allocates millions of short-lived objects. Reference counting frees them, but they
    trigger collections all the same, and each one walks every object the process holds (all
    its modules; in a live capture, the model's too): ~6% of a report of the 1x trace
    (benchmarks/trace_read.py). The read itself makes next to no reference cycles (a dozen
    objects over the 216k-event trace), so pausing the collector does not grow memory.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _read_file(path: Path, block_size: int, on_block: Callable[[BinaryIO], None] | None) -> _Trace:
    builder = SummaryBuilder(origin=path.name)
    try:
        with open_trace(path) as stream:
            hook = (lambda: on_block(stream)) if on_block is not None else None
            decoder = TraceDecoder(stream, block_size=block_size, on_block=hook)
            try:
                for chunk in decoder.chunks():
                    builder.add(chunk)
            except TraceError as exc:
                raise type(exc)(f"{path}: {exc}") from None
            if on_block is not None:
                on_block(stream)
    except BaseException:
        builder.close()  # a large trace may have spilled columns to temporary files
        raise
    notes = []
    base_ns = decoder.metadata.get("baseTimeNanoseconds")
    if isinstance(base_ns, int) and base_ns:
        # Kineto writes ts relative to this base; durations are unaffected.
        notes.append(f"timestamps are relative to baseTimeNanoseconds={base_ns}")
    if decoder.invalid_events:
        notes.append(f"{decoder.invalid_events} traceEvents entries were not events and skipped")
    if decoder.skipped_members:
        notes.append("large top-level members skipped: " + ", ".join(decoder.skipped_members))
    if decoder.trailing_data:
        notes.append("data after the end of the JSON document was ignored")
    summary = builder.finish(decoder.metadata, form=decoder.form, notes=notes)
    return _Trace(
        summary,
        decoder.metadata,
        _epoch_start(builder.t_min, base_ns),
        builder.step_source,
    )


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _position(stream: BinaryIO) -> int | None:
    """Bytes of the file on disk consumed: the compressed position for gzip streams."""
    raw = getattr(stream, "fileobj", None) or stream  # gzip.GzipFile wraps the file
    try:
        return raw.tell()
    except (OSError, ValueError, AttributeError):
        return None


# Below this many bytes in all, files are read one after another: a worker process costs about
# a third of a second to start, which a read this small would not win back.
POOL_MIN_BYTES = 32 * 1024 * 1024


def _read_all(
    files: list[Path],
    sizes: list[int | None],
    block_size: int,
    progress: Progress | None,
    jobs: int | None,
) -> list[_Trace | BaseException]:
    """Each file's trace or the exception reading it raised, in order; in parallel when it pays."""
    total = sum(s or 0 for s in sizes) if all(s is not None for s in sizes) else None
    workers = min(jobs or os.cpu_count() or 1, len(files))
    if workers < 2 or (total is not None and total < POOL_MIN_BYTES):
        out: list[_Trace | BaseException] = []
        done = 0
        for f, size in zip(files, sizes, strict=True):
            try:
                out.append(_read(f, block_size, _file_progress(progress, done, total)))
            except (TraceError, OSError) as exc:
                out.append(exc)
            done += size or 0
        return out
    # Imported here, not at the top: ~12 ms that a one-file report (the usual case) never uses.
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # Spawned, not forked: the caller may run threads (a progress bar) that a fork would copy
    # mid-lock. Each worker returns a small summary, never the events.
    context = multiprocessing.get_context("spawn")
    results: list[_Trace | BaseException] = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        done = 0
        reads = pool.map(_read_or_error, files, [block_size] * len(files))
        for size, result in zip(sizes, reads, strict=True):
            results.append(result)
            done += size or 0
            if progress is not None:
                progress(done, total)
    return results


def _read_or_error(path: Path, block_size: int) -> _Trace | BaseException:
    """:func:`_read` in a worker process: an expected error comes back as a value."""
    try:
        return _read(path, block_size, None)
    except (TraceError, OSError) as exc:
        return exc


def _file_progress(
    progress: Progress | None, done_before: int, total: int | None
) -> Callable[[BinaryIO], None] | None:
    """A per-block hook that reports ``done_before`` + this file's position out of ``total``."""
    if progress is None:
        return None

    def report(stream: BinaryIO) -> None:
        pos = _position(stream)
        if pos is not None:
            progress(done_before + pos, total)

    return report


def _epoch_start(t_min_us: float, base_ns: Any) -> float | None:
    """Wall-clock start (epoch seconds) when the trace's timestamps allow it."""
    if t_min_us == float("inf"):
        return None
    start = None
    if isinstance(base_ns, int) and base_ns:
        start = base_ns / 1e9 + t_min_us / 1e6
    elif t_min_us > 1e15:  # already µs since the epoch (after 2001)
        start = t_min_us / 1e6
    # A base or timestamp outside 1990-2200 is corrupt: the trace is still read, undated.
    return start if start is not None and 6.3e8 < start < 7.3e9 else None


def find_trace_files(path: PathLike) -> list[Path]:
    """The trace files ``path`` names: itself, or the ``*.json``/``*.json.gz`` files in a directory.

    In a directory holding torch.profiler's ``*.pt.trace.json[.gz]`` files, only those are taken
    (other JSON there is usually something else: configs, samples).
    """
    p = Path(path)
    if not p.is_dir():
        return [p]
    files = sorted(f for f in p.iterdir() if f.is_file() and f.name.endswith(_TRACE_SUFFIXES))
    profiler = [f for f in files if f.name.endswith(_PROFILER_SUFFIXES)]
    return profiler or files


def record_from_traces(
    paths: PathLike | Iterable[PathLike],
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    progress: Progress | None = None,
    jobs: int | None = None,
) -> RunRecord:
    """A :class:`RunRecord` (``source="trace"``) built from one or more trace files.

    Several files (a directory of rank traces) are read by up to ``jobs`` processes (default: the
    machine's cores) when together they are large enough to repay starting them.

    ``paths`` is a file, a directory (every trace file in it, one summary each: typically one
    per rank) or a list of either. Files a directory listing found that turn out not to be
    traces are skipped and named in ``collectors["trace"].reason``. ``traces`` holds the
    summaries sorted by rank; rank, world size and backend come from ``distributedInfo``.

    Steps come from each trace's steps (``ProfilerStep#N``, else optimizer-step or annotation
    fallbacks): per step number the slowest trace's wall time, since that is what the job waits
    for, and as input wait that trace's host time in ``DataLoader.__next__`` (as a live capture
    measures it). Devices come from ``deviceProperties``.
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    files: list[Path] = []
    listed = False
    for item in items:
        found = find_trace_files(item)
        listed = listed or Path(item).is_dir()
        files.extend(found)
    sizes = [_size(f) for f in files]
    traces: list[_Trace] = []
    not_traces: list[str] = []
    unreadable: list[str] = []
    first_error: TraceError | OSError | None = None
    for f, result in zip(files, _read_all(files, sizes, block_size, progress, jobs), strict=True):
        try:
            if isinstance(result, BaseException):
                raise result
            traces.append(result)
        except NotATraceError:
            if len(files) == 1:
                raise
            not_traces.append(safe_text(f.name))  # JSON that is no trace: a config, samples
        except (TraceError, OSError) as exc:
            # A file named on its own must be readable; one a directory listing found may be
            # a half-written, foreign or unreadable file, reported instead of failing the run.
            if len(files) == 1 or not listed:
                raise
            first_error = first_error or exc
            unreadable.append(safe_text(f.name))
    if not traces:
        if first_error is not None:
            raise first_error
        raise TraceError(f"no trace files found in {', '.join(str(i) for i in items)}")
    traces.sort(key=lambda t: (t.summary.rank is None, t.summary.rank or 0, t.summary.origin))

    first = traces[0]
    ranks = [distributed_info(t.metadata) for t in traces]
    rank = next((r for r, _, _ in ranks if r is not None), 0)
    world_size = next((w for _, w, _ in ranks if w is not None), 1)
    backend = next((b for _, _, b in ranks if b is not None), None)
    starts = [t.start_epoch_s for t in traces if t.start_epoch_s is not None]
    ends = [
        t.start_epoch_s + t.summary.span_ms / 1000 for t in traces if t.start_epoch_s is not None
    ]
    reasons = []
    if not_traces:
        reasons.append("not traces, skipped: " + ", ".join(not_traces))
    if unreadable:
        reasons.append("unreadable traces, skipped: " + ", ".join(unreadable))
    collectors = {
        "trace": CollectorStatus(available=True, reason="; ".join(reasons) if reasons else None)
    }
    name = safe_text(files[0].name if len(files) == 1 else Path(str(items[0])).name)
    return RunRecord(
        source="trace",
        name=name,
        started_utc=_iso(min(starts)) if starts else "",
        ended_utc=_iso(max(ends)) if ends else None,
        duration_s=(max(ends) - min(starts))
        if starts
        else max(t.summary.span_ms for t in traces) / 1000,
        status=RunStatus(state="completed"),
        rank=rank,
        world_size=world_size,
        collectors=collectors,
        steps=_step_series(traces),
        mode=trace_mode([t.summary for t in traces]),
        environment=Environment(
            cuda_version=_cuda_version(first.metadata),
            devices=_devices([t.summary for t in traces]),
            distributed=DistributedInfo(
                initialized=any(
                    isinstance(t.metadata.get("distributedInfo"), dict) for t in traces
                ),
                backend=backend,
                rank=rank,
                world_size=world_size,
            ),
        ),
        traces=[t.summary for t in traces],
    )


# Operators that only a backward pass runs: the autograd engine's per-node spans and the
# ``*Backward*`` nodes themselves.
_BACKWARD_MARKERS = ("autograd::engine::evaluate_function", "Backward")


def trace_mode(summaries: list[TraceSummary]) -> RunMode:
    """``"inference"`` when no trace shows an optimizer step region nor a backward operator among
    its most expensive ones (``top_ops``), else ``"training"``: a trace is read as training
    unless it shows it only ran forward (a backward, where there is one, is among the costliest
    operators: it does about twice the forward's work). A trace without operators says neither:
    training, the default reading."""
    if not any(summary.top_ops for summary in summaries):
        return "training"
    for summary in summaries:
        if summary.optimizer_steps:
            return "training"
        if any(m in op.name for op in summary.top_ops for m in _BACKWARD_MARKERS):
            return "training"
    return "inference"


def _step_series(traces: list[_Trace]) -> StepSeries:
    """One row per step number; a step seen in several traces (ranks) keeps its slowest one."""
    by_number: dict[int, tuple[float, float, float]] = {}
    detections = set()
    for t in traces:
        detection = _SERIES_DETECTION.get(t.step_source)
        if detection is None:
            continue
        detections.add(detection)
        for step in t.summary.steps:
            row = (step.duration_ms, step.dataloader_ms, step.start_us)
            known = by_number.get(step.number)
            if known is None or row[0] > known[0]:
                by_number[step.number] = row
    if not by_number:
        return StepSeries(detection="none")
    numbers = sorted(by_number)
    origin = min(row[2] for row in by_number.values())
    walls = [by_number[n][0] for n in numbers]
    waits = [by_number[n][1] for n in numbers]
    # Mixed sources (some ranks with ProfilerStep markers, some without): the markers win.
    detection = "profiler" if "profiler" in detections else sorted(detections)[0]
    return StepSeries(
        detection=detection,  # type: ignore[arg-type]
        count=len(numbers),
        total_wall_s=sum(walls) / 1000,
        total_input_wait_s=sum(waits) / 1000,
        first_step=numbers,
        steps=[1] * len(numbers),
        start_s=[(by_number[n][2] - origin) / 1e6 for n in numbers],
        wall_ms=walls,
        input_wait_ms=waits,
        max_wall_ms=list(walls),
        profiled=[True] * len(numbers),
    )


def _devices(summaries: list[TraceSummary]) -> list[DeviceInfo]:
    seen: dict[int, DeviceInfo] = {}
    for s in summaries:
        for d in s.devices:
            seen.setdefault(d.index, d)
    return [seen[i] for i in sorted(seen)]


def _cuda_version(meta: Mapping[str, Any]) -> str | None:
    """``cuda_runtime_version`` 12040 → "12.4" (CUDA encodes major*1000 + minor*10)."""
    v = meta.get("cuda_runtime_version")
    if not isinstance(v, int) or v <= 0:
        return None
    return f"{v // 1000}.{(v % 1000) // 10}"


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, tz=timezone.utc).isoformat(timespec="milliseconds")

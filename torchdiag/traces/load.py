"""Public entry points: a trace file (or a directory of them) to a summary or a run record.

``read_trace`` is what the live capture calls on the window it just recorded; ``record_from_traces``
is what ``torchdiag report TRACE`` calls on a user's trace. Neither imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from torchdiag.record import (
    CollectorStatus,
    DeviceInfo,
    DistributedInfo,
    Environment,
    RunRecord,
    RunStatus,
    StepSeries,
    TraceSummary,
)
from torchdiag.traces.decode import (
    DEFAULT_BLOCK_SIZE,
    NotATraceError,
    TraceDecoder,
    TraceError,
    open_trace,
)
from torchdiag.traces.summary import SummaryBuilder

__all__ = ["find_trace_files", "read_trace", "record_from_traces"]

PathLike = str | os.PathLike[str]
_TRACE_SUFFIXES = (".json", ".json.gz")
_PROFILER_SUFFIXES = (".pt.trace.json", ".pt.trace.json.gz")


@dataclass(frozen=True)
class _Trace:
    """A summary plus the file-level facts a run record needs beyond it."""

    summary: TraceSummary
    metadata: Mapping[str, Any]
    start_epoch_s: float | None


def read_trace(path: PathLike, *, block_size: int = DEFAULT_BLOCK_SIZE) -> TraceSummary:
    """Summarise one trace file (``.json`` or gzip-compressed ``.json.gz``).

    Raises :class:`~torchdiag.traces.decode.TraceError` for a file that is not a readable trace,
    and ``OSError`` when it cannot be opened.
    """
    return _read(Path(path), block_size).summary


def _read(path: Path, block_size: int) -> _Trace:
    builder = SummaryBuilder(origin=path.name)
    with open_trace(path) as stream:
        decoder = TraceDecoder(stream, block_size=block_size)
        try:
            for chunk in decoder.chunks():
                builder.add(chunk)
        except TraceError as exc:
            raise type(exc)(f"{path}: {exc}") from None
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
    return _Trace(summary, decoder.metadata, _epoch_start(builder.t_min, base_ns))


def _epoch_start(t_min_us: float, base_ns: Any) -> float | None:
    """Wall-clock start (epoch seconds) when the trace's timestamps allow it."""
    if t_min_us == float("inf"):
        return None
    if isinstance(base_ns, int) and base_ns:
        return base_ns / 1e9 + t_min_us / 1e6
    if t_min_us > 1e15:  # already µs since the epoch (after 2001)
        return t_min_us / 1e6
    return None


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
    paths: PathLike | Iterable[PathLike], *, block_size: int = DEFAULT_BLOCK_SIZE
) -> RunRecord:
    """A :class:`RunRecord` (``source="trace"``) built from one or more trace files.

    ``paths`` is a file, a directory (every trace file in it, one summary each) or a list of
    either. Steps come from the traces' ``ProfilerStep#N`` annotations (the slowest trace's wall
    time where several traces cover the same step, e.g. one per rank); devices from
    ``deviceProperties``; rank and world size from ``distributedInfo``.
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    files: list[Path] = []
    for item in items:
        files.extend(find_trace_files(item))
    traces: list[_Trace] = []
    skipped: list[str] = []
    for f in files:
        try:
            traces.append(_read(f, block_size))
        except NotATraceError:
            if len(files) == 1:
                raise
            skipped.append(f.name)  # JSON that is not a trace, found by a directory listing
    if not traces:
        raise TraceError(f"no trace files found in {', '.join(str(i) for i in items)}")

    first = traces[0]
    dist = first.metadata.get("distributedInfo")
    dist = dist if isinstance(dist, dict) else {}
    rank = dist.get("rank") if isinstance(dist.get("rank"), int) else 0
    world_size = dist.get("world_size") if isinstance(dist.get("world_size"), int) else 1
    starts = [t.start_epoch_s for t in traces if t.start_epoch_s is not None]
    ends = [
        t.start_epoch_s + t.summary.span_ms / 1000 for t in traces if t.start_epoch_s is not None
    ]
    collectors = {"trace": CollectorStatus(available=True)}
    if skipped:
        collectors["trace"] = CollectorStatus(
            available=True, reason="not traces, skipped: " + ", ".join(skipped)
        )
    name = files[0].name if len(files) == 1 else Path(str(items[0])).name
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
        steps=_step_series([t.summary for t in traces]),
        environment=Environment(
            cuda_version=_cuda_version(first.metadata),
            devices=_devices([t.summary for t in traces]),
            distributed=DistributedInfo(
                initialized=bool(dist),
                backend=dist.get("backend") if isinstance(dist.get("backend"), str) else None,
                rank=rank,
                world_size=world_size,
            ),
        ),
        traces=[t.summary for t in traces],
    )


def _step_series(summaries: list[TraceSummary]) -> StepSeries:
    """One row per profiler step; a step seen in several traces keeps its slowest instance."""
    by_number: dict[int, tuple[float, float, float]] = {}
    for s in summaries:
        if s.step_detection != "profiler-step":
            continue
        for step in s.steps:
            row = (step.duration_ms, step.breakdown.input_wait, step.start_us)
            known = by_number.get(step.number)
            if known is None or row[0] > known[0]:
                by_number[step.number] = row
    if not by_number:
        return StepSeries(detection="none")
    numbers = sorted(by_number)
    origin = min(row[2] for row in by_number.values())
    walls = [by_number[n][0] for n in numbers]
    waits = [by_number[n][1] for n in numbers]
    return StepSeries(
        detection="profiler",
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

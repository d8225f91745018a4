"""The ranks of a distributed run, side by side: one figure set per rank, from its own record.

Each rank summarises its own profiler window in its own process, so the report over ranks reads
small records (or, for imported traces, one summary per rank trace) and never raw traces. Ranks
are compared step by step, by step number: their clocks need not agree, since a synchronous job
runs step N on every rank at the same time (documented in docs/record.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from torchdiag.record import RankFigures, RunRecord, TraceSummary
from torchdiag.view.numbers import rounded
from torchdiag.view.step_model import StepTime, trace_step_time

if TYPE_CHECKING:
    from torchdiag.view.run_view import RunView


def rank_figures(record: RunRecord) -> list[RankFigures]:
    """Every rank's figures: from a merged run directory, or one per rank trace; [] for one."""
    if record.ranks:
        return list(record.ranks)
    if len(record.traces) < 2:
        return []
    out = []
    for i, summary in enumerate(record.traces):
        timing = trace_step_time(summary)
        rank = summary.rank if summary.rank is not None else i
        device = next((d.name for d in summary.devices), "")
        out.append(_figures(rank, timing, summary, host="", device=device, state="trace"))
    return sorted(out, key=lambda f: f.rank)


def merge_rank_records(views: list[RunView]) -> RunRecord:
    """One record over the ranks (a view of each rank's record): the details of the rank that
    sets the pace (the most work of its own per step), with every rank's figures and the ranks
    of the world that left none."""
    if not views:
        raise ValueError("no records to merge")
    records = [v.record for v in views]
    figures = [_record_figures(v) for v in views]
    world = max([r.world_size for r in records] + [len(records)])
    present = {f.rank for f in figures}
    pace = max(range(len(records)), key=lambda i: (figures[i].own_ms or 0.0, -figures[i].rank))
    merged = msgspec.structs.replace(
        records[pace],
        ranks=sorted(figures, key=lambda f: f.rank),
        missing_ranks=sorted(set(range(world)) - present),
    )
    return merged


def _record_figures(view: RunView) -> RankFigures:
    record, timing, summary = view.record, view.timing, view.summary
    env = record.environment
    device = next((d.name for d in env.devices), "")
    throttled = bool(
        record.samples is not None
        and any(any(t for t in g.throttle_reasons if t) for g in record.samples.gpus)
    )
    figures = _figures(
        record.rank, timing, summary, host=env.hostname, device=device, state=record.status.state
    )
    figures.throttled = throttled
    if record.steps.count:
        figures.steps = record.steps.count
    return figures


def _figures(
    rank: int,
    timing: StepTime | None,
    summary: TraceSummary | None,
    *,
    host: str,
    device: str,
    state: str,
) -> RankFigures:
    steps = summary.steps if summary is not None else []
    host_comm = sum(s.collective_ms for s in steps) / len(steps) if steps else 0.0
    figures = RankFigures(rank=rank, host=host, device=device, state=state, steps=len(steps))
    if timing is None or timing.step_ms <= 0:
        return figures
    comm = min(max(host_comm, timing.comm_ms), timing.step_ms)
    busy = timing.gpu_busy_share
    figures.step_ms = rounded(timing.step_ms)
    figures.input_wait_ms = rounded(timing.input_wait_ms) or 0.0
    figures.comm_ms = rounded(comm) or 0.0
    figures.comm_overlap_pct = (
        rounded(100 * timing.comm_overlap_ms / timing.comm_ms) if timing.comm_ms else None
    )
    figures.own_ms = rounded(timing.step_ms - comm)
    figures.gpu_busy_pct = rounded(100 * busy) if busy is not None else None
    # Per profiled step: the step less its collective time, for consistency across steps.
    figures.step_numbers = [s.number for s in steps]
    figures.own_ms_by_step = [
        round(max(0.0, s.duration_ms - max(s.collective_ms, s.breakdown.communication)), 3)
        for s in steps
    ]
    return figures

"""``straggler``: one rank does more work per step than the others, and they wait for it.

In synchronous data-parallel training every rank's step takes as long as the slowest rank's: the
others finish their own work early and wait inside the next collective. Step times therefore look
alike across ranks; what differs is each rank's *own* time, its step less its time in
collectives. The rank with the most own time, consistently across the profiled steps, is the
straggler, and the excess over the other ranks' typical own time is what every step would lose
were it as fast as they are.
"""

from __future__ import annotations

import statistics
from collections import Counter

from torchdiag.analyze.finding import Finding, severity_for_saving
from torchdiag.analyze.registry import SkipRule, rule
from torchdiag.record import RankFigures
from torchdiag.view.run_view import RunView

# "Consistently slower", tested step by step: per shared profiled step, the straggler's own time
# less the other ranks' median own time. Its median over the steps must stand this many robust
# standard errors (1.4826 x MAD / sqrt(steps)) above zero: one slow step (a checkpoint, a GC
# pause) or jitter on a busy machine does not make a straggler. At least MIN_STEPS steps.
MIN_T = 3.0
MIN_STEPS = 3
# Identical ranks differ too: the own time of two identical DDP ranks on one loaded 2-core
# machine differed by up to 9.7% of the step (5.4% with each rank pinned to a core), consistently
# enough to pass the test above. A rank is called a straggler from a tenth of the step on.
MIN_EXCESS_PCT = 10.0
# The others must be seen waiting for at least this share of the straggler's excess: otherwise
# the difference is not what held them back.
WAIT_COVERS = 0.5


@rule("straggler")
def straggler(view: RunView) -> Finding | None:
    """A rank whose own work per step exceeds the other ranks', consistently."""
    record = view.record
    figures = [f for f in view.ranks if f.own_ms is not None and f.step_ms]
    if len(figures) < 2:
        raise SkipRule("needs two or more ranks (a run directory of rank records or traces)")
    slow = max(figures, key=lambda f: (f.own_ms or 0.0, -f.rank))
    others = [f for f in figures if f is not slow]
    typical = statistics.median(f.own_ms or 0.0 for f in others)
    excess = (slow.own_ms or 0.0) - typical
    step = statistics.median(f.step_ms or 0.0 for f in figures)
    if step <= 0 or excess <= 0:
        return None
    saving = min(excess, step) / step * 100
    if saving < MIN_EXCESS_PCT:
        return None
    others_wait = statistics.median(f.comm_ms for f in others)
    if others_wait < WAIT_COVERS * excess:
        return None  # the others did not wait for it: not what paced the step
    consistency = _consistency(slow, others, step)
    if consistency is None:
        return None
    steps, t = consistency
    cause = _cause(slow, others, excess)
    evidence: dict[str, float | int | str | bool | None] = {
        "straggler_rank": slow.rank,
        "ranks": len(figures),
        "own_ms_per_step": round(slow.own_ms or 0.0, 2),
        "others_typical_own_ms_per_step": round(typical, 2),
        "excess_ms_per_step": round(excess, 2),
        "others_wait_in_collectives_ms_per_step": round(others_wait, 2),
        "step_ms": round(step, 2),
        "profiled_steps_compared": steps,
        "consistency_t": round(t, 1),
        "likely_cause": cause,
    }
    if record.missing_ranks:
        evidence["missing_ranks"] = ", ".join(str(r) for r in record.missing_ranks)
    title = f"rank {slow.rank} is a straggler: {excess:.0f} ms more work per step than the others"
    if cause:
        title += f" ({cause})"
    return Finding(
        id="straggler",
        severity=severity_for_saving(saving),
        title=title,
        evidence=evidence,
        recommendation=(
            f"Every rank waits for rank {slow.rank} in each collective. Look at what that rank "
            "does differently: its input pipeline (more loader workers, data on local disk), "
            "its host and GPU (throttling, a slower or shared device), uneven work (unbalanced "
            "batches or "
            "sequence lengths: bucket by length), or extra work only it does (logging, "
            "evaluation, checkpointing on rank 0: move it off the step or to a separate process)."
        ),
        snippet=(
            "# find what the slow rank does differently: report over the run's ranks\n"
            "torchdiag report torchdiag_runs/<run>/      # one report, every rank side by side"
        ),
        saving_pct_max=round(saving, 1),
    )


def _consistency(
    slow: RankFigures, others: list[RankFigures], step_ms: float
) -> tuple[int, float] | None:
    """(steps compared, robust t) when ``slow`` is consistently slower, else None."""
    per_rank = [dict(zip(f.step_numbers, f.own_ms_by_step, strict=False)) for f in others]
    mine = dict(zip(slow.step_numbers, slow.own_ms_by_step, strict=False))
    shared = [n for n in mine if all(n in theirs for theirs in per_rank)]
    if len(shared) < MIN_STEPS:
        return None
    gaps = [mine[n] - statistics.median(theirs[n] for theirs in per_rank) for n in shared]
    centre = statistics.median(gaps)
    mad = statistics.median(abs(g - centre) for g in gaps)
    spread = 1.4826 * max(mad, 0.01 * step_ms) / len(gaps) ** 0.5
    t = centre / spread
    return (len(shared), t) if t >= MIN_T else None


def _cause(slow: RankFigures, others: list[RankFigures], excess: float) -> str | None:
    """What the straggler's own figures show: an input stall, throttling, another host or GPU."""
    input_gap = slow.input_wait_ms - statistics.median(f.input_wait_ms for f in others)
    if input_gap >= 0.5 * excess:
        return f"input stall: its DataLoader waits {input_gap:.0f} ms per step more"
    if slow.throttled and not any(f.throttled for f in others):
        return "its GPU was throttled"
    hosts = Counter(f.host for f in others if f.host)
    if slow.host and hosts and slow.host not in hosts:
        return f"a different host ({slow.host})"
    devices = Counter(f.device for f in others if f.device)
    if slow.device and devices and slow.device not in devices:
        return f"a different GPU ({slow.device})"
    return None

"""Records for the ``torchdiag diff`` tests: noisy live step series, as training shows them."""

from __future__ import annotations

import random

from torchdiag.analyze.registry import Analysis
from torchdiag.record import (
    Environment,
    LoaderInfo,
    ProfilerWindow,
    RunRecord,
    StepSeries,
    TraceSummary,
)


def noisy_steps(n: int, median_ms: float, seed: int, *, spread: float = 0.05) -> list[float]:
    """Step times as training shows them: log-normal jitter plus a rare slow step (a stall)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        t = median_ms * rng.lognormvariate(0.0, spread)
        if rng.random() < 0.03:
            t *= rng.uniform(1.5, 3.0)
        out.append(t)
    return out


def live_record(
    walls: list[float],
    *,
    name: str = "run",
    batch: int | None = 32,
    profiled: set[int] = frozenset(),  # type: ignore[assignment]
    counts: list[int] | None = None,
    summary: TraceSummary | None = None,
) -> RunRecord:
    """A live record with one row per step (or ``counts`` steps per row)."""
    counts = counts or [1] * len(walls)
    first = [sum(counts[:i]) for i in range(len(walls))]
    steps = StepSeries(
        detection="optimizer",
        count=sum(counts),
        total_wall_s=sum(w * c for w, c in zip(walls, counts, strict=True)) / 1000,
        first_step=first,
        steps=counts,
        start_s=[0.0] * len(walls),
        wall_ms=walls,
        input_wait_ms=[0.0] * len(walls),
        max_wall_ms=walls,
        profiled=[i in profiled for i in range(len(walls))],
    )
    loaders = [LoaderInfo(loader_id=0, batch_size=batch, batches=len(walls))] if batch else []
    profiler = ProfilerWindow(first_step=1, steps=3, summary=summary) if summary else None
    return RunRecord(
        name=name, steps=steps, environment=Environment(loaders=loaders), profiler=profiler
    )


NO_FINDINGS = Analysis(findings=[], skipped=[])

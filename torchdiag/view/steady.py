"""Steady-state step figures that several rules share.

Rules judge the steps a user's training normally runs: steps inside the profiler window are slowed
by the profiler (2-3x on the reference H200 traces) and the first step pays one-off costs (worker
start-up, cuDNN autotuning, compilation), so both are left out whenever other steps remain.
The tokens ``model.generate()`` produced in those steps give the run's tokens per second.
"""

from __future__ import annotations

from dataclasses import dataclass

from torchdiag.record import RunRecord, StepSeries


@dataclass(frozen=True)
class SteadySteps:
    """Totals over the steady-state steps of a record."""

    steps: int
    wall_s: float
    input_wait_s: float
    excluded: str
    # Tokens model.generate() produced in these steps; None where no step counted any.
    tokens: int | None = None

    @property
    def input_wait_share(self) -> float:
        """Fraction of step time spent blocked on the next batch."""
        return self.input_wait_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def mean_step_ms(self) -> float:
        """Mean wall time of a steady-state step."""
        return self.wall_s / self.steps * 1e3 if self.steps else 0.0

    @property
    def tokens_per_s(self) -> float | None:
        """Generated tokens per second of these steps' wall time (a step without a
        ``generate()`` call adds its time and no tokens); ``None`` without token counts."""
        return self.tokens / self.wall_s if self.tokens is not None and self.wall_s > 0 else None


def steady_steps(record: RunRecord) -> SteadySteps:
    """Sum the step rows that are neither the first step nor profiled (fall back gracefully)."""
    s = record.steps
    rows = range(len(s.steps))
    keep = [i for i in rows if not s.profiled[i] and s.first_step[i] > 0]
    excluded = "first step and profiled steps excluded"
    if not keep:
        keep = [i for i in rows if s.first_step[i] > 0] or list(rows)
        excluded = "first step excluded" if len(keep) < len(s.steps) else "all steps used"
    steps = sum(s.steps[i] for i in keep)
    wall = sum(s.wall_ms[i] * s.steps[i] for i in keep) / 1e3
    wait = sum(s.input_wait_ms[i] * s.steps[i] for i in keep) / 1e3
    return SteadySteps(
        steps=steps, wall_s=wall, input_wait_s=wait, excluded=excluded, tokens=_tokens(s, keep)
    )


def _tokens(s: StepSeries, keep: list[int]) -> int | None:
    """Tokens generated in the rows ``keep`` (a row holds its steps' total), ``None`` where no
    kept row counted any (or the record has no token column)."""
    if len(s.tokens) != len(s.steps):
        return None
    counted = [t for i in keep if (t := s.tokens[i]) is not None]
    return sum(counted) if counted else None

"""The steady state of a run: which step rows describe it, and their totals.

Rules, the percentiles of an inference run and ``diff`` judge the steps a user's job normally
runs. Steps inside the profiler window are slowed by the profiler (2-3x on the reference H200
traces), and the first steps pay one-off costs (worker start-up, allocation, cuDNN autotuning,
compilation). So the profiled steps and the warm-up are left out whenever other steps remain.
The warm-up is the first step and any steps right after it that are still outliers against the
rest of the run (:func:`torchdiag.view.step_rows.outlier_limit`, the step-variance rule's test):
a compiled model's recompiles or cuDNN's autotuning of a second input shape.
The tokens ``model.generate()`` produced in those steps give the run's tokens per second.
"""

from __future__ import annotations

from dataclasses import dataclass

from torchdiag.record import RunRecord, StepSeries
from torchdiag.view.numbers import finite
from torchdiag.view.step_rows import outlier_limit

# The outlier test needs a few steady steps to say what "steady" is.
MIN_STEADY_FOR_WARMUP = 5


@dataclass(frozen=True)
class SteadyRows:
    """The rows of ``record.steps`` that describe the steady state (``rows``: indices), the step
    numbers of the warm-up rows left out (``warmup``), and what was left out, in words."""

    rows: tuple[int, ...]
    warmup: tuple[int, ...]
    excluded: str


@dataclass(frozen=True)
class SteadySteps:
    """Totals over the steady-state steps of a record."""

    steps: int
    wall_s: float
    input_wait_s: float
    excluded: str
    # Tokens model.generate() produced in these steps; None where no step counted any.
    tokens: int | None = None
    # Mean step (ms) of each steady row: their spread gives the mean step's interval.
    row_step_ms: tuple[float, ...] = ()

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


def steady_rows(record: RunRecord) -> SteadyRows:
    """The step rows that are neither warm-up nor profiled (falling back gracefully: without
    un-profiled rows, every row past the warm-up; without those, every row)."""
    s = record.steps
    count = min(len(s.wall_ms), len(s.steps), len(s.first_step), len(s.profiled))
    valid = [i for i in range(count) if s.steps[i] > 0 and finite(s.wall_ms[i])]
    later = [i for i in valid if s.first_step[i] > 0]
    candidates = [i for i in later if not s.profiled[i]]
    warm = _warmup_rows(record, candidates)
    keep = [i for i in candidates if i not in warm]
    if keep:
        named = _named(record, warm)
        return SteadyRows(tuple(keep), named, f"{_warmup_words(named)} and profiled steps excluded")
    keep = later or valid
    excluded = "first step excluded" if len(keep) < len(valid) else "all steps used"
    first = tuple(s.first_step[i] for i in valid if s.first_step[i] == 0)
    return SteadyRows(tuple(keep), first if len(keep) < len(valid) else (), excluded)


def _warmup_rows(record: RunRecord, candidates: list[int]) -> set[int]:
    """The candidate rows right after the first step that are still outliers against the rest
    (at most half of them: a run that only slows down has no warm-up to speak of)."""
    s = record.steps
    if len(candidates) < MIN_STEADY_FOR_WARMUP:
        return set()
    limit = outlier_limit([s.wall_ms[i] for i in candidates])
    warm: set[int] = set()
    for i in candidates[: len(candidates) // 2]:
        if s.wall_ms[i] <= limit:
            break
        warm.add(i)
    return warm


def _named(record: RunRecord, warm: set[int]) -> tuple[int, ...]:
    """Step numbers of the first step and the warm-up rows after it."""
    s = record.steps
    count = min(len(s.first_step), len(s.steps))
    first = [s.first_step[i] for i in range(count) if s.first_step[i] == 0 and s.steps[i] > 0]
    return tuple(first + sorted(s.first_step[i] for i in warm))


def _warmup_words(numbers: tuple[int, ...]) -> str:
    if len(numbers) <= 1:
        return "first step"
    return f"warm-up steps {numbers[0]}–{numbers[-1]}"


def steady_steps(record: RunRecord, steady: SteadyRows) -> SteadySteps:
    """Totals over the ``steady`` rows of ``record``."""
    s = record.steps
    rows = steady.rows
    steps = sum(s.steps[i] for i in rows)
    wall = sum(s.wall_ms[i] * s.steps[i] for i in rows) / 1e3
    wait = sum(s.input_wait_ms[i] * s.steps[i] for i in rows if i < len(s.input_wait_ms)) / 1e3
    return SteadySteps(
        steps=steps,
        wall_s=wall,
        input_wait_s=wait,
        excluded=steady.excluded,
        tokens=_tokens(s, rows),
        row_step_ms=tuple(s.wall_ms[i] for i in rows),
    )


def _tokens(s: StepSeries, keep: tuple[int, ...]) -> int | None:
    """Tokens generated in the rows ``keep`` (a row holds its steps' total), ``None`` where no
    kept row counted any (or the record has no token column)."""
    if len(s.tokens) != len(s.steps):
        return None
    counted = [t for i in keep if (t := s.tokens[i]) is not None]
    return sum(counted) if counted else None

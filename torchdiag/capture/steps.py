"""Step timing: where steps begin and end, and how long each one waited for input.

A *step* is one optimizer update. Steps are detected from a global optimizer step post-hook, so
gradient accumulation (several forwards per update) counts updates, not forwards. When several
optimizers step in one iteration (GANs, per-module optimizers) only the first optimizer seen marks
boundaries. Calling ``run.step()`` switches to manual marking for the rest of the run.

Every step is timed, not only the profiled ones, and stored in a bounded :class:`StepSeries`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from torchdiag.record import StepSeries

Detection = Literal["optimizer", "manual", "profiler", "none"]

_ROW_FIELDS = (
    "first_step",
    "steps",
    "start_s",
    "wall_ms",
    "input_wait_ms",
    "max_wall_ms",
    "profiled",
)


class StepTimer:
    """Times steps and the input wait inside each, keeping at most ``max_rows`` rows.

    Not thread-safe by design: boundaries and waits are reported from the training thread.
    ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        *,
        max_rows: int = 2048,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if max_rows < 2:
            raise ValueError("max_rows must be at least 2")
        self._clock = clock
        self._t0 = clock()
        self._step_start = self._t0
        self._wait_in_step = 0.0
        self._series = StepSeries(max_rows=max_rows)
        self._steps_per_row = 1
        self._pending: list[tuple[float, float, float, bool]] = []
        self.detection: Detection = "none"
        self.completed = 0
        self.profiling = False

    @property
    def t0(self) -> float:
        """Clock reading when timing started (the run's time origin)."""
        return self._t0

    def add_input_wait(self, seconds: float) -> None:
        """Account ``seconds`` spent blocked on the next batch in the current step."""
        self._wait_in_step += seconds

    def boundary(self, detection: Detection) -> int:
        """Close the current step; returns the number of completed steps."""
        if self.detection == "none":
            self.detection = detection
        now = self._clock()
        wall = now - self._step_start
        # A wait can straddle a boundary when the loader is advanced before the optimizer step;
        # never report more waiting than the step lasted.
        wait = min(self._wait_in_step, wall)
        self._add(self._step_start - self._t0, wall, wait, self.profiling)
        self._step_start = now
        self._wait_in_step = 0.0
        self.completed += 1
        return self.completed

    def restart_detection(self) -> None:
        """Forget the steps detected so far and fold their time into the open step.

        Used when ``run.step()`` is first called after optimizer steps were already counted: the
        user's own boundaries are the truth, so earlier automatic ones must not be counted too.
        """
        waits = self._series.total_input_wait_s + sum(r[2] for r in self._pending)
        self._series = StepSeries(max_rows=self._series.max_rows)
        self._pending = []
        self._steps_per_row = 1
        self._step_start = self._t0
        self._wait_in_step += waits
        self.completed = 0
        self.detection = "none"

    def exclude_pause(self, seconds: float) -> None:
        """Remove torchdiag's own pause (e.g. writing the profiler trace) from the current step."""
        self._step_start += seconds

    def _add(self, start: float, wall: float, wait: float, profiled: bool) -> None:
        s = self._series
        s.count += 1
        s.total_wall_s += wall
        s.total_input_wait_s += wait
        self._pending.append((start, wall, wait, profiled))
        if len(self._pending) == self._steps_per_row:
            self._flush_pending()

    def _flush_pending(self) -> None:
        if not self._pending:
            return
        _append_row(self._series, self._pending, self._series.count)
        self._pending = []
        if len(self._series.steps) >= self._series.max_rows:
            self._halve()

    def _halve(self) -> None:
        """Merge adjacent rows pairwise and double the steps per future row."""
        s = self._series
        merged = StepSeries(
            detection=s.detection,
            count=s.count,
            total_wall_s=s.total_wall_s,
            total_input_wait_s=s.total_input_wait_s,
            max_rows=s.max_rows,
        )
        for i in range(0, len(s.steps) - 1, 2):
            n1, n2 = s.steps[i], s.steps[i + 1]
            n = n1 + n2
            merged.first_step.append(s.first_step[i])
            merged.steps.append(n)
            merged.start_s.append(s.start_s[i])
            merged.wall_ms.append((s.wall_ms[i] * n1 + s.wall_ms[i + 1] * n2) / n)
            merged.input_wait_ms.append(
                (s.input_wait_ms[i] * n1 + s.input_wait_ms[i + 1] * n2) / n
            )
            merged.max_wall_ms.append(max(s.max_wall_ms[i], s.max_wall_ms[i + 1]))
            merged.profiled.append(s.profiled[i] or s.profiled[i + 1])
        if len(s.steps) % 2:  # an odd max_rows leaves one row unpaired: keep it as it is
            for name in _ROW_FIELDS:
                getattr(merged, name).append(getattr(s, name)[-1])
        self._series = merged
        self._steps_per_row *= 2

    def series(self) -> StepSeries:
        """A snapshot of the series so far, with a partial last row (the open step excluded)."""
        s = self._series
        out = StepSeries(
            detection=self.detection,
            count=s.count,
            total_wall_s=s.total_wall_s,
            total_input_wait_s=s.total_input_wait_s,
            max_rows=s.max_rows,
            first_step=list(s.first_step),
            steps=list(s.steps),
            start_s=list(s.start_s),
            wall_ms=list(s.wall_ms),
            input_wait_ms=list(s.input_wait_ms),
            max_wall_ms=list(s.max_wall_ms),
            profiled=list(s.profiled),
        )
        if self._pending:
            _append_row(out, self._pending, s.count)
        return out


def _append_row(
    series: StepSeries, rows: list[tuple[float, float, float, bool]], count: int
) -> None:
    """Append one row averaging ``rows`` (start, wall s, wait s, profiled) ending at ``count``."""
    n = len(rows)
    series.first_step.append(count - n)
    series.steps.append(n)
    series.start_s.append(rows[0][0])
    series.wall_ms.append(sum(r[1] for r in rows) / n * 1e3)
    series.input_wait_ms.append(sum(r[2] for r in rows) / n * 1e3)
    series.max_wall_ms.append(max(r[1] for r in rows) * 1e3)
    series.profiled.append(any(r[3] for r in rows))

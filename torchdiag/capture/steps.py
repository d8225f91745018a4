"""Step timing: where steps begin and end, and how long each one waited for input.

A *step* is one optimizer update. Steps are detected from a global optimizer step post-hook, so
gradient accumulation (several forwards per update) counts updates, not forwards. When several
optimizers step in one iteration (GANs, per-module optimizers) only the first optimizer seen marks
boundaries. Calling ``run.step()`` switches to manual marking for the rest of the run.

A run with no optimizer step (inference, serving) counts one step per call of its model (see
:mod:`torchdiag.capture.forward_watch`): detection ``"forward"``, until an optimizer step shows
the run trains after all. A ``model.generate()`` call (transformers) is one call, however many
forwards it makes (see :mod:`torchdiag.capture.generate_watch`), and each step keeps the tokens
generated in it.

Every step is timed, not only the profiled ones, and stored in a bounded :class:`StepSeries`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from torchdiag.capture.series_buffer import Merge, SeriesBuffer
from torchdiag.record import StepDetection, StepSeries

Detection = StepDetection


_COLUMNS = {
    "first_step": Merge.FIRST,
    "start_s": Merge.FIRST,
    "wall_ms": Merge.MEAN,
    "input_wait_ms": Merge.MEAN,
    "max_wall_ms": Merge.MAX,
    "profiled": Merge.BIT_OR,
    "tokens": Merge.SUM,
}


class StepTimer:
    """Times steps and the input wait inside each, keeping at most ``max_rows`` rows.

    Boundaries and waits are reported from the training thread; :meth:`series` may be called
    from any thread while steps are timed (a checkpoint, a live panel): the rows and totals it
    reads change together under a lock. ``clock`` is injectable for tests; ``limit`` is the run's
    step limit, if it has one (the series carries it).
    """

    def __init__(
        self,
        *,
        max_rows: int = 2048,
        clock: Callable[[], float] = time.perf_counter,
        limit: int | None = None,
    ) -> None:
        self._clock = clock
        # The run's step limit (max_steps), kept in the series so progress can be told from it.
        self._limit = limit
        self._t0 = clock()
        self._max_rows = max_rows
        # Reentrant: a signal handler (SIGTERM) that ends the block runs on the training thread,
        # possibly in the middle of a boundary, and closes the last step itself.
        self._lock = threading.RLock()
        self._rows = SeriesBuffer(_COLUMNS, max_rows)
        self._step_start = self._t0
        self._wait_in_step = 0.0
        self._total_wall = 0.0
        self._total_wait = 0.0
        # Tokens generated in the open step (None: none counted) and whether a count was unknown.
        self._tokens_in_step: int | None = None
        self._tokens_unknown = False
        self._total_tokens = 0
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

    def add_tokens(self, count: int | None) -> None:
        """Account ``count`` tokens generated in the current step (``None``: a ``generate()``
        call whose count is unknown, which leaves the step's count unknown)."""
        if count is None:
            self._tokens_unknown = True
        else:
            self._tokens_in_step = (self._tokens_in_step or 0) + count

    def boundary(self, detection: Detection, at: float | None = None) -> int:
        """Close the current step (at clock reading ``at``, default now); returns the number of
        completed steps. ``at`` lets a boundary be confirmed after the moment it marks."""
        if self.detection == "none":
            self.detection = detection
        now = self._clock() if at is None else at
        wall = now - self._step_start
        # A wait can straddle a boundary when the loader is advanced before the optimizer step;
        # never report more waiting than the step lasted.
        wait = min(self._wait_in_step, wall)
        tokens = None if self._tokens_unknown else self._tokens_in_step
        with self._lock:
            self._rows.add(
                self._step_start - self._t0,
                {
                    "first_step": self.completed,
                    "start_s": self._step_start - self._t0,
                    "wall_ms": wall * 1e3,
                    "input_wait_ms": wait * 1e3,
                    "max_wall_ms": wall * 1e3,
                    "profiled": self.profiling,
                    "tokens": tokens,
                },
            )
            self._total_wall += wall
            self._total_wait += wait
            self._total_tokens += tokens or 0
            self._step_start = now
            self._wait_in_step = 0.0
            self._tokens_in_step, self._tokens_unknown = None, False
            self.completed += 1
            return self.completed

    def restart_detection(self) -> None:
        """Forget the steps detected so far and fold their time into the open step.

        Used when ``run.step()`` is first called after optimizer steps were already counted, or
        when an optimizer step follows steps counted on model calls: the user's own boundaries
        (or the optimizer's updates) are the truth, so earlier ones must not be counted too.
        """
        with self._lock:
            self._wait_in_step += self._total_wait
            if self._total_tokens:
                self._tokens_in_step = (self._tokens_in_step or 0) + self._total_tokens
            self._rows = SeriesBuffer(_COLUMNS, self._max_rows)
            self._total_wall = self._total_wait = 0.0
            self._total_tokens = 0
            self._step_start = self._t0
            self.completed = 0
            self.detection = "none"

    def now(self) -> float:
        """The timer's clock reading (for a boundary confirmed later, see :meth:`boundary`)."""
        return self._clock()

    def exclude_pause(self, seconds: float) -> None:
        """Remove torchdiag's own pause (e.g. writing the profiler trace) from the current step."""
        self._step_start += seconds

    def series(self) -> StepSeries:
        """A snapshot of the series so far (the open step excluded)."""
        with self._lock:
            rows = self._rows
            tokens = rows.column("tokens")
            return StepSeries(
                detection=self.detection,
                count=self.completed,
                total_wall_s=self._total_wall,
                total_input_wait_s=self._total_wait,
                max_rows=rows.max_rows,
                first_step=rows.column("first_step"),
                steps=rows.rows_merged(),
                start_s=rows.column("start_s"),
                wall_ms=rows.column("wall_ms"),
                input_wait_ms=rows.column("input_wait_ms"),
                max_wall_ms=rows.column("max_wall_ms"),
                profiled=[bool(p) for p in rows.column("profiled")],
                # Only a run that generated keeps the column: every other record stays as it was.
                tokens=tokens if any(t is not None for t in tokens) else [],
                limit=self._limit,
            )

"""One training run's capture, driven by a framework's own events.

Both callbacks (Lightning, Hugging Face) do the same thing with different event names: open
``torchdiag.profile()`` when training starts — or, when a capture is already active in the process
(the whole script wrapped in ``torchdiag.profile()``, or the ``torchdiag run`` launcher), mark steps
on that one instead of opening a second —, mark one step each time the trainer's count of
optimizer updates advances, and end the capture with the training's outcome.

Capture never breaks training: a capture that cannot start is reported with a warning and the
training goes on without it; the user's exception is only looked at, never replaced.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from torchdiag.capture.session import Run, active_run, profile

if TYPE_CHECKING:
    from torchdiag.record import RunRecord

RECORD_DIR = "torchdiag"


class ProfileOptions(TypedDict, total=False):
    """The options of :class:`torchdiag.profile` a callback passes on (all but ``output``)."""

    profile_steps: int
    skip_first: int
    sample_interval: float
    trace: bool
    with_stack: bool
    enabled: bool
    name: str | None
    redact: bool


class TrainingCapture:
    """Opens, steps and closes one capture (or joins the active one) for a training loop."""

    def __init__(self, output: str | os.PathLike[str] | None, options: ProfileOptions) -> None:
        # Built now so that bad options fail where the callback is created, not mid-training.
        self._profile = profile(output, **options)
        self._output = output
        self._customised = output is not None or bool(options)
        self._own: Run | None = None
        self._joined: Run | None = None
        self._updates = 0

    @property
    def run(self) -> Run | None:
        """The capture steps are marked on: this one's own, or the active one it joined."""
        return self._own or self._joined

    @property
    def joined(self) -> bool:
        """True while steps go to a capture this one did not open."""
        return self._joined is not None

    def begin(self, default_output: Callable[[], Path], updates: int) -> None:
        """Start capturing; ``updates`` is the trainer's optimizer-update count now (non-zero
        when training resumes from a checkpoint)."""
        if self.run is not None:
            return
        self._updates = updates
        try:
            outer = active_run()
            if outer is not None:
                if self._customised:
                    warnings.warn(
                        "torchdiag: a capture is already active (writing "
                        f"{outer.path}); the callback marks steps on it and its own options "
                        "are not used",
                        stacklevel=3,
                    )
                outer.mark_steps_manually()
                self._joined = outer
                return
            self._profile.output = self._output if self._output is not None else default_output()
            run = self._profile.__enter__()
            # The trainer's events mark the steps: an optimizer step (several with GANs) would
            # otherwise end the first one before the callback hears of it.
            run.mark_steps_manually()
            self._own = run
        except Exception as err:
            warnings.warn(
                f"torchdiag: capture not started ({type(err).__name__}: {err}); training goes on",
                stacklevel=3,
            )

    def mark(self, updates: int) -> None:
        """End a step if the trainer's optimizer-update count advanced since the last mark.

        One mark per event, however far the count moved: a batch that steps two optimizers
        (a GAN) is one step, as it is for ``torchdiag.profile()`` on its own.
        """
        run = self.run
        if run is None or updates <= self._updates:
            return
        self._updates = updates
        run.step()

    def end(self, exc: BaseException | None = None, *, announce: bool = False) -> RunRecord | None:
        """End the capture with the training's outcome (``exc``: the exception it failed with).

        Returns the record written, or ``None`` when this capture joined another (that one
        writes its record when its own block ends) or never started. ``announce`` prints where
        the record went (the main process passes True).
        """
        self._joined = None
        run, self._own = self._own, None
        if run is None:
            return None
        try:
            if exc is None:
                self._profile.__exit__(None, None, None)
            else:
                self._profile.__exit__(type(exc), exc, exc.__traceback__)
        except Exception as err:  # __exit__ guards itself; this is the last line of defence
            warnings.warn(f"torchdiag: ending the capture failed ({err})", stacklevel=3)
            return None
        if announce and run.record is not None:
            _announce(run)
        return run.record


def _announce(run: Run) -> None:
    record = run.record
    assert record is not None
    target = run.path.parent if record.world_size > 1 else run.path
    what = "records of every rank in" if record.world_size > 1 else "record written to"
    print(f"torchdiag: {what} {target} (torchdiag report {target})", file=sys.stderr)

"""The torch.profiler window: a few steps recorded in detail, then summarised by the trace reader.

The window is a pure function of the step count, as torch.profiler's own ``schedule()`` is:
steps ``[0, skip_first - 1)`` run untouched, step ``skip_first - 1`` warms the profiler up (its
first recorded step is always slow, so it is discarded), steps
``[skip_first, skip_first + profile_steps)`` are recorded. The recorded trace is written to disk
and read back with :func:`torchdiag.traces.load.read_trace`, the same reader ``torchdiag report``
uses on imported traces, so live and imported runs are summarised by one code path.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torchdiag.capture.patching import Patches
from torchdiag.files import remove_stale
from torchdiag.record import MemoryCategories, ProfilerWindow

# Temporary traces are named for the process that writes them, so a later run can tell the
# leftovers of a killed process (kill -9 mid-export) from another live run's and remove them.
TEMP_PREFIX = "torchdiag-"
USER_PROFILER = "the user opened torch.profiler inside torchdiag's window, which was stopped"


# torch's memory categoriser builds a data-flow graph of the whole window: about 0.18 ms per
# recorded host event on a 2-core CI machine (docs/performance.md), some 90% of the window's
# export. Above this many events (some 20 s) the run is not paused for it.
CATEGORISE_S_PER_EVENT = 0.18e-3
MAX_CATEGORISED_EVENTS = 100_000


class ProfilerUnavailable(RuntimeError):
    """torch.profiler cannot be used now (another profiler is active, or it failed to start)."""


class ProfilerWindowControl:
    """Starts, steps and stops one torch.profiler window at the right step boundaries."""

    def __init__(
        self,
        *,
        skip_first: int,
        profile_steps: int,
        with_stack: bool,
        trace_path: Path | None,
    ) -> None:
        self.skip_first = max(0, skip_first)
        self.profile_steps = profile_steps
        self.with_stack = with_stack
        self.trace_path = trace_path
        self._warmup = 1 if self.skip_first >= 1 else 0
        self._prof: Any = None
        self._wall_start = 0.0
        self.window: ProfilerWindow | None = None
        self.abandon_reason: str | None = None
        self._patches = Patches()
        # The model and optimizers as the live capture knows them, read when the window ends to
        # correct torch's memory categories (set by the session; None: no correction).
        self.model_state: Callable[[], tuple[Any, list[Any]]] | None = None
        self.memory_error: str | None = None
        self.categories_s = 0.0  # time spent categorising the window's memory
        # True while torchdiag itself drives torch.profiler (its own start and steps).
        self._driving = False

    @property
    def start_step(self) -> int:
        """Completed-step count at which the profiler is started (warm-up included)."""
        return self.skip_first - self._warmup

    @property
    def not_started(self) -> bool:
        """True while the profiler has not been started yet."""
        return self._prof is None and self.window is None

    @property
    def running(self) -> bool:
        """True while torch.profiler is started and not yet stopped."""
        return self._prof is not None

    @property
    def done(self) -> bool:
        """True once the window was recorded (or abandoned)."""
        return self.window is not None

    def covers_step(self, index: int) -> bool:
        """Whether the profiler runs during step ``index`` (0-based; warm-up step included)."""
        if self.profile_steps <= 0 or self.abandon_reason is not None:
            return False
        return self.start_step <= index < self.skip_first + self.profile_steps

    def on_boundary(self, completed: int) -> float:
        """Called after each step; returns seconds spent on torchdiag's own work (export)."""
        if self.done or self.profile_steps <= 0:
            return 0.0
        if self._prof is None:
            if completed == self.start_step:
                self._start()
            return 0.0
        if completed >= self.skip_first + self.profile_steps:
            # Stop rather than step: stop() closes the last ProfilerStep annotation, and finish()
            # synchronises the device before the trace is cut.
            return self.finish()
        with self._driven():
            self._prof.step()
        return 0.0

    @contextlib.contextmanager
    def _driven(self) -> Any:
        self._driving = True
        try:
            yield
        finally:
            self._driving = False

    def install(self) -> None:
        """Watch for the user opening their own profiler while this window records.

        Two profilers at once crash torch itself (at export, or at exit): when another one is
        prepared while the window runs, the window is stopped first and recorded as abandoned,
        and the user's profiler goes ahead.
        """
        from torch.autograd import profiler as autograd_profiler

        control = self
        original: Callable[..., Any] = autograd_profiler.profile._prepare_trace

        def _prepare_trace(prof: Any) -> Any:
            if control._prof is not None and not control._driving:
                control.abandon(USER_PROFILER)
            return original(prof)

        self._patches.replace(autograd_profiler.profile, "_prepare_trace", _prepare_trace)

    def uninstall(self) -> None:
        """Remove the watch (safe to call twice)."""
        self._patches.restore()

    def start_now_if_due(self) -> None:
        """Start at block entry when no step is skipped at all."""
        if self.profile_steps > 0 and self.start_step == 0 and self._prof is None:
            self._start()

    def _start(self) -> None:
        import torch
        from torch.profiler import ProfilerActivity, profile, schedule

        if torch.autograd.profiler._is_profiler_enabled:
            raise ProfilerUnavailable("another torch.profiler or autograd profiler is active")
        activities = [ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(ProfilerActivity.CUDA)
        self._prof = profile(
            activities=activities,
            schedule=schedule(wait=0, warmup=self._warmup, active=self.profile_steps, repeat=1),
            record_shapes=True,
            profile_memory=True,
            with_stack=self.with_stack,
        )
        try:
            with self._driven():
                self._prof.start()
        except BaseException as err:
            # A profiler that failed to start is not stepped or stopped later.
            self.abandon(f"{type(err).__name__}: {err}")
            raise
        self._wall_start = time.perf_counter()

    def finish(self) -> float:
        """Stop the profiler (device synchronised first), export, summarise; returns seconds."""
        if self._prof is None or self.done:
            return 0.0
        import torch

        t0 = time.perf_counter()
        wall = t0 - self._wall_start
        prof, self._prof = self._prof, None
        try:
            if torch.cuda.is_available():
                # Kernels still queued belong to the window; without this they are cut off.
                torch.cuda.synchronize()
        finally:
            # Whatever the synchronisation raised (a CUDA error), the profiler is stopped: a
            # profiler left running cannot be stopped by anyone later and crashes at exit.
            with self._driven():
                prof.stop()
        self.window = self._summarise(prof, wall)
        t1 = time.perf_counter()
        self.window.memory_categories = self._memory_categories(prof)
        if self.window.memory_categories is not None:
            self.categories_s = time.perf_counter() - t1
        return time.perf_counter() - t0

    def _memory_categories(self, prof: Any) -> MemoryCategories | None:
        """What filled memory in the window (torch's private categoriser, corrected with the
        model's exact state); None, with ``memory_error`` set, where that fails."""
        from torchdiag.capture import memory_categories as mc

        summary = self.window.summary if self.window is not None else None
        events = summary.host_events if summary is not None else 0
        if events > MAX_CATEGORISED_EVENTS:
            self.memory_error = (
                f"the window recorded {events:,} host events: categorising its memory would "
                f"pause the run for about {events * CATEGORISE_S_PER_EVENT:.0f} s (profile fewer "
                "steps to get it)"
            )
            return None
        try:
            model, optimizers = self.model_state() if self.model_state else (None, [])
            device = mc.training_device(model)
            exact = mc.exact_state(model, optimizers, device) if model or optimizers else None
            return mc.categorise(prof, device, exact)
        except Exception as err:  # private API: never let it break the run
            self.memory_error = f"{type(err).__name__}: {err}"
            return None

    def abandon(self, reason: str) -> None:
        """Stop without summarising (used when the profiler itself failed)."""
        prof, self._prof = self._prof, None
        if prof is not None:
            with contextlib.suppress(Exception):
                prof.stop()
        self.window = ProfilerWindow(steps=0, trace_file=None)
        self.abandon_reason = reason

    def _summarise(self, prof: Any, wall: float) -> ProfilerWindow:
        from torchdiag.traces.load import read_trace

        keep = self.trace_path is not None
        if self.trace_path is not None:
            path = self.trace_path
            path.parent.mkdir(parents=True, exist_ok=True)
        else:
            remove_stale_traces()
            fd, name = tempfile.mkstemp(
                prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=".pt.trace.json"
            )
            os.close(fd)
            path = Path(name)
        try:
            prof.export_chrome_trace(str(path))
            summary = read_trace(path)
        finally:
            if not keep:
                path.unlink(missing_ok=True)
        summary.origin = "torch.profiler window"
        return ProfilerWindow(
            first_step=self.skip_first,
            steps=len(summary.steps) or self.profile_steps,
            wall_s=wall,
            trace_file=path.name if keep else None,
            summary=summary,
        )


def remove_stale_traces(folder: str | None = None) -> int:
    """Delete temporary traces left by torchdiag processes that no longer run; returns how many."""
    return remove_stale(folder or tempfile.gettempdir(), TEMP_PREFIX, ".pt.trace.json")

"""``torchdiag.profile()``: the context manager that captures a training run.

Entering the block installs the step and DataLoader hooks, snapshots the environment and starts
the background sampler; the torch.profiler window opens and closes at step boundaries. Leaving the
block (normally or by an exception) tears everything down and writes ``run.json`` atomically.

Capture never breaks training: each collector that fails is recorded as unavailable with the
reason, the user's exception propagates unchanged, and the record is written regardless.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import signal
import sys
import threading
import time
import traceback
import warnings
import weakref
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import msgspec

from torchdiag.capture.amp_watch import AmpWatch
from torchdiag.capture.checkpoint import DEFAULT_INTERVAL_S as DEFAULT_CHECKPOINT_INTERVAL_S
from torchdiag.capture.checkpoint import MIN_INTERVAL_S as MIN_CHECKPOINT_INTERVAL_S
from torchdiag.capture.checkpoint import CheckpointWriter
from torchdiag.capture.dataloader import DataLoaderWatch
from torchdiag.capture.environment import (
    distributed_info,
    dynamo_counters,
    optimizer_info,
    parameter_info,
    snapshot_environment,
)
from torchdiag.capture.forward_watch import ForwardWatch
from torchdiag.capture.live import LiveThread, make_display
from torchdiag.capture.loss_watch import LossWatch
from torchdiag.capture.out_of_memory import OomObserver, describe, is_out_of_memory
from torchdiag.capture.output_watch import OutputWatch
from torchdiag.capture.profiler_window import ProfilerWindowControl
from torchdiag.capture.record_path import (
    failed_path,
    fallback_path,
    resolve_output,
    stem,
)
from torchdiag.capture.run_status import SIGTERM, StepLimitReached, status_for, unprintable_status
from torchdiag.capture.steps import StepTimer
from torchdiag.record import (
    SCHEMA,
    CollectorStatus,
    DistributedInfo,
    Environment,
    OutOfMemory,
    OutputDigest,
    RunMode,
    RunRecord,
    RunStatus,
    Samples,
    save_record,
)

# Above kineto's highest severity: nothing of its own log is printed (set KINETO_LOG_LEVEL=0 to
# see it all).
QUIET_KINETO_LOG_LEVEL = "6"
_ACTIVE_LOCK = threading.Lock()
_active: Run | None = None

# Sampling faster than this costs training more than it tells (at 1 ms the sampler slowed a
# 2-core training loop by ~45%): shorter intervals are raised to it, with a warning.
MIN_SAMPLE_INTERVAL_S = 0.05


class profile(contextlib.ContextDecorator):
    """Capture a training run and write ``run.json``.

    Use as a context manager (``with torchdiag.profile() as run:``) or as a decorator
    (``@torchdiag.profile()``). Steps are detected from ``optimizer.step()`` or, in a run
    without one (inference), from the calls of the model; call ``run.step()`` to mark them by
    hand instead.

    Args:
        output: Path of the record. ``None`` writes ``torchdiag_runs/<utc-time>-<pid>/run.json``.
            Under torch.distributed each rank writes ``run.rank<R>.json`` into the same directory.
        profile_steps: Steps recorded by torch.profiler (default 5). ``0`` monitors only:
            torch.profiler is never started.
        skip_first: Steps run before the profiler window (default 5); the last of them warms the
            profiler up and is discarded.
        sample_interval: Seconds between background samples of CPU, memory and GPUs (0.5).
        trace: Keep the raw profiler trace, gzipped, beside ``run.json`` (for Perfetto).
        with_stack: Record Python stacks in the profiler window (slower; default off).
        enabled: ``False`` makes the whole thing a no-op.
        name: Name of the run in reports (default: the script's file name).
        redact: Keep the host only as a short hash and hide secret-looking values on the
            command line (default). ``False`` records them as they are.
        max_steps: Stop the run after this many steps: the block ends there (the training code
            inside it is left by an exception the block itself catches), status "completed".
        fixes: Fixes applied from outside the script for the length of the block, by name:
            ``"workers=2"``, ``"amp=bf16"``, ... (see :mod:`torchdiag.capture.fixes`). The record
            says which took effect and what each changed.
        record_loss: Keep the scalar losses ``backward()`` is called on (``record.losses``).
        record_outputs: Keep digests of the model's first outputs (``record.outputs``): what
            ``torchdiag try`` compares on a run without a loss.
        shared: A ``torchdiag.profile()`` entered inside this one (in the profiled script, say)
            joins this run instead of failing: it returns this run, and its own options are not
            used. ``torchdiag run`` profiles scripts this way.
        checkpoint_interval: Seconds between checkpoints of the record while the block runs
            (default 60): it is rewritten atomically with the run so far, state ``running``, so
            that a process killed without warning (``kill -9``, the OOM killer) leaves a record
            of its steps up to the last checkpoint. ``0`` turns checkpoints off.
        live: Show a live panel while the block runs (steps, step time, throughput, input wait,
            GPUs, host CPU and the findings so far), refreshed about once a second from a
            background thread; rank 0 only under torch.distributed. Where stdout is not a
            terminal, one summary line every ``live_log_interval`` seconds instead.
        live_log_interval: Seconds between those summary lines (default 30).
    """

    def __init__(
        self,
        output: str | os.PathLike[str] | None = None,
        *,
        profile_steps: int = 5,
        skip_first: int = 5,
        sample_interval: float = 0.5,
        trace: bool = False,
        with_stack: bool = False,
        enabled: bool = True,
        name: str | None = None,
        redact: bool = True,
        max_steps: int | None = None,
        fixes: Sequence[str] = (),
        record_loss: bool = False,
        record_outputs: bool = False,
        shared: bool = False,
        checkpoint_interval: float = DEFAULT_CHECKPOINT_INTERVAL_S,
        live: bool = False,
        live_log_interval: float = 30.0,
    ) -> None:
        if max_steps is not None and max_steps < 1:
            raise ValueError("max_steps must be >= 1")
        from torchdiag.capture.fixes import parse_fix

        self.fixes = [parse_fix(spec) for spec in fixes]  # a misspelt fix fails here, at once
        if profile_steps < 0 or skip_first < 0:
            raise ValueError("profile_steps and skip_first must be >= 0")
        if not sample_interval > 0:
            raise ValueError("sample_interval must be > 0 seconds")
        if not live_log_interval > 0:
            raise ValueError("live_log_interval must be > 0 seconds")
        if sample_interval < MIN_SAMPLE_INTERVAL_S:
            if os.environ.get("RANK", "0") == "0":  # every rank gets the same: say it once
                warnings.warn(
                    f"torchdiag: sample_interval={sample_interval:g} s raised to "
                    f"{MIN_SAMPLE_INTERVAL_S:g} s (faster sampling slows training)",
                    stacklevel=2,
                )
            sample_interval = MIN_SAMPLE_INTERVAL_S
        self.checkpoint_interval = _checkpoint_interval(checkpoint_interval)
        self.output = output
        self.profile_steps = profile_steps
        self.skip_first = skip_first
        self.sample_interval = sample_interval
        self.trace = trace
        self.with_stack = with_stack
        self.enabled = enabled
        self.name = name
        self.redact = redact
        self.shared = shared
        self.max_steps = max_steps
        self.record_loss = record_loss
        self.record_outputs = record_outputs
        self.live = live
        self.live_log_interval = live_log_interval
        self._run: Run | None = None
        self._joined = False

    def __enter__(self) -> Run:
        global _active
        if not self.enabled:
            self._run = Run(self, disabled=True)
            return self._run
        with _ACTIVE_LOCK:
            if _active is not None and _active.options.shared:
                self._run, self._joined = _active, True
                _say_joined(_active, self.output)
                return _active
            if _active is not None:
                raise RuntimeError(
                    "torchdiag.profile() is already active in this process "
                    f"(writing {_active.path}); nested or concurrent captures are not supported. "
                    "Remove the inner `with torchdiag.profile()` or the decorator."
                )
            run = Run(self)
            _active = run
        self._run = run
        try:
            run._begin()
        except BaseException:
            # Interrupted while setting up (Ctrl-C): nothing installed may stay behind.
            run._teardown()
            run._finish_live(None)
            _release(run)
            raise
        return run

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        run, self._run = self._run, None
        if run is None or run.disabled or self._joined:
            self._joined = False
            return False  # a joined run is ended by the profile() that started it
        stopped = exc_type is not None and issubclass(exc_type, StepLimitReached)
        try:
            if stopped:
                run._end(None, None)
            else:
                run._end(exc_type, exc)
        finally:
            _release(run)
        # The step limit is the block's own exception: it ends here. Never swallow the user's.
        return stopped


def _say_joined(run: Run, output: str | os.PathLike[str] | None) -> None:
    """One line on rank 0: the script's own profile() joined an enclosing shared run."""
    if os.environ.get("RANK", "0") != "0":
        return
    where = f" (its output {os.fspath(output)!r} is not used)" if output is not None else ""
    print(
        f"torchdiag: the script's torchdiag.profile() joins the run already profiling it{where}; "
        f"record: {run.path}",
        file=sys.stderr,
    )


def active_run() -> Run | None:
    """The capture active in this process (``torchdiag.profile()`` entered and not yet left), or
    ``None``. Framework callbacks use it to mark steps on a capture that wraps the whole script
    instead of opening a second one."""
    with _ACTIVE_LOCK:
        return _active


def _release(run: Run) -> None:
    global _active
    with _ACTIVE_LOCK:
        if _active is run:
            _active = None


class Run:
    """The handle returned by ``with torchdiag.profile() as run``.

    ``run.step()`` marks a step by hand; ``run.path`` is where the record is written and
    ``run.record`` holds it once the block has exited; ``run.snapshot()`` is a record of the run
    so far, from any thread (what the checkpoints write).
    """

    def __init__(self, options: profile, *, disabled: bool = False) -> None:
        self.disabled = disabled
        self.options = options
        self.record: RunRecord | None = None
        self.collectors: dict[str, CollectorStatus] = {}
        self._dist = _safe(distributed_info) or DistributedInfo()
        self.started = dt.datetime.now(dt.timezone.utc)
        self.path = resolve_output(options.output, self._dist, self.started)
        self._timer = StepTimer(limit=options.max_steps)
        self._thread_id = threading.get_ident()
        self._manual = False
        self._boundary_optimizer: int | None = None
        self._optimizers: dict[int, tuple[weakref.ref[Any], list[int]]] = {}
        self._hooks: list[Any] = []
        self._loader_watch: DataLoaderWatch | None = None
        self._amp_watch: AmpWatch | None = None
        self._loss_watch: LossWatch | None = None
        self._output_watch = OutputWatch() if options.record_outputs else None
        self._forward_watch: ForwardWatch | None = None
        self._oom_observer: OomObserver | None = None
        # The end of the model's last call, a step boundary once the next call (or the block's
        # end) shows no optimizer step came between: a training step is not cut at its forward.
        self._pending_forward: float | None = None
        self._trains = False
        self._sampler: Any = None
        self._window: ProfilerWindowControl | None = None
        self._environment: Environment | None = None
        self._overhead: dict[str, float] = {}
        self._ended = False
        self._sigterm_previous: Any = None
        self._pending_sigterm: tuple[int, Any, Any] | None = None
        self._other_thread_steps = 0
        self._checkpoints: CheckpointWriter | None = None
        self._live: LiveThread | None = None

    # -- public ------------------------------------------------------------------------------

    def step(self) -> None:
        """Mark the end of a step by hand (switches off detection from optimizer steps)."""
        if self.disabled:
            return
        self.mark_steps_manually()
        self._boundary("manual")

    def mark_steps_manually(self) -> None:
        """Count only the steps marked with :meth:`step` from now on (optimizer steps no longer
        mark them).

        A framework callback calls this before the first step ends: the optimizer hook would
        otherwise close the first step before the callback's own mark does, and count it twice.
        Steps already detected are forgotten (their time folds into the open step) unless the
        profiler window has begun, whose schedule was counted on them.
        """
        if self.disabled or self._manual:
            return
        self._manual = True
        self._pending_forward = None
        window = self._window
        if self._timer.completed and (window is None or window.not_started):
            self._timer.restart_detection()

    @property
    def steps(self) -> int:
        """Steps completed so far."""
        return 0 if self.disabled else self._timer.completed

    def snapshot(self) -> RunRecord:
        """A whole record of the run so far, state ``running``, from any thread.

        Everything the final record holds up to now: the steps completed, the samples, the
        environment, the profiler window once exported, the overhead; ``checkpoint_utc`` is the
        time of the snapshot and ``ended_utc`` is null. Losses and output digests are read from
        the device only when the block ends, so a snapshot has none. Reading never waits on
        training beyond copying the step series. Once the block has ended it returns the final
        record. Raises what building the record raised (a checkpoint records it).
        """
        if self.record is not None:
            return self.record
        now = dt.datetime.now(dt.timezone.utc)
        collectors = dict(self.collectors)
        samples: Samples | None = None
        sampler = self._sampler
        if sampler is not None:
            samples = sampler.snapshot()
            collectors.update(sampler.collectors())
        return self._build_record(RunStatus(state="running"), now, samples, collectors)

    # -- lifecycle -----------------------------------------------------------------------------

    def _begin(self) -> None:
        self._guard("environment", self._snapshot_environment)
        self._guard("steps", self._install_step_hook)
        self._guard("model", self._install_forward_watch)
        self._guard("dataloader", self._install_loader_watch)
        self._guard("amp", self._install_amp_watch)
        if self.options.record_loss:
            self._guard("loss", self._install_loss_watch)
        if self.options.fixes:
            self._guard("fixes", self._install_fixes)
        self._guard("sampler", self._start_sampler)
        self._guard("profiler", self._prepare_profiler)
        self._guard("signals", self._install_sigterm)
        self._install_oom_observer()
        if self.options.checkpoint_interval > 0:
            self._guard("checkpoint", self._start_checkpoints)
        if self.options.live:
            self._guard("live", self._start_live)  # last: its first frame sees the rest set up

    def _end(self, exc_type: type[BaseException] | None, exc: BaseException | None) -> None:
        """Tear everything down and write the record; runs once, whatever fails on the way."""
        if self._ended:
            return
        self._ended = True
        status = _safe(lambda: status_for(exc_type, exc)) or unprintable_status(exc_type)
        if status.state == "failed" and exc is not None:
            # Before the teardown: whether the profiler window was recording, and the
            # observer's figures, are read while they still stand.
            status.out_of_memory = _safe(lambda: self._out_of_memory(exc))
        self._guard("steps", self._close_forward_step)
        ended = dt.datetime.now(dt.timezone.utc)
        samples = self._teardown(restore_signals=False)
        record = _safe(lambda: self._build_record(status, ended, samples, self.collectors))
        if record is None:  # building failed: still leave a record of the run's outcome
            record = self._outcome(status, ended, self.collectors)
            record.collectors["record"] = CollectorStatus(
                available=False, reason="building the record failed"
            )
        self.record = record
        self._finish_live(record)
        self._save(record)
        # Only now: a SIGTERM that came while the record was being written waited for it.
        _safe(self._restore_sigterm)
        pending, self._pending_sigterm = self._pending_sigterm, None
        if pending is not None:
            _release(self)
            self._deliver(*pending)

    def _teardown(self, *, restore_signals: bool = True) -> Any:
        """Stop the window, the sampler and every hook; returns the sampler's series (or None).

        Each part is guarded on its own and none is skipped when another fails: a profiler,
        thread or patch left behind would outlive the block (and a running profiler crashes the
        process at exit).
        """
        # First: the final record must not be overwritten by a checkpoint still in flight.
        checkpoints = self._checkpoints
        if checkpoints is not None:
            _safe(checkpoints.stop)
        # Nor may the live view take snapshots while the parts it reads are taken down.
        self._stop_live()
        window = self._window
        if window is not None:
            if window.running:
                # The block ended inside the window: keep what was recorded.
                self._guard("profiler", self._finish_window)
                if window.running:
                    _safe(lambda: window.abandon("the window could not be finished"))
            _safe(window.uninstall)
            if window.memory_error:
                self.collectors["memory_categories"] = CollectorStatus(
                    available=False, reason=window.memory_error
                )
            if window.abandon_reason:
                self.collectors["profiler"] = CollectorStatus(
                    available=False, reason=window.abandon_reason
                )
        samples = None
        if self._sampler is not None:
            samples = _safe(self._sampler.stop)
            self.collectors.update(_safe(self._sampler.collectors) or {})
        for hook in self._hooks:
            _safe(hook.remove)
        self._hooks = []
        for fix in reversed(self.options.fixes):  # patches undone in the reverse order
            _safe(fix.uninstall)
        forward = self._forward_watch
        if forward is not None:
            _safe(forward.uninstall)
            if forward.error is not None:
                self.collectors["model"] = CollectorStatus(available=False, reason=forward.error)
        for watch in (self._loss_watch, self._loader_watch, self._amp_watch, self._oom_observer):
            if watch is not None:
                _safe(watch.uninstall)
        if restore_signals:
            _safe(self._restore_sigterm)
        return samples

    def _save(self, record: RunRecord) -> None:
        """Write the record; where the output cannot be written, to a named fallback."""
        try:
            save_record(record, self.path)
            return
        except Exception as err:  # a full disk must not turn into a training failure
            first = err
        fallback = fallback_path(self.path)
        try:
            record.collectors["record"] = CollectorStatus(
                available=False, reason=f"could not write {self.path}: {first}"
            )
            save_record(record, fallback)
            self.path = fallback
            warnings.warn(
                f"torchdiag could not write {failed_path(first)}; record written to {fallback}",
                stacklevel=4,
            )
        except Exception as err:
            warnings.warn(
                f"torchdiag could not write the record ({first}; fallback {fallback}: {err})",
                stacklevel=4,
            )

    # -- signals -------------------------------------------------------------------------------

    def _install_sigterm(self) -> None:
        """Write the record as ``interrupted`` on SIGTERM (preemption, ``kill``, time limits).

        The previous handler is kept: after the record is written it runs, or, where there was
        none, the signal does what it would have done (the process ends as killed by SIGTERM).
        Only the main thread can install handlers; elsewhere this collector says so.
        """
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("not in the main thread: SIGTERM is not caught")
        self._sigterm_previous = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _restore_sigterm(self) -> None:
        previous, self._sigterm_previous = self._sigterm_previous, None
        if previous is not None and signal.getsignal(signal.SIGTERM) == self._on_sigterm:
            signal.signal(signal.SIGTERM, previous)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        previous = self._sigterm_previous
        if previous == signal.SIG_IGN:
            return  # the process ignores SIGTERM: so does the capture
        if self._ended:
            # The block is already ending (an error in another rank reached this one first):
            # the record is being written; the signal is delivered once it is.
            self._pending_sigterm = (signum, frame, previous)
            return
        self._end(SIGTERM, SIGTERM("the process received SIGTERM"))
        _release(self)
        self._deliver(signum, frame, previous)

    @staticmethod
    def _deliver(signum: int, frame: Any, previous: Any) -> None:
        """Do what the signal would have done without torchdiag."""
        if callable(previous):
            previous(signum, frame)
            return
        # The default action: end the process as killed by the signal.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    # -- collectors ----------------------------------------------------------------------------

    def _guard(self, name: str, fn: Any) -> None:
        try:
            fn()
            self.collectors.setdefault(name, CollectorStatus(available=True))
        except Exception as err:
            self.collectors[name] = CollectorStatus(
                available=False, reason=f"{type(err).__name__}: {err}"
            )

    def _snapshot_environment(self) -> None:
        from torchdiag._version import __version__

        self._environment = snapshot_environment(__version__, redact=self.options.redact)

    def _install_step_hook(self) -> None:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self._hooks.append(register_optimizer_step_post_hook(self._on_optimizer_step))

    def _install_forward_watch(self) -> None:
        output = self._output_watch
        watch = ForwardWatch(
            self._on_forward_start,
            self._on_forward_end,
            on_output=output.keep if output is not None else None,
            on_tokens=self._on_tokens,
        )
        watch.install()
        self._forward_watch = watch

    def _install_loader_watch(self) -> None:
        watch = DataLoaderWatch(self._timer.add_input_wait, thread_id=self._thread_id)
        watch.install()
        self._loader_watch = watch

    def _install_loss_watch(self) -> None:
        self._loss_watch = LossWatch()
        self._loss_watch.install()

    def _install_fixes(self) -> None:
        for fix in self.options.fixes:
            fix.install()

    def _install_oom_observer(self) -> None:
        """Collector ``oom_observer``, named only when CUDA is here and it failed: without
        CUDA there is nothing to observe and nothing to say."""
        observer = OomObserver()
        try:
            if observer.install():
                self._oom_observer = observer
        except Exception as err:
            self.collectors["oom_observer"] = CollectorStatus(
                available=False, reason=f"{type(err).__name__}: {err}"
            )

    def _start_live(self) -> None:
        """The live view's thread (``profile(live=True)``), on rank 0 only: every rank drawing
        its own panel on one terminal would garble it."""
        if self._dist.rank != 0:
            self.collectors["live"] = CollectorStatus(
                available=False, reason=f"shown by rank 0 only (this is rank {self._dist.rank})"
            )
            return
        display = make_display(self.options.live_log_interval)
        self._live = LiveThread(self.snapshot, display)
        self._live.start()

    def _stop_live(self) -> None:
        """Stop the live view's thread (its last frame waits for the final record), and note
        what it cost and why it stopped, if it failed."""
        live = self._live
        if live is None:
            return
        live.stop()
        self._overhead["live_cpu_s"] = live.cpu_s
        if live.error is not None:
            self.collectors["live"] = CollectorStatus(available=False, reason=live.error)

    def _finish_live(self, record: RunRecord | None) -> None:
        """The live view's final frame (the record as written), then the terminal released."""
        live, self._live = self._live, None
        if live is None:
            return
        try:
            live.finish(record)
        except Exception as err:
            status = CollectorStatus(available=False, reason=f"{type(err).__name__}: {err}")
            self.collectors["live"] = status
            if record is not None:
                record.collectors["live"] = status

    def _out_of_memory(self, exc: BaseException) -> OutOfMemory | None:
        """The record's account of an allocation failure that ended the block, else None."""
        if not is_out_of_memory(type(exc), str(exc)):
            return None
        observer, window = self._oom_observer, self._window
        return describe(
            exc,
            observation=observer.observation if observer is not None else None,
            redact=self.options.redact,
            step=self._timer.completed + 1,
            in_window=window is not None and window.running,
        )

    def _install_amp_watch(self) -> None:
        watch = AmpWatch()
        watch.install()
        self._amp_watch = watch

    def _start_sampler(self) -> None:
        from torchdiag.capture.sampler import create_sampler

        self._sampler = create_sampler(
            self.options.sample_interval, clock=time.perf_counter, t0=self._timer.t0
        )
        self._sampler.start()

    def _start_checkpoints(self) -> None:
        self._checkpoints = CheckpointWriter(
            self.snapshot, self.path, self.options.checkpoint_interval
        )
        self._checkpoints.start()

    def _prepare_profiler(self) -> None:
        if self.options.profile_steps <= 0:
            self.collectors["profiler"] = CollectorStatus(
                available=False, reason="disabled: profile_steps=0 (monitor-only mode)"
            )
            return
        # Kineto, the profiler's C++ side, logs its own start/stop ("USDT: ... profiler_start") and,
        # on a machine without a CUDA driver, "gpuGetDeviceCount failed with code 35": noise to
        # a user reading torchdiag's output. Quiet unless the user asked for its log level.
        os.environ.setdefault("KINETO_LOG_LEVEL", QUIET_KINETO_LOG_LEVEL)
        trace_path = None
        if self.options.trace:
            trace_path = self.path.with_name(stem(self.path) + ".pt.trace.json.gz")
        self._window = ProfilerWindowControl(
            skip_first=self.options.skip_first,
            profile_steps=self.options.profile_steps,
            with_stack=self.options.with_stack,
            trace_path=trace_path,
        )
        self._window.model_state = self._model_state
        self._window.install()
        self._window.start_now_if_due()
        self._timer.profiling = self._window.covers_step(0)

    def _model_state(self) -> tuple[Any, list[Any]]:
        """The model (None until found) and the optimizers still alive."""
        forward = self._forward_watch
        model = forward.model if forward is not None else None
        optimizers = [ref() for ref, _ in self._optimizers.values()]
        return model, [opt for opt in optimizers if opt is not None]

    def _finish_window(self) -> None:
        assert self._window is not None
        self._overhead["profiler_export_s"] = self._window.finish()

    # -- steps ---------------------------------------------------------------------------------

    def _on_forward_start(self) -> None:
        """The model is called again: the previous call's end was a step boundary."""
        pending = self._pending_forward
        if pending is None or threading.get_ident() != self._thread_id:
            return
        self._pending_forward = None
        try:
            self._boundary("forward", at=pending)
        except StepLimitReached:
            raise  # max_steps: the block ends here, as it would in optimizer.step()
        except Exception as err:  # a boundary must never fail the model's call
            self.collectors["steps"] = CollectorStatus(available=False, reason=repr(err))

    def _on_forward_end(self) -> None:
        if self._manual or self._trains or threading.get_ident() != self._thread_id:
            return
        self._pending_forward = self._timer.now()

    def _on_tokens(self, tokens: int | None) -> None:
        """A ``generate()`` call ended: its tokens belong to the step now open (the call's own
        step, in an inference loop)."""
        if threading.get_ident() == self._thread_id:
            self._timer.add_tokens(tokens)

    def _close_forward_step(self) -> None:
        """The block ends: the model's last call closes the last step."""
        pending, self._pending_forward = self._pending_forward, None
        if pending is not None:
            with contextlib.suppress(StepLimitReached):
                self._boundary("forward", at=pending)

    def _leave_forward_steps(self) -> None:
        """An optimizer step: the run trains, so steps are its updates, not the model's calls.

        As when ``run.step()`` takes over, steps already counted on calls are folded into the
        open step unless the profiler window has begun, whose schedule was counted on them.
        """
        self._trains = True
        self._pending_forward = None
        if self._timer.detection != "forward":
            return
        window = self._window
        if window is None or window.not_started:
            self._timer.restart_detection()
        else:
            self._timer.detection = "optimizer"

    def _on_optimizer_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        try:
            if not self._trains:
                self._leave_forward_steps()
            key = id(optimizer)
            entry = self._optimizers.get(key)
            if entry is None:
                self._optimizers[key] = (weakref.ref(optimizer), [1])
            else:
                entry[1][0] += 1
            if self._manual:
                return
            thread = threading.get_ident()
            if thread != self._thread_id:
                if self._timer.completed or self._boundary_optimizer is not None:
                    return  # another thread's optimizer (an EMA model, say): not the step
                # Training runs on another thread than the one that entered the block: follow
                # it, rather than record no steps at all.
                self._thread_id = thread
                if self._loader_watch is not None:
                    self._loader_watch.follow_thread(thread)
                self.collectors["steps"] = CollectorStatus(
                    available=True,
                    reason="steps followed on the thread that calls optimizer.step(), not the "
                    "one that entered profile()",
                )
            if self._boundary_optimizer is None:
                self._boundary_optimizer = key
            if key == self._boundary_optimizer:
                self._boundary("optimizer")
        except Exception as err:  # a hook must never fail the optimizer step
            self.collectors["steps"] = CollectorStatus(available=False, reason=repr(err))

    def _boundary(self, detection: Any, at: float | None = None) -> None:
        completed = self._timer.boundary(detection, at)
        self._advance_window(completed)
        limit = self.options.max_steps
        if limit is not None and completed >= limit:
            self.collectors["steps"] = CollectorStatus(
                available=True, reason=f"the run was stopped after max_steps={limit} steps"
            )
            raise StepLimitReached(f"max_steps={limit} reached")

    def _advance_window(self, completed: int) -> None:
        window = self._window
        if window is None or window.done:
            return
        try:
            paused = window.on_boundary(completed)
        except Exception as err:
            window.abandon(f"{type(err).__name__}: {err}")
            self.collectors["profiler"] = CollectorStatus(
                available=False, reason=f"{type(err).__name__}: {err}"
            )
            paused = 0.0
        if paused:
            self._overhead["profiler_export_s"] = paused
            self._timer.exclude_pause(paused)
        self._timer.profiling = window.covers_step(completed)

    # -- record --------------------------------------------------------------------------------

    def _outcome(
        self, status: RunStatus, now: dt.datetime, collectors: dict[str, CollectorStatus]
    ) -> RunRecord:
        """The record's identity and outcome alone: what is written even if nothing else is.

        A record of a block still running (state ``running``) has no end: ``now`` is the time
        of the checkpoint instead.
        """
        stamp = now.isoformat(timespec="seconds")
        running = status.state == "running"
        return RunRecord(
            schema=SCHEMA,
            source="live",
            name=self.options.name or _script_name(),
            started_utc=self.started.isoformat(timespec="seconds"),
            ended_utc=None if running else stamp,
            checkpoint_utc=stamp if running else None,
            duration_s=(now - self.started).total_seconds(),
            status=status,
            rank=self._dist.rank,
            world_size=self._dist.world_size,
            collectors=dict(sorted(collectors.items())),
        )

    def _build_record(
        self,
        status: RunStatus,
        now: dt.datetime,
        samples: Samples | None,
        collectors: dict[str, CollectorStatus],
    ) -> RunRecord:
        """The whole record, at the block's end or as a snapshot while it runs.

        Reads the collectors and never changes them: a snapshot is built on another thread
        while training appends to them. Live objects that keep changing are copied, so a
        snapshot stays as it was when it was taken. Losses and output digests are read from
        the device only at the end (reading them earlier would synchronise it from another
        thread): a snapshot has none.
        """
        final = status.state != "running"
        env = msgspec.structs.replace(self._environment or Environment())
        env.distributed = self._dist
        if self._loader_watch is not None:
            env.loaders = [msgspec.structs.replace(i) for i in self._loader_watch.loaders()]
        if self._amp_watch is not None:
            env.autocast = self._amp_watch.info()
        # list() first: the training thread may register an optimizer meanwhile.
        optimizers = [
            (ref(), count[0]) for ref, count in list(self._optimizers.values()) if ref() is not None
        ]
        env.optimizers = [optimizer_info(opt, n) for opt, n in optimizers]
        env.parameters = _safe(lambda: parameter_info(opt for opt, _ in optimizers))
        forward = self._forward_watch
        if forward is not None:
            env.model_calls = msgspec.structs.replace(forward.calls)
        compiled = _safe(dynamo_counters)
        if compiled is not None:
            env.compile_used, env.dynamo_counters = compiled
        window = None
        if self._window is not None and self._window.window is not None:
            window = msgspec.structs.replace(self._window.window)
        overhead = dict(self._overhead)
        if samples is not None:
            overhead["sampler_cpu_s"] = samples.sampler_cpu_s
        if window is not None:
            overhead["profiler_window_s"] = window.wall_s
        if self._window is not None and self._window.categories_s:
            # Part of the export's pause: what the memory categories cost, said apart.
            overhead["memory_categories_s"] = self._window.categories_s
        collectors = dict(collectors)
        checkpoints = self._checkpoints
        if checkpoints is not None:
            collectors["checkpoint"] = checkpoints.status()
            if checkpoints.written or checkpoints.failed:
                overhead["checkpoint_s"] = checkpoints.seconds
                overhead["checkpoint_count"] = float(checkpoints.written + checkpoints.failed)
        losses: list[float | None] = []
        outputs: list[OutputDigest] = []
        if final and self._loss_watch is not None:
            losses = _safe(self._loss_watch.losses) or []
        if final and self._output_watch is not None:
            outputs = _safe(self._output_watch.digests) or []
        return msgspec.structs.replace(
            self._outcome(status, now, collectors),
            mode=self._mode(),
            steps=self._timer.series(),
            samples=samples,
            environment=env,
            profiler=window,
            overhead=overhead,
            fixes=[fix.outcome() for fix in self.options.fixes],
            peak_rss_bytes=_safe(peak_rss_bytes),
            losses=losses,
            outputs=outputs,
        )

    def _mode(self) -> RunMode:
        """Training when an optimizer stepped or a backward ran; inference only when the
        backward count was watched and saw none (without it, the default reading)."""
        forward = self._forward_watch
        if self._optimizers or forward is None or forward.calls.backward:
            return "training"
        return "inference"


def _script_name() -> str:
    main = sys.modules.get("__main__")
    file = getattr(main, "__file__", None)
    return Path(file).name if file else "interactive"


def peak_rss_bytes() -> int | None:
    """This process's peak resident memory (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _safe(fn: Any) -> Any:
    try:
        return fn()
    except Exception:
        if os.environ.get("TORCHDIAG_DEBUG"):
            traceback.print_exc()
        return None


def _checkpoint_interval(seconds: float) -> float:
    """``profile(checkpoint_interval=...)`` checked: ``0`` (off), or seconds, raised with a
    warning to :data:`MIN_CHECKPOINT_INTERVAL_S` when shorter."""
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 0):
        raise ValueError("checkpoint_interval must be >= 0 seconds (0 turns checkpoints off)")
    if 0 < seconds < MIN_CHECKPOINT_INTERVAL_S:
        if os.environ.get("RANK", "0") == "0":  # every rank gets the same: say it once
            warnings.warn(
                f"torchdiag: checkpoint_interval={seconds:g} s raised to "
                f"{MIN_CHECKPOINT_INTERVAL_S:g} s (more often costs the run more than it keeps)",
                stacklevel=3,
            )
        return MIN_CHECKPOINT_INTERVAL_S
    return float(seconds)

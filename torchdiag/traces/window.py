"""The profiled steps as one window, and what recording them cost the host.

Per-step CPU spans cannot show a GPU-bound run: the host races ahead and the GPU finishes a
step's kernels one or more steps later. The *window* therefore runs from the first step's start
to the later of the last step's end and the end of the last kernel the steps launched; the GPU
activity inside it is what the steps made the GPU do.

torch.profiler slows the host: every recorded event (operator, runtime call, annotation) costs a
few microseconds. The trace shows that cost on view operators that do nothing but call one other
view: their self time is the enter/exit cost of the one event nested in them (plus a fraction of
a microsecond of real work). Its median is :func:`profiler_event_us`; times the events recorded
in the steps (operators, runtime calls and annotations of the training process started between
the first step's start and the last one's end, :func:`thread_events_in` per thread) it estimates
the host time the profiler added.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

from torchdiag.traces.events import ThreadColumns
from torchdiag.traces.launches import quantile
from torchdiag.traces.steps import StepWindow

__all__ = ["profiler_event_us", "step_span", "thread_events_in"]

ThreadKey = tuple[int | str, int | str]
_MIN_SAMPLES = 20  # fewer view operators than this: no estimate


def step_span(windows: Sequence[StepWindow]) -> tuple[float, float] | None:
    """(first step's start, last step's end) µs; None without steps.

    The window's end is the later of this end and the end of the last kernel launched inside
    this span (:meth:`~torchdiag.traces.launches.KernelLaunches.last_end`).
    """
    if not windows:
        return None
    return min(a for _, a, _ in windows), max(b for _, _, b in windows)


def thread_events_in(th: ThreadColumns, order: list[int], a: float, b: float) -> int:
    """Operators and runtime calls of one thread started in ``[a, b)``.

    ``order`` is the thread's operators sorted by start (the nesting pass has it).
    """
    starts = th.op_ts
    ops = bisect_left(order, b, key=starts.__getitem__) - bisect_left(
        order, a, key=starts.__getitem__
    )
    calls = sorted(th.rt_ts)  # floats: sorted in C, no Python-level loop
    return ops + bisect_left(calls, b) - bisect_left(calls, a)


def profiler_event_us(samples: list[float]) -> float | None:
    """The profiler's cost per recorded event (µs): the median self time of one-call views."""
    if len(samples) < _MIN_SAMPLES:
        return None
    return quantile(sorted(samples), 0.5)

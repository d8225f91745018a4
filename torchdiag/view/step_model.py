"""Where a step's time goes, estimated once for every rule and output from the record.

Rules and reports need the same few figures: how long a step takes without the profiler, how much
of it the GPU was busy, and how much of the rest is input waits, synchronisations or host work.
This module derives them from whatever the record holds:

- a live record measures un-profiled step times directly (``steps``) and the GPU busy time per
  step in its profiler window (GPU kernel times are not inflated by the profiler);
- a trace-only record has profiled steps only. Host and GPU work as a pipeline and the slower
  side sets the step:

  - the GPU side is the GPU work of the kernels the steps launched (``window_gpu_busy_ms``: a
    GPU-bound window also holds queued kernels of the step before the first, which are not
    counted);
  - the host side is the steps' host time less what the profiler added (events recorded times
    the cost per event, :mod:`torchdiag.view.profiler_cost`), less time blocked on the GPU (a
    full launch queue, synchronising calls); DataLoader waits are corrected for the events
    recorded inside them and kept apart;
  - while the host waits for data, the GPU can only run what is already queued (the median time
    a kernel waits after its launch): the rest of the wait idles it too;
  - where the two sides come out within the estimate's uncertainty of each other, a deep launch
    queue (kernels waiting :data:`DEEP_QUEUE_US` or more after their launch: the host ran ahead)
    names the GPU as the bound;
  - a GPU busy for :data:`GPU_BOUND_SHARE` of the estimated step or more is the bound, whatever
    the per-event correction says (the host estimate is then only an upper bound on host work).

  The bound side sets the step: a GPU-bound step is the GPU side.

  The estimate comes with a range (``low_ms``–``high_ms``) that aims to hold the un-profiled
  step with probability :data:`COVERAGE`. Each source of its error is read off the trace itself
  (no constant is fitted to the reference traces beyond the profiler's cost per event):

  - the profiler's cost per event: the step at the low and high ends of that cost;
  - the spread of the profiled steps: the standard error of their mean duration, times
    Student's t at :data:`COVERAGE` (n - 1 degrees of freedom): a mean of four steps is not the
    run's mean step;
  - the launch queue: where it is deep (:data:`DEEP_QUEUE_US`), the host's time blocked in
    launches is taken out of its side, and might have been host work: that time per step;
  - the GPU window's edges: a GPU-bound step lies between the steps' GPU busy time per step and
    the GPU's span over their kernels per step (``window_gpu_span_ms``: from the first kernel the
    steps launched to the end of the last, idle gaps between kernels included).

  The first three are independent errors of the host side, each stated at about the coverage:
  they combine in quadrature. The window's edges are a bound, not a spread: the GPU side's range
  is that bound. A GPU-bound step keeps the host side's high end where the host came out above
  the GPU (the host might then set the step).

A live record measures its step: the range is the t-interval of the steady rows' mean at
:data:`COVERAGE`, from the spread of the rows (zero width only when every row is the same).

Measured error against un-profiled step times: docs/rules.md, "Step model".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from torchdiag.record import RunRecord, TraceSummary
from torchdiag.view.profiler_cost import ProfilerCost, profiler_cost
from torchdiag.view.steady import SteadySteps
from torchdiag.view.student_t import t_quantile

Bound = Literal["gpu", "host", "input"]

# Kernels that wait this long after their launch had a queue of work ahead of them: about 100x
# the launch latency of an idle queue (~10 µs). Host-bound runs keep their median in the tens of
# microseconds (8–17 µs on the reference traces), GPU-bound ones in milliseconds (11–218 ms).
DEEP_QUEUE_US = 1000.0
# A GPU busy for this share of the estimated step or more is the bound. The host side is profiled
# host time less a per-event profiler cost fitted on one machine; on another capture that
# correction missed by more than the remaining gap (an fp32 ResNet-50 inference trace from an
# H200 came out with its host side 15% above the GPU's while the GPU was busy 96% of the
# un-profiled step), so a GPU idle for less than 15% of the estimate cannot be said to wait on
# the host. The host-bound reference runs keep their GPU busy for 15–78% of their step, clear of
# it. On a live run the same share of the measured step names the GPU.
GPU_BOUND_SHARE = 0.85
# The probability a step's range aims to hold the un-profiled step with (its t-intervals' level).
# Checked on the reference traces, leave-one-out: tests/test_calibration.py.
COVERAGE = 0.9


@dataclass(frozen=True)
class StepTime:
    """One step's time and what occupied it (milliseconds per step).

    ``step_ms`` is the un-profiled step: measured (live steps) or estimated (a trace), with
    ``low_ms``–``high_ms`` its range at ``coverage`` (a t-interval of the mean when measured).
    ``profiled_ms`` is the mean step inside the profiler window, as the trace shows it.
    """

    step_ms: float
    gpu_busy_ms: float | None
    input_wait_ms: float
    sync_idle_ms: float
    source: str
    # Host work per step without the profiler's cost, time blocked on the GPU and input waits
    # removed; None when no trace window says how busy the host was.
    host_ms: float | None = None
    low_ms: float | None = None
    high_ms: float | None = None
    profiled_ms: float | None = None
    steps: int = 0
    bound: Bound | None = None
    launch_queue_us: float | None = None
    cost: ProfilerCost | None = None
    # Whether ``step_ms`` was measured without the profiler (live steps), not estimated.
    measured: bool = False
    # The probability ``low_ms``–``high_ms`` aims to hold the step with (:data:`COVERAGE`).
    coverage: float = COVERAGE
    # False where the GPU was named the bound although the host estimate came out above it (within
    # GPU_BOUND_SHARE): ``host_ms`` is then an upper bound on host work, not a floor under the step.
    host_separated: bool = True
    # Collective (communication) kernel time per step, and the part hidden behind compute.
    comm_ms: float = 0.0
    comm_overlap_ms: float = 0.0

    @property
    def exposed_comm_ms(self) -> float:
        """Communication per step that no compute ran beside: the GPU did nothing else."""
        return max(0.0, self.comm_ms - self.comm_overlap_ms)

    @property
    def range_ms(self) -> tuple[float, float]:
        """(low, high) of the un-profiled step estimate."""
        low = self.step_ms if self.low_ms is None else self.low_ms
        high = self.step_ms if self.high_ms is None else self.high_ms
        return low, high

    @property
    def gpu_busy_share(self) -> float | None:
        """Fraction of the step the GPU was busy (None without GPU data)."""
        if self.gpu_busy_ms is None or self.step_ms <= 0:
            return None
        return min(1.0, self.gpu_busy_ms / self.step_ms)

    @property
    def input_wait_share(self) -> float:
        """Fraction of the step spent waiting for the next batch."""
        return min(1.0, self.input_wait_ms / self.step_ms) if self.step_ms > 0 else 0.0

    @property
    def host_bound_share(self) -> float | None:
        """GPU idle time not explained by input waits or syncs: the GPU waiting on the host."""
        busy = self.gpu_busy_share
        if busy is None:
            return None
        rest = 1.0 - busy - (self.input_wait_ms + self.sync_idle_ms) / self.step_ms
        # A share, whatever a corrupt record says (a negative sync idle would push it past 1).
        return min(1.0, max(0.0, rest))


def step_evidence(timing: StepTime) -> dict[str, float | int | str | bool | None]:
    """The step figures every rule that uses the step model shows in its evidence: the step
    (and how it was known), its range when estimated, and the profiler cost taken out of it."""
    evidence: dict[str, float | int | str | bool | None] = {
        "step_ms": round(timing.step_ms, 2),
        "step_time_from": timing.source,
    }
    if not timing.measured:
        low, high = timing.range_ms
        evidence["step_ms_range"] = f"{low:.2f}–{high:.2f}"
        evidence["steps_estimated_from"] = timing.steps
    if timing.profiled_ms is not None:
        evidence["profiled_step_ms"] = round(timing.profiled_ms, 2)
    if timing.cost is not None and not timing.measured:
        evidence["profiler_cost_per_event_us"] = round(timing.cost.us, 2)
        evidence["profiler_cost_from"] = timing.cost.source
    if timing.launch_queue_us is not None:
        evidence["median_launch_queue_us"] = round(timing.launch_queue_us, 1)
    if not timing.host_separated and timing.host_ms is not None:
        evidence["host_ms_per_step_at_most"] = round(timing.host_ms, 2)
        evidence["bound_from"] = (
            f"GPU busy for at least {GPU_BOUND_SHARE:.0%} of the host estimate: the estimate's "
            "error, not GPU idle time"
        )
    return evidence


def primary_summary(record: RunRecord) -> TraceSummary | None:
    """The trace summary every rule and output describes: the live window, else the slowest
    rank's trace (the one that sets the pace of a synchronous job)."""
    if record.profiler is not None and record.profiler.summary is not None:
        return record.profiler.summary
    with_steps = [t for t in record.traces if t.steps]
    if not with_steps:
        return record.traces[0] if record.traces else None
    return max(with_steps, key=lambda t: t.window_ms or sum(s.duration_ms for s in t.steps))


def gpu_work_steps(summary: TraceSummary) -> float:
    """How many steps of GPU work the trace's kernel totals hold: divide a kernel total by this
    for milliseconds per step.

    The steps, unless the trace also holds GPU work outside them (kernels of an earlier step
    still queued when the window opened, or work after it): then in the ratio of the trace's GPU
    busy time to the steps' own.
    """
    n = len(summary.steps)
    if n and summary.window_gpu_busy_ms > 0 and summary.gpu_busy_ms > summary.window_gpu_busy_ms:
        return n * summary.gpu_busy_ms / summary.window_gpu_busy_ms
    return float(n)


def profiled_step_ms(summary: TraceSummary | None) -> float | None:
    """Mean step inside the profiler window (the host's ProfilerStep spans)."""
    if summary is None or not summary.steps:
        return None
    return sum(s.duration_ms for s in summary.steps) / len(summary.steps)


def mean_half_width(values: Sequence[float], coverage: float = COVERAGE) -> float:
    """Half the width of the t-interval at ``coverage`` for the mean of ``values`` (0 for
    fewer than two values: one step says nothing of the spread)."""
    n = len(values)
    if n < 2:
        return 0.0
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return t_quantile(0.5 + coverage / 2, n - 1) * sd / math.sqrt(n)


def _blocked_ms(summary: TraceSummary) -> float:
    """Host time per step blocked beyond a typical launch (a full launch queue) and in
    synchronising calls."""
    steps = summary.steps
    blocked_ms = sum(s.sync_ms for s in steps)
    launch = summary.launch
    if launch is not None and launch.launches:
        typical_ms = launch.launches * launch.median_launch_us / 1e3
        in_steps = sum(s.launches for s in steps) / launch.launches
        blocked_ms += max(0.0, launch.launch_ms - typical_ms) * min(1.0, in_steps)
    return blocked_ms / len(steps) if steps else 0.0


def _host_and_wait(summary: TraceSummary, cost_us: float) -> tuple[float, float]:
    """(host work, DataLoader wait) per step without the profiler's cost at ``cost_us``.

    From the steps' host time remove: DataLoader waits (kept apart); time blocked in kernel
    launches beyond a typical launch (a full launch queue: the host waited for the GPU) and in
    synchronising calls; the profiler's cost of the events recorded outside the waits. The waits
    lose the cost of the events recorded inside them (a loader without workers runs the dataset
    in this process, under the profiler).
    """
    steps = summary.steps
    n = len(steps)
    cpu_ms = sum(s.duration_ms for s in steps)
    loader_ms = sum(s.dataloader_ms for s in steps)
    blocked_ms = _blocked_ms(summary) * n
    inside = min(summary.loader_events, summary.host_events)
    outside = summary.host_events - inside
    host = max(0.0, cpu_ms - loader_ms - blocked_ms - outside * cost_us / 1e3) / n
    wait = max(0.0, loader_ms - inside * cost_us / 1e3) / n
    return host, wait


def _mean(summary: TraceSummary, field: str) -> float:
    steps = summary.steps
    return sum(getattr(s, field) for s in steps) / len(steps) if steps else 0.0


def _bound(host_side: float, gpu_side: float | None, busy: float | None, wait: float) -> Bound:
    """What sets the step: input waits when they are half of it, else the slower side; the GPU
    wherever it is busy for :data:`GPU_BOUND_SHARE` of the step or more."""
    step = max(host_side, gpu_side or 0.0)
    if step > 0 and wait >= 0.5 * step:
        return "input"
    if gpu_side is None or busy is None:
        return "host"
    return "gpu" if gpu_side >= host_side or busy >= GPU_BOUND_SHARE * step else "host"


def trace_step_time(summary: TraceSummary, cost: ProfilerCost | None = None) -> StepTime | None:
    """Estimate an un-profiled step from a profiled trace window (None without steps).

    ``cost`` overrides the profiler's cost per event (:func:`profiler_cost` of the trace's
    reading by default): the calibration tests fit and cross-check it with this.
    """
    n = len(summary.steps)
    if n == 0:
        return None
    cost = cost or profiler_cost(summary.profiler_event_us)
    has_gpu = summary.has_gpu and (summary.window_gpu_busy_ms > 0 or summary.gpu_busy_ms > 0)
    gpu = (summary.window_gpu_busy_ms or sum(s.gpu_busy_ms for s in summary.steps)) / n
    sync_idle = _mean(summary, "idle_after_sync_ms") if has_gpu else 0.0
    queue = summary.launch.median_queue_us if summary.launch and summary.launch.launches else None
    queued_ms = (queue or 0.0) / 1e3

    def sides(cost_us: float) -> tuple[float, float | None]:
        host, wait = _host_and_wait(summary, cost_us)
        if not has_gpu:
            return host + wait, None
        return host + wait + sync_idle, gpu + max(0.0, wait - queued_ms)

    def step_at(cost_us: float) -> float:
        host_side, gpu_side = sides(cost_us)
        return max(host_side, gpu_side or 0.0)

    host, wait = _host_and_wait(summary, cost.us)
    # More profiler cost removed gives the shorter step: the high cost bounds it from below.
    low, step, high = step_at(cost.high_us), step_at(cost.us), step_at(cost.low_us)
    host_side, gpu_side = sides(cost.us)
    bound = _bound(host_side, gpu_side, gpu if has_gpu else None, wait)
    deep = queue is not None and queue >= DEEP_QUEUE_US
    # Within the estimate's uncertainty either side could be the slower: the queue says.
    if bound == "host" and deep and gpu_side is not None and gpu_side >= sides(cost.high_us)[0]:
        bound = "gpu"
    separated = True
    if bound == "gpu" and gpu_side is not None:
        # The bound side sets the step; a host side above it is the correction's error. The
        # window's edges bound the GPU side: from its busy time to its span per step.
        separated = gpu_side >= host_side
        # A record from before the span was kept: the GPU work outside the window (a step's
        # worth of queued kernels, at most) stands for the edges instead.
        outer = summary.window_gpu_span_ms or summary.gpu_busy_ms
        span = max(0.0, outer - summary.window_gpu_busy_ms) / n
        # High: the GPU's span, or the host at the low cost where it came out above the GPU.
        step, low, high = gpu_side, gpu_side, max(high, gpu_side + span)
    else:
        # Independent errors of the host side, each at about the coverage: in quadrature.
        spread = mean_half_width([s.duration_ms for s in summary.steps])
        queue_ms = _blocked_ms(summary) if deep else 0.0
        low = step - math.hypot(step - low, spread, queue_ms)
        high = step + math.hypot(high - step, spread, queue_ms)
    return StepTime(
        step_ms=step,
        gpu_busy_ms=gpu if has_gpu else None,
        input_wait_ms=wait,
        sync_idle_ms=sync_idle,
        source="profiled trace, host time corrected for profiler overhead",
        host_ms=host,
        low_ms=max(0.0, low),
        high_ms=high,
        profiled_ms=profiled_step_ms(summary),
        steps=n,
        bound=bound,
        launch_queue_us=queue,
        cost=cost,
        host_separated=separated,
        comm_ms=summary.window_comm_ms / n,
        comm_overlap_ms=summary.window_comm_overlap_ms / n,
    )


def step_time(
    record: RunRecord,
    summary: TraceSummary | None,
    steady: SteadySteps,
    gpu_util_share: float | None,
) -> StepTime | None:
    """The best estimate of an un-profiled step this record allows, from its primary
    ``summary``, its ``steady`` steps and the mean NVML utilisation (``gpu_util_share``)."""
    if record.source == "live" and record.steps.count:
        if steady.steps == 0 or steady.wall_s <= 0:
            return None
        step_ms = steady.mean_step_ms
        # Rows of unequal step counts are weighed alike here: the interval is approximate.
        half = mean_half_width(steady.row_step_ms)
        wait_ms = steady.input_wait_s / steady.steps * 1e3
        busy_ms: float | None = None
        sync_idle = 0.0
        source = "live steps"
        host_ms: float | None = None
        estimate = trace_step_time(summary) if summary is not None else None
        if estimate is not None and estimate.host_ms is not None:
            host_ms = min(estimate.host_ms, step_ms)
        if summary is not None and summary.has_gpu and summary.steps:
            n = len(summary.steps)
            busy_ms = (summary.window_gpu_busy_ms or summary.gpu_busy_ms) / n
            sync_idle = _mean(summary, "idle_after_sync_ms")
            source = "live steps, GPU busy from the profiler window"
        else:
            if gpu_util_share is not None:
                # NVML utilisation over-states busy time, so this under-states GPU idleness.
                busy_ms = gpu_util_share * step_ms
                source = "live steps, GPU busy from NVML utilisation"
        busy = None if busy_ms is None else min(busy_ms, step_ms)
        sync_idle = min(sync_idle, step_ms)
        host_side = (host_ms if host_ms is not None else step_ms - wait_ms - sync_idle) + wait_ms
        bound = _bound(max(0.0, host_side), busy, busy, wait_ms)
        return StepTime(
            step_ms=step_ms,
            gpu_busy_ms=busy,
            input_wait_ms=wait_ms,
            sync_idle_ms=sync_idle,
            source=source,
            host_ms=host_ms,
            low_ms=max(0.0, step_ms - half),
            high_ms=step_ms + half,
            profiled_ms=profiled_step_ms(summary),
            steps=steady.steps,
            bound=bound,
            launch_queue_us=estimate.launch_queue_us if estimate is not None else None,
            cost=estimate.cost if estimate is not None else None,
            measured=True,
            host_separated=not (bound == "gpu" and busy is not None and host_side > busy),
            comm_ms=estimate.comm_ms if estimate is not None else 0.0,
            comm_overlap_ms=estimate.comm_overlap_ms if estimate is not None else 0.0,
        )
    if summary is None:
        return None
    return trace_step_time(summary)


# Kernel-name prefixes that tell a GPU generation when a trace lacks device properties (old
# Kineto traces carry none): cuBLAS/cuDNN/CUTLASS name kernels after the architecture they target.
_ARCH_PREFIXES = (
    ("sm100", 10.0),
    ("sm90", 9.0),
    ("sm89", 8.9),
    ("sm86", 8.6),
    ("sm80", 8.0),
    ("ampere_", 8.0),
    ("turing_", 7.5),
    ("sm75", 7.5),
    ("volta_", 7.0),
    ("sm70", 7.0),
    ("maxwell_", 5.0),
)


def device_capability(record: RunRecord, summary: TraceSummary | None) -> float | None:
    """Compute capability of the first device (e.g. 9.0): from the record or the trace's device
    properties, else inferred from architecture-specific kernel names."""
    devices = list(record.environment.devices)
    if summary is not None:
        devices += summary.devices
    for device in devices:
        if device.capability:
            try:
                return float(device.capability)
            except ValueError:
                continue
    if summary is None:
        return None
    for kernel in summary.top_kernels:
        name = kernel.name.lower()
        for prefix, capability in _ARCH_PREFIXES:
            if name.startswith(prefix) or f"<{prefix}" in name or f" {prefix}" in name:
                return capability
    return None


def device_memory_bytes(record: RunRecord, summary: TraceSummary | None) -> int | None:
    """Total memory of the first device, from the record, the trace or NVML."""
    devices = list(record.environment.devices)
    if summary is not None:
        devices += summary.devices
    for device in devices:
        if device.memory_total_bytes:
            return device.memory_total_bytes
    if record.samples is not None:
        for gpu in record.samples.gpus:
            if gpu.memory_total_bytes:
                return gpu.memory_total_bytes
    return None


def batch_size(record: RunRecord, summary: TraceSummary | None) -> tuple[int | None, str | None]:
    """The training batch size and where it came from, or ``(None, None)``.

    The loader that fed the most batches is the training loader (an evaluation loader iterated
    in the same block must not count); an imported trace knows the batch only from the
    operators' input shapes.
    """
    known = [ld for ld in record.environment.loaders if ld.batch_size]
    if known:
        loader = max(known, key=lambda ld: (ld.batches, -ld.loader_id))
        return loader.batch_size, "DataLoader batch_size"
    if summary is not None and summary.batch_size:
        return summary.batch_size, summary.batch_size_source or "operator input shapes"
    return None, None

"""The run record: the one thing that crosses from training to reporting.

A record is written by a live capture (``torchdiag.profile()``) or built from a torch.profiler
trace by :mod:`torchdiag.traces`. Every analyzer and renderer reads only this model, so both
sources get the same diagnosis and the same report.

The on-disk form is ``run.json`` with ``"schema": "torchdiag.run/1"``. Fields are documented in
``docs/record.md``. New optional fields may be added within ``/1``; removing or re-meaning a field
needs ``/2`` and a migration in :func:`load_record`.

Series are stored columnar (one list per metric, aligned on a shared time or step axis) because
that is both the smallest JSON and what the charts consume directly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import msgspec

from torchdiag.files import atomic_write

SCHEMA = "torchdiag.run/1"

RunState = Literal["running", "completed", "failed", "interrupted"]
RecordSource = Literal["live", "trace"]
# What the run did: trained (an optimizer step or a backward ran) or only ran its model forward.
RunMode = Literal["training", "inference"]
StepDetection = Literal["optimizer", "forward", "manual", "profiler", "none"]


class RecordError(ValueError):
    """A run record that cannot be read: not JSON, wrong schema, or a field of the wrong type."""


class Struct(msgspec.Struct, kw_only=True, omit_defaults=False, forbid_unknown_fields=False):
    """Base for record parts: keyword-only, unknown fields ignored (forward compatible)."""


# ---------------------------------------------------------------------------------------------
# Status and collectors


class SourceLine(Struct):
    """A line of Python source: where on the failing path the user's code was."""

    file: str
    line: int
    function: str = ""
    code: str = ""


class OutOfMemory(Struct):
    """An allocation that failed and ended the block (``torch.OutOfMemoryError``, the CPU
    allocator's "can't allocate memory", ``MemoryError``).

    ``requested_bytes`` is the request that failed, from the allocator's message. The in-use
    figures were read by the CUDA allocator's out-of-memory observer before the stack unwound
    (``observed="allocator"``), or when the exception reached the end of the block
    (``"block-end"``: the failing call's temporaries are freed by then). ``None``: not known.
    """

    device: str = "cpu"  # "cpu", "cuda:N", or "cuda" when the index is not known
    requested_bytes: int | None = None
    # The innermost PyTorch Python function on the failing path (``torch.nn.functional.linear``);
    # the C++ operator below it is not visible from Python. None when torch was called directly.
    operator: str | None = None
    source: SourceLine | None = None  # the innermost frame of the user's own code
    step: int | None = None  # the step in progress (1-based) when the allocation failed
    in_profiler_window: bool = False  # the torch.profiler window was recording at the failure
    observed: Literal["allocator", "block-end"] = "block-end"
    capacity_bytes: int | None = None  # the device's memory; the host's on the CPU
    free_bytes: int | None = None  # free on the device; available on the host (CPU)
    allocated_bytes: int | None = None  # held by tensors (CUDA caching allocator)
    reserved_bytes: int | None = None  # held by the caching allocator (allocated + cached)
    inactive_split_bytes: int | None = None  # cached blocks split and unusable: fragmentation
    process_bytes: int | None = None  # the process's memory: resident (CPU) / on the device


class RunStatus(Struct):
    """How the profiled block ended; ``out_of_memory`` when an allocation failure ended it."""

    state: RunState = "running"
    exception_type: str | None = None
    message: str | None = None
    out_of_memory: OutOfMemory | None = None


class CollectorStatus(Struct):
    """Whether one data source worked; ``reason`` says why not (or what was degraded)."""

    available: bool
    reason: str | None = None


# ---------------------------------------------------------------------------------------------
# Step timing


class StepSeries(Struct):
    """Wall time and input wait of every step, merged into rows when the run is long.

    Each row covers ``steps[i]`` consecutive steps starting at ``first_step[i]``; ``wall_ms`` and
    ``input_wait_ms`` are means over the row, ``max_wall_ms`` the slowest step in it. While a run
    has at most ``max_rows`` steps every row is one step; past that, adjacent rows are merged
    pairwise, so memory and file size stay bounded however long training runs.

    ``tokens`` (added within ``/1``; empty in older records and in runs that generated nothing)
    holds, per row, the tokens ``model.generate()`` produced in its steps (their total: a step
    without a count adds none; ``None`` for a row without a counted ``generate()`` call).
    ``limit`` (added within ``/1``) is the step limit the run was given (``max_steps``), if any:
    a running record's progress and ETA are told against it.
    """

    detection: StepDetection = "none"
    count: int = 0
    total_wall_s: float = 0.0
    total_input_wait_s: float = 0.0
    max_rows: int = 2048
    first_step: list[int] = msgspec.field(default_factory=list)
    steps: list[int] = msgspec.field(default_factory=list)
    start_s: list[float] = msgspec.field(default_factory=list)
    wall_ms: list[float] = msgspec.field(default_factory=list)
    input_wait_ms: list[float] = msgspec.field(default_factory=list)
    max_wall_ms: list[float] = msgspec.field(default_factory=list)
    profiled: list[bool] = msgspec.field(default_factory=list)
    tokens: list[int | None] = msgspec.field(default_factory=list)
    limit: int | None = None


# ---------------------------------------------------------------------------------------------
# Background sampler series


class GpmSeries(Struct):
    """NVML GPM metrics (Hopper and newer), percent of peak, aligned on ``Samples.t_s``."""

    sm_active_pct: list[float | None] = msgspec.field(default_factory=list)
    sm_occupancy_pct: list[float | None] = msgspec.field(default_factory=list)
    tensor_active_pct: list[float | None] = msgspec.field(default_factory=list)
    dram_bandwidth_pct: list[float | None] = msgspec.field(default_factory=list)
    fp32_active_pct: list[float | None] = msgspec.field(default_factory=list)
    fp16_active_pct: list[float | None] = msgspec.field(default_factory=list)


class GpuSeries(Struct):
    """One visible GPU as NVML saw it, aligned on ``Samples.t_s``."""

    index: int
    name: str = ""
    uuid: str | None = None
    memory_total_bytes: int | None = None
    power_limit_w: float | None = None
    utilization_pct: list[float | None] = msgspec.field(default_factory=list)
    memory_utilization_pct: list[float | None] = msgspec.field(default_factory=list)
    memory_used_bytes: list[float | None] = msgspec.field(default_factory=list)
    power_w: list[float | None] = msgspec.field(default_factory=list)
    sm_clock_mhz: list[float | None] = msgspec.field(default_factory=list)
    max_sm_clock_mhz: float | None = None
    temperature_c: list[float | None] = msgspec.field(default_factory=list)
    # Bitmask of NVML clock-event (throttle) reasons seen during the row, OR-ed when merged.
    throttle_reasons: list[int | None] = msgspec.field(default_factory=list)
    gpm: GpmSeries | None = None


class HostSeries(Struct):
    """CPU and memory of the host, this process and its DataLoader workers."""

    cpu_count: int = 0
    memory_total_bytes: int | None = None
    cpu_pct_per_core: list[list[float]] = msgspec.field(default_factory=list)
    process_cpu_pct: list[float | None] = msgspec.field(default_factory=list)
    process_rss_bytes: list[float | None] = msgspec.field(default_factory=list)
    worker_count: list[float | None] = msgspec.field(default_factory=list)
    workers_cpu_pct: list[float | None] = msgspec.field(default_factory=list)
    workers_rss_bytes: list[float | None] = msgspec.field(default_factory=list)
    memory_used_bytes: list[float | None] = msgspec.field(default_factory=list)


class Samples(Struct):
    """Downsampled time series from the background sampler.

    ``t_s`` is seconds since the start of the run. Each row is the mean of ``rows_merged[i]`` raw
    samples; rows are merged pairwise once ``max_rows`` is reached (see ``StepSeries``).
    """

    interval_s: float = 0.5
    max_rows: int = 1024
    sample_count: int = 0
    sampler_cpu_s: float = 0.0
    t_s: list[float] = msgspec.field(default_factory=list)
    rows_merged: list[int] = msgspec.field(default_factory=list)
    host: HostSeries | None = None
    gpus: list[GpuSeries] = msgspec.field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Environment


class DeviceInfo(Struct):
    """An accelerator visible to the process."""

    index: int
    name: str
    kind: str = "cuda"
    capability: str | None = None
    memory_total_bytes: int | None = None
    multiprocessors: int | None = None


class LoaderInfo(Struct):
    """A DataLoader iterated inside the profiled block.

    ``wait_cpu_s`` (added within ``/1``; ``None`` in older records) is the CPU time this process
    spent, all its threads together, while the training thread waited on the loader: the part of
    the wait a loader without workers spent computing rather than waiting on reads.
    """

    loader_id: int
    dataset: str = ""
    batch_size: int | None = None
    num_workers: int = 0
    pin_memory: bool = False
    persistent_workers: bool = False
    prefetch_factor: int | None = None
    drop_last: bool = False
    iterator: str = ""
    batches: int = 0
    wait_s: float = 0.0
    wait_cpu_s: float | None = None
    # Added within /1 (for the live view's progress): batches in one epoch (``len(loader)``;
    # None when the loader has no length, an IterableDataset say), the epochs begun (iterators
    # made from it) and the batches the latest epoch has given so far.
    length: int | None = None
    epochs: int = 0
    epoch_batches: int = 0


class OptimizerInfo(Struct):
    """An optimizer whose ``step()`` ran inside the block."""

    class_name: str
    foreach: bool | None = None
    fused: bool | None = None
    param_groups: int = 0
    parameters: int = 0
    steps: int = 0


class ParameterInfo(Struct):
    """Parameters reachable from the optimizers: count and element count by dtype."""

    tensors: int = 0
    elements: int = 0
    elements_by_dtype: dict[str, int] = msgspec.field(default_factory=dict)
    devices: list[str] = msgspec.field(default_factory=list)


class AutocastInfo(Struct):
    """Autocast regions entered inside the block (``torch.autocast`` / ``torch.amp``)."""

    entered: int = 0
    device_types: list[str] = msgspec.field(default_factory=list)
    dtypes: list[str] = msgspec.field(default_factory=list)
    grad_scaler: bool = False


class ModelCalls(Struct):
    """Calls of the outermost module with parameters (the model), by autograd mode, and the
    backward passes of the run: forward passes that record graphs no backward uses are waste.

    ``grad`` counts outermost calls with grad mode on, ``no_grad`` those under ``torch.no_grad()``
    (grad mode off), ``inference_mode`` those under ``torch.inference_mode()``; ``backward``
    counts ``torch.autograd.backward`` / ``Tensor.backward`` / ``torch.autograd.grad`` calls.
    ``generate`` counts outermost ``model.generate()`` calls (transformers; the forwards each
    makes are counted by mode too). ``parameter_bytes`` is the model's parameter memory.
    """

    model: str = ""
    grad: int = 0
    no_grad: int = 0
    inference_mode: int = 0
    backward: int = 0
    generate: int = 0
    parameter_bytes: int = 0


class DistributedInfo(Struct):
    """torch.distributed state when the block started (or from the launcher's environment)."""

    initialized: bool = False
    backend: str | None = None
    rank: int = 0
    world_size: int = 1
    local_rank: int | None = None
    local_world_size: int | None = None


class Environment(Struct):
    """The settings that matter for performance, snapshotted during the run."""

    torchdiag_version: str = ""
    python: str = ""
    platform: str = ""
    hostname: str = ""
    pid: int | None = None
    argv: list[str] = msgspec.field(default_factory=list)
    torch_version: str | None = None
    cuda_version: str | None = None
    cudnn_version: int | None = None
    nvidia_driver: str | None = None
    devices: list[DeviceInfo] = msgspec.field(default_factory=list)
    cpu_count_logical: int | None = None
    cpu_count_physical: int | None = None
    memory_total_bytes: int | None = None
    cudnn_benchmark: bool | None = None
    cudnn_deterministic: bool | None = None
    tf32_matmul: bool | None = None
    tf32_cudnn: bool | None = None
    float32_matmul_precision: str | None = None
    deterministic_algorithms: bool | None = None
    num_threads: int | None = None
    autocast: AutocastInfo | None = None
    compile_used: bool | None = None
    dynamo_counters: dict[str, dict[str, int]] = msgspec.field(default_factory=dict)
    distributed: DistributedInfo = msgspec.field(default_factory=DistributedInfo)
    loaders: list[LoaderInfo] = msgspec.field(default_factory=list)
    optimizers: list[OptimizerInfo] = msgspec.field(default_factory=list)
    parameters: ParameterInfo | None = None
    model_calls: ModelCalls | None = None
    env_vars: dict[str, str] = msgspec.field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# The torch.profiler window / imported trace, summarised


class BreakdownMs(Struct):
    """Where one step's time went, in milliseconds; the parts add up to ``wall``.

    GPU-timeline parts come first (compute, memcpy, memset, communication), then the idle time
    split by what the host was doing meanwhile. On a CPU-only trace ``cpu_only`` holds the time
    inside operators and the GPU parts are zero.
    """

    wall: float = 0.0
    compute: float = 0.0
    memcpy: float = 0.0
    memset: float = 0.0
    communication: float = 0.0
    input_wait: float = 0.0
    host_runtime: float = 0.0
    cpu_only: float = 0.0
    idle_host_wait: float = 0.0
    idle_other: float = 0.0


class TraceStep(Struct):
    """One step of the profiled window, as the trace shows it."""

    number: int
    start_us: float
    duration_ms: float
    breakdown: BreakdownMs = msgspec.field(default_factory=BreakdownMs)
    kernels: int = 0
    gpu_busy_ms: float = 0.0
    # Host time inside DataLoader ``__next__`` in this step (whatever the GPU did meanwhile);
    # ``breakdown.input_wait`` is the part of it the GPU spent idle.
    dataloader_ms: float = 0.0
    launches: int = 0
    # CPU operators the training process started in this step (nested ones included); None in
    # records written before it was counted.
    ops: int | None = None
    syncs: int = 0
    sync_ms: float = 0.0
    # GPU idle time from the end of each synchronisation in the step to the next GPU activity:
    # the queue had drained, and the GPU starved until the host issued new work.
    idle_after_sync_ms: float = 0.0
    # Host time inside torch.distributed collectives ("gloo:all_reduce" ...) in this step,
    # waiting for the other ranks included.
    collective_ms: float = 0.0


class CopyStat(Struct):
    """Memory copies of one kind (the trace's copy name), aggregated over the trace."""

    name: str
    direction: str = "other"  # HtoD, DtoH, DtoD, HtoH, PtoP, other
    pageable: bool = False  # the host side is pageable (not pinned) memory
    count: int = 0
    bytes: int = 0
    total_ms: float = 0.0


class SyncStat(Struct):
    """Host-device synchronisations by the runtime call or operator that caused them."""

    name: str
    count: int = 0
    total_ms: float = 0.0
    in_steps: int = 0


class LaunchStats(Struct):
    """Kernel launches: host cost, queueing delay and kernel durations."""

    launches: int = 0
    launch_ms: float = 0.0
    median_launch_us: float = 0.0
    median_kernel_us: float = 0.0
    p90_kernel_us: float = 0.0
    # Kernels that ran for less time than the host took to launch them.
    short_kernels: int = 0
    median_queue_us: float = 0.0
    p90_queue_us: float = 0.0
    cuda_graph_launches: int = 0


class MathStats(Struct):
    """GEMM, convolution and attention kernels: tensor-core use and the dtypes that launched them.

    ``op_dtype_ms`` attributes each such kernel's time to the first input dtype of the operator
    that launched it (``Input type`` in the trace), which holds whatever the kernel is named.
    """

    eligible_ms: float = 0.0
    tensor_core_ms: float = 0.0
    non_tensor_core_ms: float = 0.0
    unknown_ms: float = 0.0
    op_dtype_ms: dict[str, float] = msgspec.field(default_factory=dict)
    conv_ms: float = 0.0
    conv_nhwc_ms: float = 0.0
    conv_nchw_ms: float = 0.0
    layout_transform_ms: float = 0.0


class OccupancyStats(Struct):
    """How much of the GPU the kernels could fill, weighted by kernel time.

    ``sm_efficiency_pct`` is the time-weighted mean of ``min(blocks per SM, 1)``: a kernel with
    fewer blocks than SMs leaves SMs idle however long it runs.
    """

    kernels_with_launch_info: int = 0
    sm_efficiency_pct: float | None = None
    achieved_occupancy_pct: float | None = None


class OptimizerStepStat(Struct):
    """``Optimizer.step#<Class>.step`` regions: how much work one optimizer step issues."""

    name: str
    calls: int = 0
    total_ms: float = 0.0
    ops_per_call: float = 0.0
    foreach_ops_per_call: float = 0.0
    kernels_per_call: float = 0.0


class OpStat(Struct):
    """A CPU operator aggregated over the window."""

    name: str
    calls: int = 0
    total_ms: float = 0.0
    self_ms: float = 0.0
    gpu_ms: float = 0.0
    input_dtypes: list[str] = msgspec.field(default_factory=list)
    input_shapes: list[str] = msgspec.field(default_factory=list)


class KernelStat(Struct):
    """A GPU kernel (by name) aggregated over the window."""

    name: str
    kernel_class: str = "other"
    tensor_core: bool | None = None
    calls: int = 0
    total_ms: float = 0.0
    median_us: float = 0.0
    max_us: float = 0.0


class MemoryTimeline(Struct):
    """Allocator memory from the profiler's memory events (bytes), downsampled."""

    device: int = 0
    peak_allocated_bytes: int = 0
    peak_reserved_bytes: int = 0
    t_us: list[float] = msgspec.field(default_factory=list)
    allocated_bytes: list[int] = msgspec.field(default_factory=list)
    reserved_bytes: list[int] = msgspec.field(default_factory=list)


class TraceSummary(Struct):
    """What torchdiag keeps of a torch.profiler trace: aggregates, never the raw events."""

    origin: str = ""
    format: str = ""
    rank: int | None = None
    event_count: int = 0
    span_ms: float = 0.0
    has_gpu: bool = False
    device_kind: str | None = None
    devices: list[DeviceInfo] = msgspec.field(default_factory=list)
    step_detection: Literal["profiler-step", "fallback", "none"] = "none"
    steps: list[TraceStep] = msgspec.field(default_factory=list)
    # The steps as a whole: from the first step's start to the later of the last step's end and
    # the end of the GPU work its steps launched (the GPU may lag the host by whole steps), and
    # the GPU activity from the first kernel the steps launched to that end: the steps' own GPU
    # work, without kernels of earlier steps still queued. Per-step CPU spans cannot show
    # GPU-bound steps.
    window_ms: float = 0.0
    window_gpu_busy_ms: float = 0.0
    # From the first kernel the steps launched to the window's end: the GPU's time for the steps'
    # work, idle gaps between their kernels included (an upper bound on a GPU-bound window).
    window_gpu_span_ms: float = 0.0
    # Communication (collective) kernel time in that window, and the part of it that ran while
    # compute kernels ran on other streams (hidden behind compute).
    window_comm_ms: float = 0.0
    window_comm_overlap_ms: float = 0.0
    # Recorded host-side events inside the steps (``loader_events`` of them inside DataLoader
    # waits), and the profiler's own cost per event read off view operators that cost well under
    # a microsecond without it: together they estimate how much host time the profiler added.
    host_events: int = 0
    loader_events: int = 0
    profiler_event_us: float | None = None
    kernel_count: int = 0
    kernel_time_ms: float = 0.0
    gpu_busy_ms: float = 0.0
    top_ops: list[OpStat] = msgspec.field(default_factory=list)
    top_kernels: list[KernelStat] = msgspec.field(default_factory=list)
    kernel_class_ms: dict[str, float] = msgspec.field(default_factory=dict)
    memory: list[MemoryTimeline] = msgspec.field(default_factory=list)
    dataloader_iterators: dict[str, int] = msgspec.field(default_factory=dict)
    world_size: int | None = None
    backend: str | None = None
    copies: list[CopyStat] = msgspec.field(default_factory=list)
    syncs: list[SyncStat] = msgspec.field(default_factory=list)
    launch: LaunchStats | None = None
    math: MathStats | None = None
    occupancy: OccupancyStats | None = None
    optimizer_steps: list[OptimizerStepStat] = msgspec.field(default_factory=list)
    batch_size: int | None = None
    batch_size_source: str | None = None
    streams: int = 0
    # Markers of parallelism and compilation seen in the trace: e.g. "DataParallel",
    # "DistributedDataParallel", "FullyShardedDataParallel", "nccl_kernels", "compiled_regions".
    markers: dict[str, int] = msgspec.field(default_factory=dict)
    notes: list[str] = msgspec.field(default_factory=list)
    # ProfilerStep spans left out because their duration cannot be true (negative, not
    # finite), each named with its figure: the trace's other steps are still reported.
    skipped_steps: list[str] = msgspec.field(default_factory=list)


class RankFigures(Struct):
    """One rank of a distributed run, as the report over ranks compares them.

    ``comm_ms`` is the time per step the rank spent in collectives (host-side collective spans,
    or collective kernels on the GPU, whichever is longer): waiting for the other ranks included.
    ``own_ms`` is the rest of its step, the work only it did; ``own_ms_by_step`` the same per
    profiled step (``step_numbers``), to tell a consistently slow rank from one slow step.
    """

    rank: int
    host: str = ""
    device: str = ""
    state: str = ""
    steps: int = 0
    step_ms: float | None = None
    input_wait_ms: float = 0.0
    comm_ms: float = 0.0
    comm_overlap_pct: float | None = None
    own_ms: float | None = None
    gpu_busy_pct: float | None = None
    throttled: bool = False
    step_numbers: list[int] = msgspec.field(default_factory=list)
    own_ms_by_step: list[float] = msgspec.field(default_factory=list)
    # The rank's own findings at warning or above ("id" or "id (critical)"), from its record.
    findings: list[str] = msgspec.field(default_factory=list)


# The categories of memory, in the order they are stacked (what the batch does not change first).
MEMORY_CATEGORIES = (
    "parameter",
    "gradient",
    "optimizer_state",
    "activation",
    "input",
    "temporary",
    "autograd_detail",
    "unknown",
)


class MemoryOp(Struct):
    """An operator whose allocations were live at the window's memory peak, and their bytes."""

    name: str
    bytes: int = 0


class MemoryCategories(Struct):
    """What filled the device's memory in the profiler window, by category (added within /1).

    Categories are torch.profiler's own memory categoriser's (``_memory_profiler``), with the
    model's state corrected by what the live capture measured exactly: ``at_peak["parameter"]``
    is the bytes of the model's parameter storages, ``optimizer_state`` those of the optimizers'
    state tensors, ``gradient`` no more than the parameters' ``.grad`` bytes; what torch filed
    under those categories beyond that is moved to ``unknown`` (``moved_to_unknown_bytes``), and
    so is what an optimizer step allocated that is live at the peak (its intermediates, which
    torch files as activations: they do not grow with the batch).
    ``at_peak`` sums to ``peak_bytes``. ``timeline`` holds, per category, bytes at ``t_ms`` (ms
    since the window's first memory event), downsampled to at most a few hundred points with
    the peak kept, each point corrected as the peak is (``torch_at_peak``: torch's own figures
    at the peak, uncorrected); ``exact``: the bytes measured at the window's end (parameter,
    gradient, optimizer_state). ``top_at_peak``: the
    operators that allocated the most memory still live at the peak.
    """

    device: str = "cpu"
    peak_bytes: int = 0
    peak_t_ms: float = 0.0
    at_peak: dict[str, int] = msgspec.field(default_factory=dict)
    torch_at_peak: dict[str, int] = msgspec.field(default_factory=dict)
    moved_to_unknown_bytes: int = 0
    exact: dict[str, int] = msgspec.field(default_factory=dict)
    t_ms: list[float] = msgspec.field(default_factory=list)
    timeline: dict[str, list[int]] = msgspec.field(default_factory=dict)
    top_at_peak: list[MemoryOp] = msgspec.field(default_factory=list)


class ProfilerWindow(Struct):
    """The torch.profiler window of a live run: which steps it covered and its summary.

    ``memory_categories`` (added within /1; None in older records, imported traces and where
    torch's categoriser failed) says what filled memory in the window.
    """

    first_step: int = 0
    steps: int = 0
    wall_s: float = 0.0
    trace_file: str | None = None
    summary: TraceSummary | None = None
    memory_categories: MemoryCategories | None = None


# ---------------------------------------------------------------------------------------------
# Fixes applied from outside the script, and what trying them measured


class AppliedFix(Struct):
    """A fix applied to the run from outside its script (``profile(fixes=...)``).

    ``applied`` says whether it took effect; ``detail`` says what it changed (``"num_workers 0 ->
    2 on 1 DataLoader"``) or, when it did not apply, why not.
    """

    fix: str
    applied: bool
    detail: str = ""


class OutputDigest(Struct):
    """A small, bounded account of one of the model's first outputs (``record.outputs``): what
    ``torchdiag try`` compares when a run has no loss to compare (inference).

    ``values`` is an evenly strided sample of the output's elements as floats (None where not
    finite); ``argmax`` the index of the largest value of each of the first rows of a 2-D output
    (a classifier's top-1 prediction), None for other shapes.
    """

    call: int
    shape: list[int]
    dtype: str = ""
    values: list[float | None] = msgspec.field(default_factory=list)
    argmax: list[int] | None = None


# How a measured saving compares with the finding's stated range [low, bound]: inside it, above the
# bound (the bound was not one), below the low end, or no interval to judge by.
EstimateVerdict = Literal["within", "above", "below", "not measured"]


class EstimatePairing(Struct, kw_only=True):
    """A finding's stated saving beside the saving ``torchdiag try`` measured for a fix that
    answers it (percent of step time, or of time per sample for a fix that changes the batch).

    ``stated_low`` / ``stated`` / ``stated_max`` are the finding's ``saving_pct_low`` /
    ``saving_pct`` / ``saving_pct_max``; ``measured`` is ``100 * (1 - 1/speedup)`` and
    ``measured_low`` / ``measured_high`` the same of the speedup's 95% interval.
    """

    finding: str
    stated_low: float | None = None
    stated: float | None = None
    stated_max: float = 0.0
    measured: float | None = None
    measured_low: float | None = None
    measured_high: float | None = None
    verdict: EstimateVerdict = "not measured"


class MeasuredFix(Struct, kw_only=True):
    """One fix tried by ``torchdiag try``: the same script and steps rerun with the fix applied.

    ``speedup`` is the baseline's step time over the fix's (per sample where the fix changes the
    batch size), ``ci95`` its 95% interval; ``significant`` when that interval excludes 1.
    ``numerics_ok`` is False when the loss went non-finite or strayed from the baseline's (on a
    run without losses: when the model's outputs strayed from the baseline's). ``inference``: the
    baseline ran inference, so ``step_ms`` and ``baseline_step_ms`` are latencies of one call.
    """

    fix: str
    applicable: bool
    detail: str = ""
    step_ms: float | None = None
    baseline_step_ms: float | None = None
    speedup: float | None = None
    ci95: list[float] | None = None
    significant: bool = False
    per_sample: bool = False
    memory_peak_bytes: int | None = None
    baseline_memory_peak_bytes: int | None = None
    numerics_ok: bool | None = None
    numerics: str = ""
    compile_s: float | None = None
    inference: bool = False
    # The fix run's profiler-window peak by memory category (MemoryCategories.at_peak) and that
    # peak's total; for a batch change, the window peak the baseline's breakdown predicted.
    memory_at_peak: dict[str, int] | None = None
    window_peak_bytes: int | None = None
    predicted_window_peak_bytes: int | None = None
    error: str | None = None  # the script failed with the fix applied
    runs: int = 0
    records: list[str] = msgspec.field(default_factory=list)
    # The baseline's findings this fix answers, each stated saving against the measured one.
    estimates: list[EstimatePairing] = msgspec.field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# The record


class RunRecord(Struct):
    """A whole run: identity, status, steps, samples, environment and the profiler window."""

    schema: str = SCHEMA
    source: RecordSource = "live"
    # A record without the field (written before it existed) reads as training.
    mode: RunMode = "training"
    name: str = ""
    started_utc: str = ""
    ended_utc: str | None = None
    duration_s: float = 0.0
    status: RunStatus = msgspec.field(default_factory=RunStatus)
    rank: int = 0
    world_size: int = 1
    collectors: dict[str, CollectorStatus] = msgspec.field(default_factory=dict)
    steps: StepSeries = msgspec.field(default_factory=StepSeries)
    samples: Samples | None = None
    environment: Environment = msgspec.field(default_factory=Environment)
    profiler: ProfilerWindow | None = None
    traces: list[TraceSummary] = msgspec.field(default_factory=list)
    overhead: dict[str, float] = msgspec.field(default_factory=dict)
    # A report over the ranks of a distributed run: every rank's figures (this record holds the
    # details of the rank that sets the pace), and the ranks of the world with no record.
    ranks: list[RankFigures] = msgspec.field(default_factory=list)
    missing_ranks: list[int] = msgspec.field(default_factory=list)
    # Fixes applied to this run from outside the script, and the scalar losses that backward()
    # was called on (first LOSS_LIMIT), kept when asked (``profile(record_loss=True)``).
    fixes: list[AppliedFix] = msgspec.field(default_factory=list)
    # The training process's peak resident memory over its whole life so far (getrusage), read
    # when the block ends: exact where the samples may miss a short peak.
    peak_rss_bytes: int | None = None
    losses: list[float | None] = msgspec.field(default_factory=list)  # None: not finite
    # Digests of the model's first outputs, kept when asked (``profile(record_outputs=True)``).
    outputs: list[OutputDigest] = msgspec.field(default_factory=list)
    # What ``torchdiag try`` measured for fixes tried on this run (its baseline).
    measured_fixes: list[MeasuredFix] = msgspec.field(default_factory=list)
    # When this record was written as a checkpoint of a block still running (added within /1):
    # ``status.state`` is then "running" and ``ended_utc`` null; a record whose block ended has
    # none. The writing process is ``environment.pid`` on ``environment.hostname``: whether it
    # still runs is for the reader to tell (``torchdiag.view.run_end``).
    checkpoint_utc: str | None = None

    def to_json(self) -> bytes:
        """Encode deterministically (dict keys sorted) so equal records give equal bytes."""
        return _ENCODER.encode(self)


_ENCODER = msgspec.json.Encoder(order="sorted")
_DECODER = msgspec.json.Decoder(RunRecord)


class _Header(msgspec.Struct):
    """A document's top-level ``schema`` member alone (the rest is skipped, not built)."""

    schema: object = None


_HEADER = msgspec.json.Decoder(_Header)


def is_record(data: bytes) -> bool:
    """Whether ``data`` is a run record: a JSON object whose top-level ``schema`` is
    ``torchdiag.run/…`` (a trace that merely contains that text somewhere is not)."""
    try:
        schema = _HEADER.decode(data).schema
    except msgspec.DecodeError:
        return False
    return isinstance(schema, str) and schema.startswith("torchdiag.run/")


def decode_record(data: bytes | str) -> RunRecord:
    """Validate and decode a record from JSON text; raise :class:`RecordError` with the path."""
    if isinstance(data, str):
        data = data.encode()
    try:
        schema = _HEADER.decode(data).schema
    except msgspec.ValidationError:  # (a subclass of DecodeError: test it first)
        raise RecordError("a run record is a JSON object at the top level") from None
    except msgspec.DecodeError as exc:
        raise RecordError(f"not valid JSON: {exc}") from None
    if schema != SCHEMA:
        if isinstance(schema, str) and schema.startswith("torchdiag.run/"):
            raise RecordError(
                f"record schema {schema!r} is not supported by this torchdiag (reads {SCHEMA!r})"
            )
        raise RecordError(f'not a torchdiag run record (missing "schema": {SCHEMA!r})')
    try:
        record = _DECODER.decode(data)
    except msgspec.ValidationError as exc:
        raise RecordError(f"invalid run record: {exc}") from None
    _check_durations(record)
    return record


# No step, wait or run lasts longer than this (about 11.6 days, in milliseconds): a larger or
# negative figure is a corrupt record, and reporting it would print nonsense with exit status 0.
MAX_DURATION_MS = 1e9


def _check_durations(record: RunRecord) -> None:
    """Raise :class:`RecordError` naming the first duration that is negative, not finite, or
    absurdly large."""
    s = record.steps
    checks: list[tuple[str, list[float]]] = [
        ("steps.wall_ms", s.wall_ms),
        ("steps.input_wait_ms", s.input_wait_ms),
        ("steps.max_wall_ms", s.max_wall_ms),
        ("steps.total_wall_s", [s.total_wall_s * 1e3]),
        ("steps.total_input_wait_s", [s.total_input_wait_s * 1e3]),
        ("duration_s", [record.duration_s * 1e3]),
    ]
    summaries = list(record.traces)
    if record.profiler is not None and record.profiler.summary is not None:
        summaries.append(record.profiler.summary)
    for i, summary in enumerate(summaries):
        checks.append((f"traces[{i}].steps[].duration_ms", [t.duration_ms for t in summary.steps]))
    for field, values in checks:
        for j, value in enumerate(values):
            if not (0.0 <= value <= MAX_DURATION_MS):  # also false for NaN
                raise RecordError(
                    f"invalid run record: {field}[{j}] = {value!r} is not a duration "
                    f"(0 to {MAX_DURATION_MS:g} ms)"
                )


def load_record(path: str | os.PathLike[str]) -> RunRecord:
    """Read and validate ``run.json``. Raises :class:`RecordError` (or ``OSError``)."""
    return decode_record(Path(path).read_bytes())


def save_record(record: RunRecord, path: str | os.PathLike[str]) -> Path:
    """Write ``record`` atomically (:func:`torchdiag.files.atomic_write`).

    A reader never sees a half-written file, and a crash mid-write leaves the old file intact.
    """
    return atomic_write(path, record.to_json())

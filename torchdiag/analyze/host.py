"""Host-side rules: the GPU waits on Python and kernel launches (``cpu-bound``), too many tiny
kernels (``launch-overhead``), a batch too small to fill the GPU (``small-batch``) and
single-tensor optimizer loops (``optimizer-not-fused``)."""

from __future__ import annotations

from torchdiag.analyze.finding import NEGLIGIBLE_SAVING_PCT, Finding, severity_for_saving
from torchdiag.analyze.registry import SkipRule, rule
from torchdiag.analyze.wording import is_inference, step_noun
from torchdiag.record import RunRecord, TraceSummary
from torchdiag.view.run_view import RunView
from torchdiag.view.step_model import (
    StepTime,
    step_evidence,
)

# Doubling the batch doubles the work per step. When the GPU does useful work less than half of
# the step, that extra work fits into capacity the step already pays for: this is the point at
# which a larger batch is expected to raise throughput, whatever the model.
SMALL_BATCH_UTILISATION = 0.5
# Below half GPU busy the host, not the GPU, is where most of each step goes: the threshold
# TensorBoard's profiler plugin and Nsight Systems use for a starved GPU. Above it host and GPU
# are roughly balanced and part of the idle time is kernel scheduling no host fix removes, so the
# possible saving is still reported but only as a note (severity info).
CPU_BOUND_BUSY = 0.5

# The host-overhead fix of an inference loop (cpu-bound, launch-overhead): one CUDA graph per
# forward call, and no autograd bookkeeping around it.
INFERENCE_GRAPH_SNIPPET = (
    "model = torch.compile(model, mode='reduce-overhead')  # replays a CUDA graph per call\n"
    "with torch.inference_mode():\n"
    "    out = model(inputs)"
)


def _gpu_step(view: RunView) -> StepTime:
    timing = view.timing
    if timing is None:
        raise SkipRule("no steps were recorded")
    if timing.gpu_busy_ms is None:
        raise SkipRule("no GPU activity measured (CPU-only run or no NVML/profiler data)")
    return timing


@rule("cpu-bound")
def cpu_bound(view: RunView) -> Finding | None:
    """The GPU idles while the host runs Python and launches kernels."""
    timing = _gpu_step(view)
    share = timing.host_bound_share or 0.0
    saving = share * 100
    if saving < NEGLIGIBLE_SAVING_PCT:
        return None
    summary = view.summary
    evidence: dict[str, float | int | str | bool | None] = {
        "gpu_idle_waiting_on_host_pct": round(saving, 1),
        "gpu_busy_pct": round((timing.gpu_busy_share or 0.0) * 100, 1),
        **step_evidence(timing),
        "gpu_busy_ms_per_step": round(timing.gpu_busy_ms or 0.0, 2),
        "input_wait_ms_per_step": round(timing.input_wait_ms, 2),
    }
    if timing.host_ms is not None:
        evidence["host_ms_per_step"] = round(timing.host_ms, 2)
    if summary is not None and summary.steps:
        n = len(summary.steps)
        evidence["kernels_per_step"] = round(sum(s.kernels for s in summary.steps) / n, 1)
    busy = timing.gpu_busy_share or 0.0
    severity = severity_for_saving(saving) if busy < CPU_BOUND_BUSY else "info"
    if is_inference(view):
        recommendation = (
            "The host cannot issue work as fast as the GPU finishes it. Cut the Python and "
            "launch overhead of each call: run it under torch.inference_mode() (no autograd "
            "bookkeeping), compile the model (fewer, fused kernels) and replay each forward call "
            "as a CUDA graph (torch.compile mode='reduce-overhead', with fixed input shapes), "
            "and keep per-call host work (.item(), .cpu(), logging) out of the loop."
        )
        snippet = INFERENCE_GRAPH_SNIPPET
    else:
        recommendation = (
            "The host cannot issue work as fast as the GPU finishes it. Cut per-step Python and "
            "launch overhead: compile the model (fewer, fused kernels), capture the step in a "
            "CUDA graph (torch.compile mode='reduce-overhead'), and move per-step host work "
            "(logging, metrics, .item()) out of the loop or to every N steps."
        )
        snippet = "model = torch.compile(model, mode='reduce-overhead')"
    return Finding(
        id="cpu-bound",
        severity=severity,
        title=f"the GPU waits on the host for {saving:.0f}% of each {step_noun(view)}",
        evidence=evidence,
        recommendation=recommendation,
        snippet=snippet,
        saving_pct_max=round(saving, 1),
    )


@rule("launch-overhead")
def launch_overhead(view: RunView) -> Finding | None:
    """Kernels that finish faster than the host can launch them."""
    summary = view.summary
    if summary is None or summary.launch is None or not summary.steps:
        raise SkipRule("needs a profiler window or trace with kernel launches")
    launch = summary.launch
    if launch.launches == 0:
        raise SkipRule("no kernel launches in the trace")
    short_share = launch.short_kernels / launch.launches
    # HolisticTraceAnalysis calls a kernel "short" when the GPU runs it for less time than the
    # host spent launching it; when most kernels are like that the GPU cannot be kept fed one
    # launch at a time, whatever else the host does.
    if short_share < 0.5:
        return None
    timing = view.timing
    if timing is None or timing.step_ms <= 0:
        raise SkipRule("no step time")
    n = len(summary.steps)
    launch_ms = launch.launches * launch.median_launch_us / 1e3 / n
    host_bound = (timing.host_bound_share or 0.0) * timing.step_ms
    saving = min(launch_ms, host_bound) / timing.step_ms * 100
    if saving < NEGLIGIBLE_SAVING_PCT:
        return None
    return Finding(
        id="launch-overhead",
        severity=severity_for_saving(saving),
        title=f"{short_share * 100:.0f}% of kernels run shorter than their launch",
        evidence={
            "kernels_per_step": round(launch.launches / n, 1),
            "median_kernel_us": round(launch.median_kernel_us, 2),
            "median_launch_us": round(launch.median_launch_us, 2),
            "short_kernel_pct": round(short_share * 100, 1),
            "launch_ms_per_step": round(launch_ms, 2),
            "step_ms": round(timing.step_ms, 2),
            "cuda_graph_launches": launch.cuda_graph_launches,
        },
        recommendation=(
            "Fuse the many tiny kernels: torch.compile generates fused kernels and with "
            "mode='reduce-overhead' replays each forward call as one CUDA graph (keep input "
            "shapes fixed, or pad them to a few sizes); fused layers (e.g. "
            "scaled_dot_product_attention) also cut launch counts. Run the calls under "
            "torch.inference_mode()."
            if is_inference(view)
            else "Fuse the many tiny kernels: torch.compile generates fused kernels and with "
            "mode='reduce-overhead' replays the step as one CUDA graph; foreach/fused optimizers "
            "and fused layers (e.g. scaled_dot_product_attention) also cut launch counts."
        ),
        snippet=INFERENCE_GRAPH_SNIPPET
        if is_inference(view)
        else "model = torch.compile(model, mode='reduce-overhead')",
        saving_pct_max=round(saving, 1),
    )


@rule("small-batch")
def small_batch(view: RunView) -> Finding | None:
    """The batch is too small to fill the GPU, and memory would allow a larger one."""
    record = view.record
    timing = _gpu_step(view)
    summary = view.summary
    compute_ms = timing.step_ms - timing.input_wait_ms - timing.sync_idle_ms
    if compute_ms <= 0:
        return None
    busy = min(1.0, (timing.gpu_busy_ms or 0.0) / compute_ms)
    fill, fill_from = _sm_fill(record, summary)
    utilisation = busy * (fill if fill is not None else 1.0)
    if utilisation >= SMALL_BATCH_UTILISATION:
        return None
    batch, batch_from = view.batch
    if batch is None:
        raise SkipRule("the batch size is unknown (no DataLoader settings or operator shapes)")
    capacity = view.device_memory_bytes
    peak = view.memory.used or None
    headroom = capacity / peak if capacity and peak else None
    if headroom is not None and headroom < 2.0:
        return None  # a doubled batch would not fit: the finding would be advice nobody can take
    factor = batch_factor(headroom)
    low, expected, high = batch_saving(timing, utilisation, factor)
    if expected < NEGLIGIBLE_SAVING_PCT:
        return None
    evidence: dict[str, float | int | str | bool | None] = {
        "batch_size": batch,
        "batch_size_from": batch_from,
        "gpu_busy_pct_of_compute": round(busy * 100, 1),
        "sm_fill_pct": None if fill is None else round(fill * 100, 1),
        "sm_fill_from": fill_from,
        "useful_gpu_pct": round(utilisation * 100, 1),
        "memory_headroom_x": None if headroom is None else round(headroom, 1),
        "suggested_batch": batch * factor,
        "batch_factor": factor,
        "step_ms": round(timing.step_ms, 2),
    }
    if is_inference(view):
        recommendation = _inference_batch_advice(view, timing, batch, factor, expected)
        snippet = _inference_batch_snippet(batch * factor, headroom, batch_from)
    else:
        recommendation = (
            "Each step leaves most of the GPU unused, and memory allows a larger batch: raise "
            "the batch size (scale the learning rate with it, or accumulate to keep the "
            "effective batch) so each step does more work for the same fixed overhead. "
            f"The saving is time per sample at batch {batch * factor}, not per step."
        )
        snippet = _batch_snippet(batch, factor, headroom)
    return Finding(
        id="small-batch",
        severity=severity_for_saving(expected),
        title=f"batch of {batch} uses {utilisation * 100:.0f}% of the GPU",
        evidence=evidence,
        recommendation=recommendation,
        snippet=snippet,
        saving_pct_max=round(high, 1),
        saving_pct=round(expected, 1),
        saving_pct_low=round(low, 1),
    )


def batch_factor(headroom: float | None) -> int:
    """How many times larger a batch to suggest: up to 4x, within the measured memory headroom
    (activations grow with the batch, so a quarter is kept spare); 2x when it is unknown."""
    if headroom is None:
        return 2
    return max(2, min(4, int(headroom / 1.25)))


def batch_saving(timing: StepTime, utilisation: float, factor: int) -> tuple[float, float, float]:
    """(low, expected, high) percent of the time per sample saved by a ``factor`` times larger
    batch.

    Per step, host work stays (Python and launches do not grow with the batch) and input waits
    grow with it. GPU work grows at most ``factor`` times (low: no kernel gets more efficient), as
    much as the part of the GPU already in use (expected: the idle SMs absorb the rest), or not at
    all (high). Host and GPU overlap, so the slower side sets the new step.
    """
    host = timing.host_ms
    if host is None:
        host = max(0.0, timing.step_ms - timing.input_wait_ms - timing.sync_idle_ms)
    host_side = host + timing.input_wait_ms * factor + timing.sync_idle_ms
    gpu = timing.gpu_busy_ms or 0.0

    def saved(gpu_growth: float) -> float:
        per_sample = max(host_side, gpu * gpu_growth) / factor
        return max(0.0, 100.0 * (1.0 - per_sample / timing.step_ms))

    return saved(factor), saved(1 + (factor - 1) * utilisation), saved(1.0)


@rule("optimizer-not-fused")
def optimizer_not_fused(view: RunView) -> Finding | None:
    """The optimizer updates parameters one tensor at a time."""
    record = view.record
    summary = view.summary
    live = [o for o in record.environment.optimizers if o.foreach is False and not o.fused]
    if summary is None or not summary.optimizer_steps:
        if live:
            raise SkipRule("needs a profiler window to time the optimizer step")
        raise SkipRule("no optimizer step regions in the trace")
    timing = view.timing
    if timing is None or timing.step_ms <= 0:
        raise SkipRule("no step time")
    if timing.gpu_busy_ms is None:
        # On the CPU the loop's time is its arithmetic, which a multi-tensor implementation does
        # not remove; what it saves is per-tensor launch overhead on an accelerator.
        raise SkipRule("no GPU activity: the single-tensor loop costs launches only on a GPU")
    worst = None
    for stat in summary.optimizer_steps:
        # A foreach/fused optimizer issues a handful of multi-tensor ops per step; a
        # single-tensor loop issues several ops per parameter and no multi-tensor ones.
        if stat.calls == 0 or stat.foreach_ops_per_call > 0 or stat.ops_per_call < 2:
            continue
        per_call_ms = stat.total_ms / stat.calls
        event_us = timing.cost.us if timing.cost is not None else 0.0
        overhead = (stat.ops_per_call + stat.kernels_per_call) * event_us
        host_ms = max(0.0, per_call_ms - overhead / 1e3)
        if worst is None or host_ms > worst[1]:
            worst = (stat, host_ms)
    if worst is None:
        return None
    stat, host_ms = worst
    # Host time of the loop matters only while the GPU waits on the host.
    limit = (timing.host_bound_share or 0.0) * timing.step_ms
    saving = min(host_ms, limit) / timing.step_ms * 100
    if saving < NEGLIGIBLE_SAVING_PCT:
        return None
    name = stat.name.split("#")[-1].split(".")[0] or "optimizer"
    return Finding(
        id="optimizer-not-fused",
        severity=severity_for_saving(saving),
        title=f"{name} updates parameters one tensor at a time",
        evidence={
            "optimizer": stat.name,
            "ops_per_step": round(stat.ops_per_call, 1),
            "multi_tensor_ops_per_step": round(stat.foreach_ops_per_call, 1),
            "kernels_per_step": round(stat.kernels_per_call, 1),
            "optimizer_host_ms_per_step": round(host_ms, 2),
            "step_ms": round(timing.step_ms, 2),
        },
        recommendation=(
            "Use the multi-tensor (foreach) or fused implementation: one kernel launch updates "
            "many parameters. foreach is the default on CUDA unless foreach=False is passed; "
            "fused=True is faster still for Adam/AdamW/SGD on CUDA."
        ),
        snippet=f"optimizer = torch.optim.{name}(model.parameters(), lr=lr, fused=True)",
        saving_pct_max=round(saving, 1),
    )


def _batch_snippet(batch: int, factor: int, headroom: float | None) -> str:
    """The suggested batch; a warning to watch memory when the headroom is unknown."""
    if headroom is None:
        return (
            "# memory headroom unknown: watch torch.cuda.max_memory_allocated()\n"
            f"loader = torch.utils.data.DataLoader(dataset, batch_size={batch * factor}, ...)\n"
            "# and scale the learning rate, e.g. lr = base_lr * new_batch / old_batch"
        )
    return (
        f"loader = torch.utils.data.DataLoader(dataset, batch_size={batch * factor}, ...)\n"
        "# and scale the learning rate, e.g. lr = base_lr * new_batch / old_batch"
    )


def _inference_batch_advice(
    view: RunView, timing: StepTime, batch: int, factor: int, expected_pct: float
) -> str:
    """``small-batch`` for an inference run: a larger batch serves more samples per second, but
    each call takes longer, so both figures are stated (from the expected saving per sample:
    a call at the larger batch takes ``factor`` times the samples' shorter time each)."""
    noun = step_noun(view)
    call_ms = timing.step_ms
    new_call_ms = call_ms * factor * (1.0 - expected_pct / 100.0)
    throughput = batch * 1e3 / call_ms
    new_throughput = batch * factor * 1e3 / new_call_ms if new_call_ms > 0 else float("inf")
    return (
        f"Each {noun} leaves most of the GPU unused, and memory allows a larger batch. At "
        f"batch {batch * factor} throughput rises from about {throughput:,.0f} to "
        f"{new_throughput:,.0f} samples/s, but latency rises too: each {noun} takes about "
        f"{_ms(new_call_ms)} instead of {_ms(call_ms)}, and a request may wait for its batch to "
        "fill. Batch up where throughput matters (offline scoring, batched serving); keep the "
        f"batch where each request's latency is the target. `torchdiag try --fix batch=x{factor}` "
        "measures both."
    )


def _inference_batch_snippet(new_batch: int, headroom: float | None, batch_from: str | None) -> str:
    """The larger batch of an inference loop: its DataLoader's, else requests stacked per call."""
    watch = (
        "# memory headroom unknown: watch torch.cuda.max_memory_allocated()\n"
        if headroom is None
        else ""
    )
    if batch_from == "DataLoader batch_size":
        return watch + (
            f"loader = torch.utils.data.DataLoader(dataset, batch_size={new_batch}, ...)"
        )
    return watch + (
        f"inputs = torch.stack(requests[:{new_batch}]).to(device)  # one call for {new_batch}\n"
        "with torch.inference_mode():\n"
        "    outputs = model(inputs)"
    )


def _ms(value: float) -> str:
    return f"{value:,.1f} ms" if value >= 1.0 else f"{value:.2f} ms"


def _sm_fill(record: RunRecord, summary: TraceSummary | None) -> tuple[float | None, str | None]:
    """Fraction of SMs the kernels could occupy: GPM SM activity, else blocks per SM."""
    samples = record.samples
    if samples is not None:
        # SM activity is a share of all time; dividing by kernel-running time over the same
        # samples gives the fill of the SMs while kernels ran.
        active = running = 0.0
        for g in samples.gpus:
            if g.gpm is None:
                continue
            for sm, util in zip(g.gpm.sm_active_pct, g.utilization_pct, strict=False):
                if sm is not None and util:
                    active += sm
                    running += util
        if running > 0:
            return min(1.0, active / running), "NVML GPM"
    occupancy = summary.occupancy if summary is not None else None
    if occupancy is not None and occupancy.sm_efficiency_pct is not None:
        return occupancy.sm_efficiency_pct / 100.0, "kernel blocks per SM"
    return None, None

"""Compute rules: math that could run on tensor cores (``no-amp``, ``tf32-disabled``), memory
layout for convolutions (``channels-last``) and cuDNN autotuning (``cudnn-benchmark``)."""

from __future__ import annotations

from torchdiag.analyze.finding import NEGLIGIBLE_SAVING_PCT, Finding, severity_for_saving
from torchdiag.analyze.registry import SkipRule, rule
from torchdiag.analyze.wording import is_inference, step_noun
from torchdiag.record import MathStats, TraceSummary
from torchdiag.view.run_view import RunView
from torchdiag.view.step_model import (
    StepTime,
    gpu_work_steps,
    step_evidence,
)

# How much faster fp32 GEMM/conv/attention kernels run on tensor cores: (low, expected, high).
# Peak ratios of dense bf16/fp16 tensor-core to fp32 CUDA-core throughput are 8x (V100), 16x
# (A100), 15x (H100/H200); real layers reach part of that. TF32 peaks at about half of bf16.
AMP_MATH_SPEEDUP = (3.0, 8.0, 16.0)
TF32_MATH_SPEEDUP = (2.0, 4.0, 8.0)
# Other kernels under autocast: memory-bound work moves half the bytes where its tensors are
# reduced precision, and nothing where they stay fp32 (norms, softmax, losses).
AMP_OTHER_SPEEDUP = (1.0, 1.25, 2.0)

# Dtype names as torch.profiler records them (``Input type``) for single-precision tensors.
FP32_NAMES = ("float",)
HALF_NAMES = ("c10::BFloat16", "c10::Half", "BFloat16", "Half", "bfloat16", "float16")


def _math(view: RunView) -> tuple[TraceSummary, MathStats, StepTime, float]:
    """The window's math statistics, the step estimate, and the divisor that turns the trace's
    kernel milliseconds into milliseconds per step.

    A trace may hold more GPU work than its steps launched (kernels of an earlier step still
    queued when the window opened), so totals are scaled to the steps' own GPU time.
    """
    summary = view.summary
    if summary is None or not summary.steps:
        raise SkipRule("needs a profiler window or trace with steps to see which kernels ran")
    if not summary.has_gpu:
        raise SkipRule("no GPU activity in the trace: tensor cores do not apply")
    math = summary.math
    if math is None or math.eligible_ms <= 0:
        raise SkipRule("no GEMM, convolution or attention kernels in the trace")
    timing = view.timing
    if timing is None or timing.step_ms <= 0:
        raise SkipRule("no step time to compare the math against")
    return summary, math, timing, gpu_work_steps(summary)


def _floor_ms(timing: StepTime) -> float:
    """What a step keeps however fast the kernels run: host work, input waits, sync idling.

    A host estimate the step model could not separate from waiting on the GPU (a GPU-bound step
    whose host estimate came out above the GPU's) is an upper bound on host work, no floor: the
    saving then assumes the host keeps up, and the evidence says so.
    """
    if timing.host_ms is None:
        return timing.step_ms - (timing.gpu_busy_ms or 0.0)
    host = timing.host_ms if timing.host_separated else 0.0
    return host + timing.input_wait_ms + timing.sync_idle_ms


def _modelled_saving(
    timing: StepTime,
    math_ms: float,
    speedups: tuple[float, float, float],
    other_speedup: tuple[float, float, float],
    converted: float,
) -> tuple[float, float, float]:
    """(low, expected, upper bound) percent of the step saved when ``math_ms`` of the step's
    GPU work runs ``speedups`` faster and the ``converted`` share of the rest of its GPU work
    ``other_speedup`` faster (the share of the model the fix changes).

    All three keep the host's share as the step's floor, except the bound on a GPU-bound step:
    there the host waited on a full launch queue, and the trace cannot show how fast it would run
    once the GPU keeps up, so the bound assumes it keeps up with any GPU time.
    """
    busy = timing.gpu_busy_ms or 0.0
    math_ms = min(math_ms, busy)
    other = busy - math_ms
    floor = _floor_ms(timing)
    modelled = max(floor, busy)

    def saved(math_x: float, other_x: float, floor_ms: float) -> float:
        faster_other = other * (1 - converted) + other * converted / other_x
        new = max(floor_ms, math_ms / math_x + faster_other)
        return max(0.0, (modelled - new) / timing.step_ms * 100.0)

    low = saved(speedups[0], other_speedup[0], floor)
    expected = saved(speedups[1], other_speedup[1], floor)
    bound_floor = 0.0 if timing.bound == "gpu" else floor
    bound = saved(float("inf"), other_speedup[2], bound_floor)
    return low, expected, max(bound, expected)


def _gpu_saving_pct(timing: StepTime, removable_ms: float) -> float:
    """Share of the step saved if ``removable_ms`` of GPU work per step vanished.

    Host and GPU run as a pipeline, so faster kernels shorten the step only down to the host's
    own time: a host-bound step gains nothing from faster math.
    """
    busy = timing.gpu_busy_ms or 0.0
    removable = min(removable_ms, busy)
    floor = _floor_ms(timing)
    # Compare against the step the pipeline explains, not the measured one: a live step longer
    # than max(host, GPU) keeps that unexplained remainder whatever the kernels do, so removing
    # nothing must save nothing.
    modelled = max(floor, busy)
    new_step = max(floor, busy - removable)
    return max(0.0, (modelled - new_step) / timing.step_ms * 100.0)


def _fp32_ms(math: MathStats) -> tuple[float, str]:
    """GEMM/conv/attention kernel time launched in fp32, and how it was known."""
    known = sum(ms for dtype, ms in math.op_dtype_ms.items() if dtype != "unknown")
    if known >= 0.5 * math.eligible_ms:
        fp32 = sum(ms for dtype, ms in math.op_dtype_ms.items() if dtype in FP32_NAMES)
        return fp32 * math.eligible_ms / known, "dtype of the operators that launched them"
    return math.non_tensor_core_ms, "kernel names (operator dtypes not recorded)"


@rule("no-amp")
def no_amp(view: RunView) -> Finding | None:
    """fp32 matrix math on a GPU with tensor cores, without autocast."""
    record = view.record
    _, math, timing, n = _math(view)
    capability = view.capability
    if capability is not None and capability < 7.0:
        raise SkipRule(f"compute capability {capability:.1f} has no tensor cores")
    fp32_ms, how = _fp32_ms(math)
    per_step = fp32_ms / n
    share_of_math = fp32_ms / math.eligible_ms
    low, expected, bound = _modelled_saving(
        timing, per_step, AMP_MATH_SPEEDUP, AMP_OTHER_SPEEDUP, converted=share_of_math
    )
    if expected < NEGLIGIBLE_SAVING_PCT:
        return None
    autocast = record.environment.autocast
    evidence: dict[str, float | int | str | bool | None] = {
        "fp32_math_ms_per_step": round(per_step, 2),
        "fp32_share_of_math_pct": round(share_of_math * 100, 1),
        "math_ms_per_step": round(math.eligible_ms / n, 2),
        **step_evidence(timing),
        "gpu_busy_ms_per_step": round(timing.gpu_busy_ms or 0.0, 2),
        "gpu_busy_pct": _pct(timing.gpu_busy_share),
        "tensor_core_speedup_assumed_x": _speedups(AMP_MATH_SPEEDUP),
        "fp32_known_from": how,
        "compute_capability": capability,
        "autocast_regions": autocast.entered if autocast is not None else None,
    }
    tensor = view.tensor_active_pct
    if tensor is not None:
        evidence["gpm_tensor_active_pct"] = round(tensor, 1)
    dtype = "torch.bfloat16" if capability is None or capability >= 8.0 else "torch.float16"
    recommendation, snippet = _amp_fix(view, dtype)
    return Finding(
        id="no-amp",
        severity=severity_for_saving(expected),
        title=f"{share_of_math * 100:.0f}% of matrix math runs in fp32 without autocast",
        evidence=evidence,
        recommendation=recommendation,
        snippet=snippet,
        saving_pct_max=round(bound, 1),
        saving_pct=round(expected, 1),
        saving_pct_low=round(low, 1),
    )


def _amp_fix(view: RunView, dtype: str) -> tuple[str, str]:
    """(recommendation, snippet) of ``no-amp``: autocast around the loss with fp32 optimizer
    state for training; for inference, reduced-precision weights or an autocast call, with no
    loss, backward or GradScaler to mention but outputs that move slightly."""
    if not is_inference(view):
        scaler = (
            "bfloat16 needs no GradScaler."
            if dtype == "torch.bfloat16"
            else "float16 needs a GradScaler."
        )
        return (
            "Run the forward pass and loss under torch.autocast so GEMMs, convolutions and "
            "attention use tensor cores in reduced precision; keep the optimizer in fp32. "
            + scaler,
            f"with torch.autocast(device_type='cuda', dtype={dtype}):\n"
            "    loss = loss_fn(model(inputs), targets)\n"
            "loss.backward()\n"
            "optimizer.step()",
        )
    short = "bf16" if dtype == "torch.bfloat16" else "fp16"
    return (
        f"Run the model in {dtype.removeprefix('torch.')} so GEMMs, convolutions and attention "
        "use tensor cores: convert the weights once and cast the inputs too, or keep fp32 "
        "weights and run each forward call under torch.autocast. Reduced precision changes the "
        f"outputs slightly: `torchdiag try --fix amp={short}` measures the speedup and compares "
        "the outputs with the fp32 run's.",
        f"model = model.to({dtype})  # convert the weights once\n"
        "with torch.inference_mode():\n"
        f"    out = model(inputs.to({dtype}))\n"
        "# or keep fp32 weights and autocast the call:\n"
        f"with torch.inference_mode(), torch.autocast('cuda', dtype={dtype}):\n"
        "    out = model(inputs)",
    )


@rule("tf32-disabled")
def tf32_disabled(view: RunView) -> Finding | None:
    """fp32 GEMMs/convolutions on CUDA cores where TF32 tensor cores could run them."""
    record = view.record
    _, math, timing, n = _math(view)
    capability = view.capability
    if capability is not None and capability < 8.0:
        raise SkipRule(f"TF32 needs compute capability 8.0 or newer (found {capability:.1f})")
    env = record.environment
    if env.tf32_matmul and env.tf32_cudnn:
        return None
    non_tc = math.non_tensor_core_ms / n
    low, expected, bound = _modelled_saving(
        timing, non_tc, TF32_MATH_SPEEDUP, (1.0, 1.0, 1.0), converted=0.0
    )
    if expected < NEGLIGIBLE_SAVING_PCT:
        return None
    # Autocast moves the same matrix math to tensor cores (and further): when it applies, the
    # two findings claim the same time and only one of the fixes is taken.
    amp = no_amp(view) if env.autocast is None or not env.autocast.entered else None
    return Finding(
        id="tf32-disabled",
        severity=severity_for_saving(expected) if amp is None else "info",
        title="fp32 matrix math runs without TF32 tensor cores",
        evidence={
            "non_tensor_core_math_ms_per_step": round(non_tc, 2),
            "math_ms_per_step": round(math.eligible_ms / n, 2),
            "step_ms": round(timing.step_ms, 2),
            "tf32_speedup_assumed_x": _speedups(TF32_MATH_SPEEDUP),
            "tf32_matmul": env.tf32_matmul,
            "tf32_cudnn": env.tf32_cudnn,
            "float32_matmul_precision": env.float32_matmul_precision,
            "compute_capability": capability,
        },
        recommendation=(
            "Where full fp32 precision is not required, let fp32 matmuls and convolutions use "
            "TF32 tensor cores (10-bit mantissa, fp32 range). Autocast (no-amp) gains more: "
            "the two fixes claim the same time."
            + (
                " TF32 changes the outputs slightly: `torchdiag try --fix tf32` compares them "
                "with the fp32 run's."
                if is_inference(view)
                else ""
            )
        ),
        snippet=(
            "torch.backends.cuda.matmul.allow_tf32 = True\n"
            "torch.backends.cudnn.allow_tf32 = True\n"
            "# or: torch.set_float32_matmul_precision('high')"
        ),
        saving_pct_max=round(bound, 1),
        saving_pct=round(expected, 1),
        saving_pct_low=round(low, 1),
        alternative_to="no-amp" if amp is not None else None,
    )


@rule("channels-last")
def channels_last(view: RunView) -> Finding | None:
    """Convolutions in reduced precision fed NCHW tensors: cuDNN transposes them every call."""
    _, math, timing, n = _math(view)
    if math.conv_ms <= 0:
        raise SkipRule("no convolution kernels in the trace")
    half_ms = sum(ms for dtype, ms in math.op_dtype_ms.items() if dtype in HALF_NAMES)
    if math.op_dtype_ms and half_ms < 0.5 * math.eligible_ms:
        return None  # channels_last pays off with tensor-core (reduced precision) convolutions
    transform = math.layout_transform_ms / n
    if transform <= 0 and math.conv_nchw_ms <= math.conv_nhwc_ms:
        return None
    saving = _gpu_saving_pct(timing, transform)
    if saving < NEGLIGIBLE_SAVING_PCT:
        return None
    return Finding(
        id="channels-last",
        severity=severity_for_saving(saving),
        title="convolutions run on NCHW tensors and pay for layout transposes",
        evidence={
            "layout_transform_ms_per_step": round(transform, 2),
            "conv_ms_per_step": round(math.conv_ms / n, 2),
            "conv_nchw_ms_per_step": round(math.conv_nchw_ms / n, 2),
            "conv_nhwc_ms_per_step": round(math.conv_nhwc_ms / n, 2),
            "step_ms": round(timing.step_ms, 2),
        },
        recommendation=(
            "Keep the model and its inputs in channels_last memory format so tensor-core "
            "convolutions read NHWC directly instead of transposing around every call."
        ),
        snippet=(
            "model = model.to(memory_format=torch.channels_last)\n"
            "images = images.to(device, memory_format=torch.channels_last, non_blocking=True)"
        ),
        saving_pct_max=round(saving, 1),
    )


@rule("cudnn-benchmark")
def cudnn_benchmark(view: RunView) -> Finding | None:
    """Convolutions with fixed shapes while cuDNN autotuning is off."""
    record = view.record
    flag = record.environment.cudnn_benchmark
    if flag is None:
        raise SkipRule("torch.backends.cudnn.benchmark is only known from a live capture")
    if flag:
        return None
    _, math, timing, n = _math(view)
    if math.conv_ms <= 0:
        return None
    summary = view.summary
    shapes = {
        shape
        for op in (summary.top_ops if summary else [])
        if "conv" in op.name
        for shape in op.input_shapes
    }
    conv = math.conv_ms / n
    # Amdahl: the best algorithm can at most remove the convolutions' own time.
    saving = _gpu_saving_pct(timing, conv)
    if saving < NEGLIGIBLE_SAVING_PCT:
        return None
    return Finding(
        id="cudnn-benchmark",
        severity=severity_for_saving(saving),
        title="cuDNN autotuning (cudnn.benchmark) is off for a convolutional model",
        evidence={
            "cudnn_benchmark": flag,
            "conv_ms_per_step": round(conv, 2),
            "step_ms": round(timing.step_ms, 2),
            "distinct_conv_input_shapes": len(shapes),
        },
        recommendation=(
            "With fixed input shapes, let cuDNN time its convolution algorithms once and keep "
            f"the fastest. Leave it off if input shapes change every {step_noun(view)} (each new "
            "shape is autotuned again)."
            + (
                " The first calls with each shape pay for the tuning: warm the model up with "
                "the shapes it serves before timing or serving it."
                if is_inference(view)
                else ""
            )
        ),
        snippet="torch.backends.cudnn.benchmark = True",
        saving_pct_max=round(saving, 1),
    )


def _speedups(speedups: tuple[float, float, float]) -> str:
    low, expected, high = speedups
    return f"{low:g}–{high:g} (expected {expected:g})"


def _pct(share: float | None) -> float | None:
    return None if share is None else round(share * 100, 1)

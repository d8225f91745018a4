"""Every rule but the input ones (see test_input_rules.py) on small constructed records.

Each rule gets a record where it must fire (severity following the saving bound, the key
evidence numbers, a sensible snippet), a near miss where it must not, and the reason it is
skipped when the record lacks its data. Records are built by the helpers below: a trace window
(``_summary``) inside a trace-only (``_trace``) or live (``_live``) record, NVML samples
(``_samples``) and the environment.

In the constructed windows each step's host span is ``host_ms`` plus any DataLoader wait and
blocked sync time, with no profiler cost per event unless a test sets one, so the step model's
corrected host time is exactly ``host_ms`` and a trace's step is ``max(host + waits, GPU busy)``.
"""

from __future__ import annotations

import math
import statistics

import pytest
from viewing import analyze_record, analyzed

from torchdiag.analyze import compute
from torchdiag.analyze.finding import Finding, severity_for_saving
from torchdiag.record import (
    AutocastInfo,
    BreakdownMs,
    CopyStat,
    DeviceInfo,
    Environment,
    GpmSeries,
    GpuSeries,
    LaunchStats,
    LoaderInfo,
    MathStats,
    MemoryCategories,
    MemoryTimeline,
    OccupancyStats,
    OpStat,
    OptimizerInfo,
    OptimizerStepStat,
    ProfilerWindow,
    RunRecord,
    Samples,
    StepSeries,
    SyncStat,
    TraceStep,
    TraceSummary,
)
from torchdiag.view.profiler_cost import REFERENCE_US
from torchdiag.view.step_model import COVERAGE
from torchdiag.view.student_t import t_quantile

GIB = 2**30
N = 10  # steps in every constructed trace window


def _device(capability: str = "9.0", memory_gib: float = 80) -> DeviceInfo:
    return DeviceInfo(
        index=0,
        name="constructed GPU",
        capability=capability,
        memory_total_bytes=int(memory_gib * GIB),
    )


def _summary(
    *,
    host_ms: float = 20.0,
    gpu_busy_ms: float = 95.0,
    dataloader_ms: float = 0.0,
    syncs_per_step: int = 0,
    sync_ms: float = 0.0,
    idle_after_sync_ms: float = 0.0,
    launches: int = 100,
    has_gpu: bool = True,
    capability: str = "9.0",
    memory_gib: float = 80,
    steps: int = N,
    **fields,
) -> TraceSummary:
    """A profiled window of ``steps`` identical steps (per-step figures in milliseconds)."""
    duration = host_ms + dataloader_ms + sync_ms
    busy = gpu_busy_ms if has_gpu else 0.0
    trace_steps = [
        TraceStep(
            number=i,
            start_us=i * duration * 1e3,
            duration_ms=duration,
            breakdown=BreakdownMs(
                wall=duration, compute=min(busy, duration), input_wait=dataloader_ms
            ),
            kernels=launches if has_gpu else 0,
            gpu_busy_ms=busy,
            dataloader_ms=dataloader_ms,
            launches=launches if has_gpu else 0,
            syncs=syncs_per_step,
            sync_ms=sync_ms,
            idle_after_sync_ms=idle_after_sync_ms,
        )
        for i in range(steps)
    ]
    return TraceSummary(
        origin="constructed",
        format="kineto",
        has_gpu=has_gpu,
        device_kind="cuda" if has_gpu else None,
        devices=[_device(capability, memory_gib)] if has_gpu else [],
        step_detection="profiler-step",
        steps=trace_steps,
        window_ms=max(duration, busy) * steps,
        window_gpu_busy_ms=busy * steps,
        gpu_busy_ms=busy * steps,
        kernel_count=launches * steps if has_gpu else 0,
        kernel_time_ms=busy * steps,
        **fields,
    )


def _trace(summary: TraceSummary, env: Environment | None = None) -> RunRecord:
    return RunRecord(source="trace", traces=[summary], environment=env or Environment())


def _live(
    *,
    step_ms: float = 100.0,
    steps: int = 20,
    walls: list[float] | None = None,
    profiled: list[bool] | None = None,
    summary: TraceSummary | None = None,
    samples: Samples | None = None,
    env: Environment | None = None,
) -> RunRecord:
    """A live record: one row per step, the first step slow (start-up), none profiled."""
    walls = walls if walls is not None else [step_ms * 10] + [step_ms] * (steps - 1)
    n = len(walls)
    starts = [sum(walls[:i]) / 1e3 for i in range(n)]
    series = StepSeries(
        detection="optimizer",
        count=n,
        total_wall_s=sum(walls) / 1e3,
        first_step=list(range(n)),
        steps=[1] * n,
        start_s=starts,
        wall_ms=list(walls),
        input_wait_ms=[0.0] * n,
        max_wall_ms=list(walls),
        profiled=profiled if profiled is not None else [False] * n,
    )
    window = None
    if summary is not None:
        window = ProfilerWindow(first_step=1, steps=len(summary.steps), summary=summary)
    return RunRecord(
        source="live",
        steps=series,
        samples=samples,
        environment=env or Environment(devices=[_device()]),
        profiler=window,
    )


def _samples(*gpus: GpuSeries) -> Samples:
    rows = max(len(g.utilization_pct) for g in gpus)
    return Samples(
        sample_count=rows,
        t_s=[i * 0.5 for i in range(rows)],
        rows_merged=[1] * rows,
        gpus=list(gpus),
    )


def _run(record: RunRecord) -> tuple[dict[str, Finding], dict[str, str]]:
    analysis = analyze_record(record)
    return {f.id: f for f in analysis.findings}, {s.id: s.reason for s in analysis.skipped}


def _finding(record: RunRecord, rule_id: str, *, banded: bool = True) -> Finding:
    """The rule's finding; ``banded``: its severity follows from its expected saving (the bound
    where the rule models none), and an alternative to another finding is a note."""
    found, skipped = _run(record)
    assert rule_id in found, f"{rule_id} did not fire (skipped: {skipped.get(rule_id)})"
    f = found[rule_id]
    if banded:
        saving = f.saving_pct if f.saving_pct is not None else f.saving_pct_max
        expected = "info" if f.alternative_to else severity_for_saving(saving)
        assert f.severity == expected
        if f.saving_pct is not None:
            assert f.saving_pct_low <= f.saving_pct <= f.saving_pct_max
    assert f.snippet.strip() and f.recommendation.strip() and f.title.strip()
    assert f.docs == f"docs/rules.md#{rule_id}"
    return f


def _absent(record: RunRecord, rule_id: str) -> None:
    found, skipped = _run(record)
    assert rule_id not in skipped, f"{rule_id} skipped: {skipped[rule_id]}"
    assert rule_id not in found, f"{rule_id} fired: {found[rule_id].title}"


def _skip_reason(record: RunRecord, rule_id: str) -> str:
    found, skipped = _run(record)
    assert rule_id not in found
    assert rule_id in skipped, f"{rule_id} was not skipped"
    return skipped[rule_id]


def _fp32_math(per_step_ms: float = 60.0, **fields) -> MathStats:
    total = per_step_ms * N
    return MathStats(
        eligible_ms=total,
        non_tensor_core_ms=total,
        op_dtype_ms={"float": total},
        **fields,
    )


# ---------------------------------------------------------------------------------------------
# pin-memory


def _pageable(total_ms: float = 100.0, mib_per_step: float = 64.0, pageable: bool = True):
    return [
        CopyStat(
            name="Memcpy HtoD (Pageable -> Device)"
            if pageable
            else "Memcpy HtoD (Pinned -> Device)",
            direction="HtoD",
            pageable=pageable,
            count=N,
            bytes=int(mib_per_step * 2**20) * N,
            total_ms=total_ms,
        )
    ]


def test_pin_memory_fires_with_the_copy_time_as_bound():
    f = _finding(_trace(_summary(copies=_pageable(100.0))), "pin-memory")
    # 10 ms of pageable copies per 95 ms step.
    assert f.saving_pct_max == pytest.approx(10 / 95 * 100, abs=0.05)
    assert f.severity == "warning"
    assert f.evidence["pageable_copies"] == N
    assert f.evidence["pageable_mib_per_step"] == pytest.approx(64.0)
    assert f.evidence["pageable_copy_ms_per_step"] == pytest.approx(10.0)
    # 640 MiB in 0.1 s.
    assert f.evidence["pageable_bandwidth_gb_s"] == pytest.approx(640 * 2**20 / 0.1 / 1e9, 0.01)
    assert "pin_memory=True" in f.snippet and "non_blocking=True" in f.snippet


def test_pin_memory_critical_and_reports_the_loader_flag():
    env = Environment(loaders=[LoaderInfo(loader_id=0, batch_size=64, pin_memory=False)])
    record = _live(summary=_summary(copies=_pageable(300.0)), env=env)
    f = _finding(record, "pin-memory")
    assert f.saving_pct_max == pytest.approx(30.0)  # 30 ms of a 100 ms live step
    assert f.severity == "critical"
    assert f.evidence["loader_pin_memory"] is False


def test_pin_memory_ignores_pinned_copies():
    _absent(_trace(_summary(copies=_pageable(300.0, pageable=False))), "pin-memory")


def test_pin_memory_skipped_without_a_window():
    assert "profiler window or trace" in _skip_reason(_live(), "pin-memory")


# ---------------------------------------------------------------------------------------------
# no-amp


def _amp_saving(math_x: float, other_x: float, floor: float, math=60.0, busy=95.0, step=95.0):
    """Percent saved when ``math`` ms of fp32 math run ``math_x`` faster and the rest of the GPU
    work ``other_x`` faster, the step keeping at least ``floor`` ms."""
    new = max(floor, math / math_x + (busy - math) / other_x)
    return (max(floor, busy) - new) / step * 100


def test_no_amp_gpu_bound_fp32_is_critical():
    f = _finding(_trace(_summary(math=_fp32_math(60.0))), "no-amp")
    # GPU-bound: 95 ms busy, 60 ms of it fp32 math, host 20 ms. The expected saving keeps the
    # host's 20 ms; the bound (a GPU-bound step: the host's time is not known) keeps only the
    # rest of the GPU work at its fastest.
    low_x, mid_x, _ = compute.AMP_MATH_SPEEDUP
    other_low, other_mid, other_high = compute.AMP_OTHER_SPEEDUP
    assert f.saving_pct == pytest.approx(_amp_saving(mid_x, other_mid, 20.0), abs=0.05)
    assert f.saving_pct_low == pytest.approx(_amp_saving(low_x, other_low, 20.0), abs=0.05)
    assert f.saving_pct_max == pytest.approx(_amp_saving(math.inf, other_high, 0.0), abs=0.05)
    assert f.saving_pct_low <= f.saving_pct <= f.saving_pct_max
    assert f.severity == "critical"
    assert f.evidence["fp32_math_ms_per_step"] == pytest.approx(60.0)
    assert f.evidence["fp32_share_of_math_pct"] == pytest.approx(100.0)
    assert f.evidence["step_ms"] == pytest.approx(95.0)
    assert f.evidence["compute_capability"] == pytest.approx(9.0)
    assert "dtype" in f.evidence["fp32_known_from"]
    assert "torch.autocast(device_type='cuda', dtype=torch.bfloat16)" in f.snippet


def test_no_amp_small_fp32_share_is_a_warning():
    math = MathStats(eligible_ms=600.0, op_dtype_ms={"float": 80.0, "c10::BFloat16": 520.0})
    f = _finding(_trace(_summary(math=math)), "no-amp")
    assert f.evidence["fp32_math_ms_per_step"] == pytest.approx(8.0)
    assert f.evidence["fp32_share_of_math_pct"] == pytest.approx(13.3)
    # 13% of the model converts: the other kernels speed up only in that share.
    share = 80 / 600
    other = 1 - share + share / compute.AMP_OTHER_SPEEDUP[1]
    expected = _amp_saving(compute.AMP_MATH_SPEEDUP[1], 1 / other, 20.0, math=8.0)
    assert f.saving_pct == pytest.approx(expected, abs=0.05)
    assert f.severity == "warning"


def test_no_amp_host_floor_caps_the_saving():
    # Pipeline model: faster math shortens the step only down to the host's 70 ms.
    f = _finding(_trace(_summary(host_ms=70.0, math=_fp32_math(60.0))), "no-amp")
    assert f.saving_pct == pytest.approx((95 - 70) / 95 * 100, abs=0.05)


def test_no_amp_on_a_host_bound_step_saves_little():
    # The host takes 90 ms, the GPU 60 ms of which 50 are fp32 math: faster math wins nothing.
    record = _trace(_summary(host_ms=90.0, gpu_busy_ms=60.0, math=_fp32_math(50.0)))
    _absent(record, "no-amp")
    # The same math on a GPU-bound step is the top finding.
    assert _finding(_trace(_summary(math=_fp32_math(50.0))), "no-amp").severity == "critical"


def test_a_gpu_busy_for_nearly_all_of_the_step_is_the_bound():
    # The reported fp32 inference trace: the host estimate (profiled host time less a per-event
    # cost) lands 15% above the GPU's, though the GPU was busy 96% of the un-profiled step. The
    # host side is not trusted past its error: the GPU is the bound, the step is the GPU's, the
    # host estimate is kept as an upper bound, and faster math is the top finding.
    record = _trace(_summary(host_ms=110.0, gpu_busy_ms=95.0, math=_fp32_math(60.0)))
    view, analysis = analyzed(record)
    timing = view.timing
    assert timing.bound == "gpu" and not timing.host_separated
    assert timing.step_ms == pytest.approx(95.0)
    assert timing.range_ms == pytest.approx((95.0, 110.0))
    assert view.headline["bound"] == "gpu"
    assert view.headline["gpu_busy_pct"] == pytest.approx(100.0)
    found = {f.id: f for f in analysis.findings}
    assert "cpu-bound" not in found  # no "the GPU waits on the host for 13%"
    amp = _finding(record, "no-amp")
    assert amp.severity == "critical"
    assert amp.evidence["host_ms_per_step_at_most"] == pytest.approx(110.0)
    assert "estimate's error" in amp.evidence["bound_from"]


@pytest.mark.parametrize("gpu_busy_ms", [60.0, 80.0])
def test_a_gpu_idle_for_more_than_the_host_estimates_error_waits_on_the_host(gpu_busy_ms):
    # Busy 55% or 73% of a 110 ms host-bound step: the idle time is the host's, as before.
    record = _trace(_summary(host_ms=110.0, gpu_busy_ms=gpu_busy_ms, math=_fp32_math(50.0)))
    view, analysis = analyzed(record)
    assert view.timing.bound == "host" and view.timing.host_separated
    assert view.timing.step_ms == pytest.approx(110.0)
    assert "cpu-bound" in {f.id for f in analysis.findings}
    _absent(record, "no-amp")


def test_a_live_gpu_busy_for_nearly_all_of_the_step_is_the_bound():
    # Live steps of 100 ms, the window's GPU busy 90 ms, its host estimate 95 ms.
    summary = _summary(host_ms=95.0, gpu_busy_ms=90.0, math=_fp32_math(60.0))
    view, _ = analyzed(_live(summary=summary))
    assert view.timing.bound == "gpu" and not view.timing.host_separated
    assert view.timing.step_ms == pytest.approx(100.0)  # measured: the bound does not move it


def test_a_measured_step_has_the_t_interval_of_its_steady_rows():
    # Identical steps: a measured mean with no spread.
    assert analyzed(_live())[0].timing.range_ms == pytest.approx((100.0, 100.0))
    walls = [1000.0] + [96.0, 104.0] * 5  # the first step is start-up, left out
    view, _ = analyzed(_live(walls=walls))
    timing = view.timing
    assert timing.measured and timing.step_ms == pytest.approx(100.0)
    sd = statistics.stdev(walls[1:])
    half = t_quantile(0.5 + COVERAGE / 2, 9) * sd / math.sqrt(10)
    assert timing.range_ms == pytest.approx((100.0 - half, 100.0 + half))
    assert view.headline["step_ms_estimate_coverage"] == COVERAGE


def test_an_estimated_range_is_never_zero_width():
    # A GPU-bound window whose kernels leave gaps: the step lies between busy and span.
    summary = _summary(host_ms=40.0, gpu_busy_ms=95.0, math=_fp32_math(60.0))
    summary.window_gpu_span_ms = summary.window_gpu_busy_ms * 1.02
    timing = analyzed(_trace(summary))[0].timing
    assert timing.bound == "gpu"
    assert timing.range_ms == pytest.approx((95.0, 95.0 * 1.02))
    # A host-bound window of steps of different lengths: their spread widens the cost's range.
    steady = analyzed(_trace(_summary(host_ms=90.0, gpu_busy_ms=30.0)))[0].timing
    spread = _summary(host_ms=90.0, gpu_busy_ms=30.0)
    for i, step in enumerate(spread.steps):
        step.duration_ms += 8.0 if i % 2 else -8.0
    varied = analyzed(_trace(spread))[0].timing
    assert varied.step_ms == pytest.approx(steady.step_ms)
    (low, high), (s_low, s_high) = varied.range_ms, steady.range_ms
    assert low < s_low <= s_high < high  # the constructed steps record no events: no cost


def test_no_amp_live_saving_counts_only_modelled_gpu_time():
    # Live steps take 100 ms while the window shows 30 ms of host and 60 ms of GPU work per step
    # (the rest is outside both). Removing 3 ms of fp32 math can save at most those 3 ms.
    summary = _summary(host_ms=30.0, gpu_busy_ms=60.0, math=_fp32_math(3.0))
    f = _finding(_live(summary=summary), "no-amp")
    mid_x, other_x = compute.AMP_MATH_SPEEDUP[1], compute.AMP_OTHER_SPEEDUP[1]
    saved = 3.0 - 3.0 / mid_x + 57.0 * (1 - 1 / other_x)
    assert f.saving_pct == pytest.approx(saved, abs=0.05)  # of the 100 ms live step
    assert f.severity == severity_for_saving(f.saving_pct)


def test_no_amp_falls_back_to_kernel_names_without_dtypes():
    math = MathStats(eligible_ms=600.0, tensor_core_ms=300.0, non_tensor_core_ms=300.0)
    f = _finding(_trace(_summary(math=math)), "no-amp")
    assert f.evidence["fp32_math_ms_per_step"] == pytest.approx(30.0)
    assert "kernel names" in f.evidence["fp32_known_from"]
    assert f.evidence["fp32_share_of_math_pct"] == pytest.approx(50.0)


def test_no_amp_before_ampere_suggests_fp16_with_a_scaler():
    env = Environment(autocast=AutocastInfo(entered=0))
    record = _live(summary=_summary(capability="7.5", math=_fp32_math(60.0)), env=env)
    f = _finding(record, "no-amp")
    assert "torch.float16" in f.snippet
    assert "GradScaler" in f.recommendation
    assert f.evidence["autocast_regions"] == 0


def test_no_amp_reports_gpm_tensor_activity():
    gpu = GpuSeries(
        index=0,
        utilization_pct=[100.0, 100.0],
        gpm=GpmSeries(tensor_active_pct=[2.0, 4.0], sm_active_pct=[90.0, 90.0]),
    )
    record = _live(summary=_summary(math=_fp32_math(60.0)), samples=_samples(gpu))
    assert _finding(record, "no-amp").evidence["gpm_tensor_active_pct"] == pytest.approx(3.0)


def test_no_amp_silent_on_half_precision_math():
    math = MathStats(eligible_ms=600.0, tensor_core_ms=600.0, op_dtype_ms={"c10::BFloat16": 600.0})
    _absent(_trace(_summary(math=math)), "no-amp")


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (_trace(_summary(capability="6.0", math=_fp32_math())), "no tensor cores"),
        (_trace(_summary()), "no GEMM"),
        (_trace(_summary(has_gpu=False)), "no GPU activity"),
        (_live(), "needs a profiler window"),
    ],
    ids=["pascal", "no-math", "cpu-only", "no-window"],
)
def test_no_amp_skips(record, reason):
    assert reason in _skip_reason(record, "no-amp")


# ---------------------------------------------------------------------------------------------
# tf32-disabled


def test_tf32_disabled_fires_on_cuda_core_math():
    math = MathStats(eligible_ms=600.0, non_tensor_core_ms=400.0, tensor_core_ms=200.0)
    env = Environment(devices=[_device()], tf32_matmul=False, tf32_cudnn=True)
    f = _finding(_trace(_summary(math=math), env), "tf32-disabled")
    assert f.evidence["non_tensor_core_math_ms_per_step"] == pytest.approx(40.0)
    assert f.evidence["math_ms_per_step"] == pytest.approx(60.0)
    assert f.evidence["tf32_matmul"] is False
    mid_x = compute.TF32_MATH_SPEEDUP[1]
    assert f.saving_pct == pytest.approx((40 - 40 / mid_x) / 95 * 100, abs=0.05)
    assert f.saving_pct_max == pytest.approx(40 / 95 * 100, abs=0.05)
    # No autocast recorded in a trace: the same math is the no-amp finding's, so this is its
    # alternative, not an added saving.
    assert f.alternative_to == "no-amp"
    assert f.severity == "info"
    assert "allow_tf32 = True" in f.snippet


def test_tf32_disabled_warning_band():
    math = MathStats(eligible_ms=600.0, non_tensor_core_ms=80.0, tensor_core_ms=520.0)
    env = Environment(devices=[_device()], autocast=AutocastInfo(entered=3))
    f = _finding(_live(summary=_summary(math=math), env=env), "tf32-disabled")
    mid_x = compute.TF32_MATH_SPEEDUP[1]
    assert f.saving_pct == pytest.approx(8 - 8 / mid_x, abs=0.05)  # of the 100 ms live step
    assert f.alternative_to is None  # autocast is on: no-amp cannot claim this time
    assert f.severity == "warning"


def test_tf32_disabled_silent_when_tf32_is_on():
    env = Environment(devices=[_device()], tf32_matmul=True, tf32_cudnn=True)
    _absent(_live(summary=_summary(math=_fp32_math()), env=env), "tf32-disabled")


def test_tf32_disabled_silent_when_math_uses_tensor_cores():
    math = MathStats(eligible_ms=600.0, tensor_core_ms=600.0)
    _absent(_trace(_summary(math=math)), "tf32-disabled")


def test_tf32_disabled_skipped_before_ampere():
    reason = _skip_reason(_trace(_summary(capability="7.0", math=_fp32_math())), "tf32-disabled")
    assert "8.0" in reason


# ---------------------------------------------------------------------------------------------
# channels-last


def _half_conv_math(transform_ms: float = 150.0, nchw: bool = True) -> MathStats:
    return MathStats(
        eligible_ms=600.0,
        tensor_core_ms=600.0,
        op_dtype_ms={"c10::Half": 600.0},
        conv_ms=500.0,
        conv_nchw_ms=500.0 if nchw else 0.0,
        conv_nhwc_ms=0.0 if nchw else 500.0,
        layout_transform_ms=transform_ms,
    )


def test_channels_last_bound_is_the_transposes():
    f = _finding(_trace(_summary(math=_half_conv_math(150.0))), "channels-last")
    assert f.evidence["layout_transform_ms_per_step"] == pytest.approx(15.0)
    assert f.evidence["conv_ms_per_step"] == pytest.approx(50.0)
    assert f.evidence["conv_nchw_ms_per_step"] == pytest.approx(50.0)
    assert f.saving_pct_max == pytest.approx(15 / 95 * 100, abs=0.05)
    assert f.severity == "warning"
    assert "channels_last" in f.snippet


def test_channels_last_silent_on_fp32_convolutions():
    math = _half_conv_math(150.0)
    math.op_dtype_ms = {"float": 600.0}
    _absent(_trace(_summary(math=math)), "channels-last")


def test_channels_last_silent_when_already_nhwc():
    _absent(_trace(_summary(math=_half_conv_math(0.0, nchw=False))), "channels-last")


def test_channels_last_skipped_without_convolutions():
    math = MathStats(eligible_ms=600.0, tensor_core_ms=600.0, op_dtype_ms={"c10::Half": 600.0})
    assert "no convolution" in _skip_reason(_trace(_summary(math=math)), "channels-last")


# ---------------------------------------------------------------------------------------------
# cudnn-benchmark


def _conv_ops() -> list[OpStat]:
    return [
        OpStat(
            name="aten::cudnn_convolution",
            calls=N,
            input_shapes=[
                "[[64, 3, 224, 224], [64, 3, 7, 7]]",
                "[[64, 64, 56, 56], [64, 64, 3, 3]]",
            ],
        ),
        OpStat(
            name="aten::convolution", calls=N, input_shapes=["[[64, 3, 224, 224], [64, 3, 7, 7]]"]
        ),
        OpStat(name="aten::addmm", calls=N, input_shapes=["[[1000], [64, 2048], [2048, 1000]]"]),
    ]


def _conv_math(conv_ms_per_step: float) -> MathStats:
    total = conv_ms_per_step * N
    return MathStats(
        eligible_ms=total, tensor_core_ms=total, op_dtype_ms={"c10::BFloat16": total}, conv_ms=total
    )


def test_cudnn_benchmark_off_with_convolutions():
    env = Environment(devices=[_device()], cudnn_benchmark=False)
    summary = _summary(math=_conv_math(30.0), top_ops=_conv_ops())
    f = _finding(_live(summary=summary, env=env), "cudnn-benchmark")
    # Live step 100 ms, GPU busy 95 ms of which 30 ms convolutions, host 20 ms: the GPU side
    # could fall to 65 ms, so the step at most by 30 ms.
    assert f.saving_pct_max == pytest.approx(30.0, abs=0.05)
    assert f.severity == "critical"
    assert f.evidence["cudnn_benchmark"] is False
    assert f.evidence["conv_ms_per_step"] == pytest.approx(30.0)
    assert f.evidence["distinct_conv_input_shapes"] == 2
    assert f.snippet == "torch.backends.cudnn.benchmark = True"


def test_cudnn_benchmark_silent_when_on():
    env = Environment(devices=[_device()], cudnn_benchmark=True)
    _absent(_live(summary=_summary(math=_conv_math(30.0)), env=env), "cudnn-benchmark")


def test_cudnn_benchmark_silent_without_convolutions():
    env = Environment(devices=[_device()], cudnn_benchmark=False)
    _absent(_live(summary=_summary(math=_fp32_math()), env=env), "cudnn-benchmark")


def test_cudnn_benchmark_skipped_on_traces():
    reason = _skip_reason(_trace(_summary(math=_conv_math(30.0))), "cudnn-benchmark")
    assert "live capture" in reason


# ---------------------------------------------------------------------------------------------
# cpu-bound


def test_cpu_bound_starved_gpu_is_critical():
    f = _finding(_trace(_summary(host_ms=90.0, gpu_busy_ms=30.0)), "cpu-bound")
    assert f.saving_pct_max == pytest.approx(60 / 90 * 100, abs=0.05)
    assert f.severity == "critical"
    assert f.evidence["gpu_busy_pct"] == pytest.approx(33.3)
    assert f.evidence["host_ms_per_step"] == pytest.approx(90.0)
    assert f.evidence["step_ms"] == pytest.approx(90.0)
    assert f.evidence["kernels_per_step"] == pytest.approx(100.0)
    assert "torch.compile" in f.snippet


def test_cpu_bound_is_info_when_the_gpu_is_busy_half_the_step():
    f = _finding(_trace(_summary(host_ms=100.0, gpu_busy_ms=60.0)), "cpu-bound", banded=False)
    assert f.saving_pct_max == pytest.approx(40.0, abs=0.05)  # still reported as a bound
    assert f.severity == "info"  # the bound alone would make it critical
    assert f.evidence["gpu_busy_pct"] == pytest.approx(60.0)


def test_cpu_bound_does_not_blame_input_waits_on_the_host():
    # 90 ms steps: 40 ms waiting for data, 44 ms GPU busy: only 6 ms idle is the host's.
    record = _trace(_summary(host_ms=50.0, dataloader_ms=40.0, gpu_busy_ms=44.0))
    f = _finding(record, "cpu-bound")
    assert f.saving_pct_max == pytest.approx(6 / 90 * 100, abs=0.05)
    assert f.severity == "warning"
    assert f.evidence["input_wait_ms_per_step"] == pytest.approx(40.0)


def test_cpu_bound_from_nvml_on_a_live_run():
    gpu = GpuSeries(index=0, utilization_pct=[30.0] * 4)
    f = _finding(_live(samples=_samples(gpu)), "cpu-bound")
    assert f.saving_pct_max == pytest.approx(70.0)
    assert "NVML" in f.evidence["step_time_from"]


def test_cpu_bound_silent_when_gpu_bound():
    _absent(_trace(_summary(host_ms=20.0, gpu_busy_ms=95.0)), "cpu-bound")


def test_cpu_bound_discounts_profiler_cost():
    # The profiled host spans take 100 ms per step, but 90 ms of that is the profiler's cost
    # (10,000 events per step at 9 us): without it the host needs 10 ms and the 40 ms GPU
    # sets the pace.
    profiled = _summary(host_ms=100.0, gpu_busy_ms=40.0, host_events=100_000, profiler_event_us=9.0)
    _absent(_trace(profiled), "cpu-bound")
    f = _finding(_trace(_summary(host_ms=100.0, gpu_busy_ms=40.0)), "cpu-bound")
    assert f.saving_pct_max == pytest.approx(60.0)


def test_cpu_bound_skipped_without_gpu_data():
    reason = _skip_reason(_trace(_summary(has_gpu=False)), "cpu-bound")
    assert "no GPU activity" in reason
    assert "no steps" in _skip_reason(RunRecord(), "cpu-bound")


# ---------------------------------------------------------------------------------------------
# launch-overhead


def _launches(per_step: int = 1000, launch_us: float = 20.0, short: float = 0.8) -> LaunchStats:
    total = per_step * N
    return LaunchStats(
        launches=total,
        launch_ms=total * launch_us / 1e3,  # every launch typical: none blocked on a full queue
        median_launch_us=launch_us,
        median_kernel_us=5.0,
        p90_kernel_us=12.0,
        short_kernels=int(total * short),
    )


def test_launch_overhead_many_short_kernels():
    summary = _summary(host_ms=60.0, gpu_busy_ms=20.0, launches=1000, launch=_launches())
    f = _finding(_trace(summary), "launch-overhead")
    # 1000 launches x 20 us = 20 ms per 60 ms step, within the 40 ms the GPU waits on the host.
    assert f.saving_pct_max == pytest.approx(20 / 60 * 100, abs=0.05)
    assert f.severity == "critical"
    assert f.evidence["kernels_per_step"] == pytest.approx(1000)
    assert f.evidence["short_kernel_pct"] == pytest.approx(80.0)
    assert f.evidence["launch_ms_per_step"] == pytest.approx(20.0)
    assert f.evidence["cuda_graph_launches"] == 0
    assert "reduce-overhead" in f.snippet


def test_launch_overhead_warning_band():
    launch = _launches(launch_us=5.0)
    summary = _summary(host_ms=60.0, gpu_busy_ms=20.0, launches=1000, launch=launch)
    f = _finding(_trace(summary), "launch-overhead")
    assert f.saving_pct_max == pytest.approx(5 / 60 * 100, abs=0.05)
    assert f.severity == "warning"


def test_launch_overhead_capped_by_host_bound_idle():
    # 20 ms of launches per step, but the GPU waits on the host only 10 of 60 ms.
    summary = _summary(host_ms=60.0, gpu_busy_ms=50.0, launches=1000, launch=_launches())
    f = _finding(_trace(summary), "launch-overhead")
    assert f.saving_pct_max == pytest.approx(10 / 60 * 100, abs=0.05)


def test_launch_overhead_silent_when_most_kernels_are_long():
    summary = _summary(host_ms=60.0, gpu_busy_ms=20.0, launches=1000, launch=_launches(short=0.4))
    _absent(_trace(summary), "launch-overhead")


def test_launch_overhead_silent_when_gpu_bound():
    summary = _summary(host_ms=20.0, gpu_busy_ms=95.0, launches=1000, launch=_launches())
    _absent(_trace(summary), "launch-overhead")


def test_launch_overhead_skips():
    assert "kernel launches" in _skip_reason(_trace(_summary()), "launch-overhead")
    empty = _summary(launch=LaunchStats())
    assert "no kernel launches" in _skip_reason(_trace(empty), "launch-overhead")


# ---------------------------------------------------------------------------------------------
# small-batch


def _small_batch_summary(fill_pct: float = 25.0, peak_gib: float = 10.0, **fields):
    return _summary(
        occupancy=OccupancyStats(kernels_with_launch_info=1000, sm_efficiency_pct=fill_pct),
        memory=[
            MemoryTimeline(
                peak_allocated_bytes=int(peak_gib * 0.8 * GIB),
                peak_reserved_bytes=int(peak_gib * GIB),
            )
        ],
        **fields,
    )


def test_small_batch_fires_with_low_sm_fill_and_headroom():
    summary = _small_batch_summary(batch_size=8, batch_size_source="aten::conv2d input")
    f = _finding(_trace(summary), "small-batch")
    assert f.evidence["batch_size"] == 8
    assert f.evidence["batch_size_from"] == "aten::conv2d input"
    assert f.evidence["gpu_busy_pct_of_compute"] == pytest.approx(100.0)
    assert f.evidence["sm_fill_pct"] == pytest.approx(25.0)
    assert f.evidence["useful_gpu_pct"] == pytest.approx(25.0)
    assert f.evidence["memory_headroom_x"] == pytest.approx(8.0)
    assert f.saving_pct_max == pytest.approx(75.0)
    assert f.severity == "critical"
    assert "batch_size=32" in f.snippet


def test_small_batch_prefers_the_loader_batch_size_and_gpm_fill():
    gpu = GpuSeries(
        index=0,
        utilization_pct=[100.0] * 4,
        gpm=GpmSeries(sm_active_pct=[20.0] * 4),
    )
    env = Environment(devices=[_device()], loaders=[LoaderInfo(loader_id=0, batch_size=16)])
    record = _live(summary=_summary(batch_size=999), samples=_samples(gpu), env=env)
    f = _finding(record, "small-batch")
    assert f.evidence["batch_size"] == 16
    assert f.evidence["sm_fill_from"] == "NVML GPM"
    assert f.evidence["sm_fill_pct"] == pytest.approx(20.0)
    # The live step is 100 ms and the GPU busy 95 ms of it.
    assert f.evidence["useful_gpu_pct"] == pytest.approx(19.0)


def test_small_batch_gpm_fill_is_measured_while_kernels_run():
    # The GPU was busy in half the samples, at 60% SM activity; idle samples read 0 for both.
    # The fill while kernels ran is 60%, so 95% busy x 60% = 57% useful: no finding.
    gpu = GpuSeries(
        index=0,
        utilization_pct=[100.0, 0.0] * 4,
        gpm=GpmSeries(sm_active_pct=[60.0, 0.0] * 4),
    )
    env = Environment(devices=[_device()], loaders=[LoaderInfo(loader_id=0, batch_size=16)])
    _absent(_live(summary=_summary(), samples=_samples(gpu), env=env), "small-batch")


def test_small_batch_silent_without_memory_headroom():
    summary = _small_batch_summary(peak_gib=50.0, batch_size=8)  # 80 / 50 = 1.6x
    _absent(_trace(summary), "small-batch")


def test_small_batch_silent_when_the_gpu_is_well_used():
    _absent(_trace(_small_batch_summary(fill_pct=60.0, batch_size=8)), "small-batch")


def test_small_batch_skipped_without_a_batch_size():
    reason = _skip_reason(_trace(_small_batch_summary()), "small-batch")
    assert "batch size is unknown" in reason
    assert "no GPU activity" in _skip_reason(_trace(_summary(has_gpu=False)), "small-batch")


# ---------------------------------------------------------------------------------------------
# optimizer-not-fused


def _optimizer_step(foreach_ops: float = 0.0, total_ms: float = 100.0) -> OptimizerStepStat:
    return OptimizerStepStat(
        name="Optimizer.step#Adam.step",
        calls=N,
        total_ms=total_ms,
        ops_per_call=200.0,
        foreach_ops_per_call=foreach_ops,
        kernels_per_call=150.0,
    )


def test_optimizer_not_fused_single_tensor_loop():
    summary = _summary(host_ms=60.0, gpu_busy_ms=20.0, optimizer_steps=[_optimizer_step()])
    f = _finding(_trace(summary), "optimizer-not-fused")
    # No view operators to read the profiler's cost from: the reference cost per event is taken
    # out of the loop's 350 events per call.
    host = 10.0 - 350 * REFERENCE_US / 1e3
    assert f.evidence["optimizer_host_ms_per_step"] == pytest.approx(host)
    assert f.evidence["ops_per_step"] == pytest.approx(200.0)
    assert f.evidence["multi_tensor_ops_per_step"] == 0
    assert f.saving_pct_max == pytest.approx(host / 60 * 100, abs=0.05)
    assert f.severity == "warning"
    assert "Adam" in f.title
    assert "torch.optim.Adam(" in f.snippet and "fused=True" in f.snippet


def test_optimizer_not_fused_discounts_profiler_cost():
    # 350 recorded events per call at 10 us: 3.5 ms of the 10 ms is the profiler's.
    summary = _summary(
        host_ms=60.0,
        gpu_busy_ms=20.0,
        optimizer_steps=[_optimizer_step()],
        profiler_event_us=10.0,
    )
    f = _finding(_trace(summary), "optimizer-not-fused")
    assert f.evidence["optimizer_host_ms_per_step"] == pytest.approx(6.5)


def test_optimizer_not_fused_capped_by_host_bound_idle():
    # 30 ms of optimizer host time, but the GPU waits on the host only 10 of 60 ms.
    summary = _summary(
        host_ms=60.0, gpu_busy_ms=50.0, optimizer_steps=[_optimizer_step(total_ms=300.0)]
    )
    f = _finding(_trace(summary), "optimizer-not-fused")
    assert f.saving_pct_max == pytest.approx(10 / 60 * 100, abs=0.05)


def test_optimizer_not_fused_silent_for_foreach():
    summary = _summary(
        host_ms=60.0, gpu_busy_ms=20.0, optimizer_steps=[_optimizer_step(foreach_ops=12.0)]
    )
    _absent(_trace(summary), "optimizer-not-fused")


def test_optimizer_not_fused_silent_when_gpu_bound():
    summary = _summary(host_ms=20.0, gpu_busy_ms=95.0, optimizer_steps=[_optimizer_step()])
    _absent(_trace(summary), "optimizer-not-fused")


def test_optimizer_not_fused_skips():
    assert "no optimizer step" in _skip_reason(_trace(_summary()), "optimizer-not-fused")
    env = Environment(optimizers=[OptimizerInfo(class_name="Adam", foreach=False, steps=20)])
    reason = _skip_reason(_live(env=env), "optimizer-not-fused")
    assert "needs a profiler window" in reason


# ---------------------------------------------------------------------------------------------
# sync-points


def _item_syncs(in_steps: int) -> list[SyncStat]:
    return [
        SyncStat(name="cudaStreamSynchronize", count=1, total_ms=1.0, in_steps=0),
        SyncStat(name="aten::item", count=in_steps, total_ms=30.0, in_steps=in_steps),
    ]


def _sync_summary(idle_ms: float = 5.0, sync_ms: float = 3.0, **fields) -> TraceSummary:
    return _summary(
        host_ms=40.0,
        gpu_busy_ms=30.0,
        syncs_per_step=2,
        sync_ms=sync_ms,
        idle_after_sync_ms=idle_ms,
        syncs=_item_syncs(2 * N),
        **fields,
    )


def test_sync_points_every_step():
    f = _finding(_trace(_sync_summary()), "sync-points")
    # Step: host 40 ms + 5 ms GPU starvation after syncs; the bound is blocked + starved time.
    assert f.evidence["step_ms"] == pytest.approx(45.0)
    assert f.evidence["syncs_per_step"] == pytest.approx(2.0)
    assert f.evidence["gpu_idle_after_syncs_ms_per_step"] == pytest.approx(5.0)
    assert f.evidence["host_blocked_in_syncs_ms_per_step"] == pytest.approx(3.0)
    assert f.evidence["calls_in_steps:aten::item"] == 2 * N
    # The profiler's own sync outside the steps is not blamed.
    assert "calls_in_steps:cudaStreamSynchronize" not in f.evidence
    assert f.saving_pct_max == pytest.approx(8 / 45 * 100, abs=0.05)
    assert f.severity == "warning"
    assert ".item()" in f.snippet and "loss.detach()" in f.snippet


def test_sync_points_critical_when_the_gpu_starves():
    f = _finding(_trace(_sync_summary(idle_ms=20.0, sync_ms=10.0)), "sync-points")
    assert f.saving_pct_max == pytest.approx(30 / 60 * 100, abs=0.05)
    assert f.severity == "critical"


def test_sync_points_silent_for_an_occasional_sync():
    summary = _sync_summary(idle_ms=20.0, sync_ms=10.0)
    for i, step in enumerate(summary.steps):
        step.syncs = i % 2  # one sync every other step
    _absent(_trace(summary), "sync-points")


def test_sync_points_skips():
    assert "no GPU" in _skip_reason(_trace(_summary(has_gpu=False)), "sync-points")
    assert "profiler window or trace" in _skip_reason(_live(), "sync-points")


# ---------------------------------------------------------------------------------------------
# memory-pressure


def _memory(allocated_gib: float, reserved_gib: float) -> list[MemoryTimeline]:
    return [
        MemoryTimeline(
            peak_allocated_bytes=int(allocated_gib * GIB),
            peak_reserved_bytes=int(reserved_gib * GIB),
        )
    ]


def test_memory_near_capacity_without_allocator_time_is_info():
    f = _finding(_trace(_summary(memory=_memory(70.0, 76.0))), "memory-pressure")
    assert f.severity == "info"
    assert f.saving_pct_max == 0.0
    assert f.evidence["peak_used_pct_of_capacity"] == pytest.approx(95.0)
    assert f.evidence["peak_allocated_gib"] == pytest.approx(70.0)
    assert f.evidence["peak_reserved_gib"] == pytest.approx(76.0)
    assert f.evidence["capacity_gib"] == pytest.approx(80.0)
    assert f.evidence["allocator_calls_ms_in_trace"] == 0
    assert "95%" in f.title
    assert "expandable_segments:True" in f.snippet


def test_memory_allocator_time_is_the_bound():
    syncs = [
        SyncStat(name="cudaMalloc", count=5, total_ms=80.0, in_steps=5),
        SyncStat(name="cudaFree", count=5, total_ms=20.0, in_steps=5),
        SyncStat(name="cudaStreamSynchronize", count=1, total_ms=50.0),
    ]
    f = _finding(_trace(_summary(memory=_memory(70.0, 76.0), syncs=syncs)), "memory-pressure")
    assert f.evidence["allocator_calls_ms_in_trace"] == pytest.approx(100.0)
    assert f.saving_pct_max == pytest.approx(10 / 95 * 100, abs=0.05)
    assert f.severity == "warning"


def test_memory_fragmentation():
    f = _finding(_trace(_summary(memory=_memory(20.0, 50.0))), "memory-pressure")
    assert "2.5x" in f.title
    assert f.severity == "info"


def test_memory_fragmentation_silent_with_plenty_left():
    # 2.5x reserved over allocated, but 25 of 80 GiB in use: the reserve is free to grow.
    _absent(_trace(_summary(memory=_memory(10.0, 25.0))), "memory-pressure")


def test_memory_near_capacity_from_nvml():
    gpu = GpuSeries(
        index=0, utilization_pct=[90.0] * 3, memory_used_bytes=[70 * GIB, 77 * GIB, 76 * GIB]
    )
    f = _finding(_live(samples=_samples(gpu)), "memory-pressure")
    assert f.evidence["peak_used_pct_of_capacity"] == pytest.approx(96.2, abs=0.1)


def _categorised(at_peak: dict[str, float], *, device: str = "cuda:0", **env) -> RunRecord:
    """A live record whose profiler window categorised its peak (``at_peak`` in GiB)."""
    sizes = {k: int(v * GIB) for k, v in at_peak.items()}
    cats = MemoryCategories(device=device, peak_bytes=sum(sizes.values()), at_peak=sizes)
    gib = sum(at_peak.values())
    summary = _summary(has_gpu=False) if device == "cpu" else _summary(memory=_memory(gib, gib + 1))
    record = _live(
        summary=summary, env=Environment(devices=[_device()] if device != "cpu" else [], **env)
    )
    assert record.profiler is not None
    record.profiler.memory_categories = cats
    return record


@pytest.mark.parametrize(
    ("at_peak", "group", "snippet"),
    [
        (
            {"activation": 50.0, "parameter": 8.0, "optimizer_state": 16.0},
            "activations",
            "checkpoint(",
        ),
        (
            {"activation": 10.0, "parameter": 16.0, "optimizer_state": 48.0},
            "optimizer state",
            "ZeroRedundancyOptimizer",
        ),
    ],
)
def test_memory_pressure_names_what_fills_the_peak_and_its_fix(at_peak, group, snippet):
    f = _finding(_categorised(at_peak), "memory-pressure")
    total = sum(at_peak.values())
    share = max(at_peak.get("activation", 0.0), at_peak.get("optimizer_state", 0.0)) / total * 100
    assert f.evidence["largest_at_peak"] == group
    assert f.evidence["largest_at_peak_pct"] == pytest.approx(share, abs=0.1)
    assert f"{group} fill {share:.0f}%" in f.title
    assert snippet in f.snippet


def test_memory_pressure_of_an_inference_run_gives_inference_advice():
    record = _categorised({"activation": 64.0, "parameter": 10.0})
    record.mode = "inference"
    f = _finding(record, "memory-pressure")
    assert f.evidence["largest_at_peak"] == "activations"
    assert "inference_mode" in f.snippet and "checkpoint" not in f.snippet


def test_memory_pressure_on_a_cpu_run_reads_the_host_memory():
    # 30 GiB categorised on a 32 GiB host: 94% of the host's memory, activations dominant.
    record = _categorised(
        {"activation": 24.0, "parameter": 2.0, "gradient": 2.0, "optimizer_state": 2.0},
        device="cpu",
        memory_total_bytes=32 * GIB,
    )
    f = _finding(record, "memory-pressure")
    assert "host memory" in f.title and "activations" in f.title
    assert f.evidence["capacity_gib"] == pytest.approx(32.0)


def test_memory_silent_with_headroom():
    _absent(_trace(_summary(memory=_memory(60.0, 64.0))), "memory-pressure")


def test_memory_nvml_process_total_is_not_fragmentation():
    # The allocator holds 0.375 GiB for 0.25 GiB in use (1.5x); NVML's 1 GiB also counts the
    # CUDA context and other processes, so it says nothing about the allocator's cache.
    gpu = GpuSeries(index=0, utilization_pct=[90.0] * 3, memory_used_bytes=[1.0 * GIB] * 3)
    record = _live(summary=_summary(memory=_memory(0.25, 0.375)), samples=_samples(gpu))
    _absent(record, "memory-pressure")


def test_memory_skips():
    assert "capacity unknown" in _skip_reason(_trace(_summary(has_gpu=False)), "memory-pressure")
    assert "no memory figures" in _skip_reason(_trace(_summary()), "memory-pressure")


# ---------------------------------------------------------------------------------------------
# data-parallel


def _gpus(*utilisation: float) -> Samples:
    return _samples(
        *(GpuSeries(index=i, utilization_pct=[u] * 4) for i, u in enumerate(utilisation))
    )


def test_data_parallel_idle_gpus_critical():
    f = _finding(_live(samples=_gpus(95.0, 0.0, 1.0, 0.0)), "data-parallel")
    assert f.saving_pct_max == pytest.approx(75.0)  # 1 - 1/4
    assert f.severity == "critical"
    assert f.evidence["visible_gpus"] == 4
    assert f.evidence["idle_gpus"] == "1, 2, 3"
    assert f.evidence["world_size"] == 1
    assert "3 of 4" in f.title
    assert "DistributedDataParallel" in f.snippet and "torchrun" in f.snippet


def test_data_parallel_one_idle_of_eight_is_a_warning():
    f = _finding(_live(samples=_gpus(*([90.0] * 7), 0.0)), "data-parallel")
    assert f.saving_pct_max == pytest.approx(12.5)  # 1 - 7/8
    assert f.severity == "warning"


@pytest.mark.parametrize("utilisation", [(95.0, 90.0), (2.0, 0.0)], ids=["all-busy", "all-idle"])
def test_data_parallel_silent(utilisation):
    _absent(_live(samples=_gpus(*utilisation)), "data-parallel")


def test_data_parallel_silent_under_ddp():
    record = _live(samples=_gpus(95.0, 0.0))
    record.world_size = 2
    _absent(record, "data-parallel")


def test_data_parallel_module_in_use():
    # nn.DataParallel's autograd functions, as the profiler names them; aten::gather and
    # aten::scatter_ are the model's own operators and not DataParallel's cost.
    ops = [
        OpStat(name="Broadcast", total_ms=25.0),
        OpStat(name="ReduceAddCoalesced", total_ms=5.0),
        OpStat(name="Scatter", total_ms=10.0),
        OpStat(name="Gather", total_ms=10.0),
        OpStat(name="aten::gather", total_ms=200.0),
        OpStat(name="aten::scatter_", total_ms=100.0),
        OpStat(name="aten::mm", total_ms=500.0),
    ]
    summary = _summary(markers={"DataParallel": N}, top_ops=ops)
    f = _finding(_trace(summary), "data-parallel")
    assert f.evidence["dataparallel_calls"] == N
    assert f.evidence["replicate_scatter_gather_ms"] == pytest.approx(50.0)
    assert f.saving_pct_max == pytest.approx(5 / 95 * 100, abs=0.05)
    assert f.severity == "warning"


def test_data_parallel_skips():
    assert "two or more" in _skip_reason(_live(samples=_gpus(95.0)), "data-parallel")
    assert "two or more" in _skip_reason(_trace(_summary()), "data-parallel")


# ---------------------------------------------------------------------------------------------
# step-variance


def _jittery(n: int = 40, slow: dict[int, float] | None = None) -> list[float]:
    """Step walls: a slow first step, then 100-102 ms with ``slow`` steps replaced."""
    walls = [5000.0] + [100.0 + i % 3 for i in range(1, n)]
    for i, wall in (slow or {}).items():
        walls[i] = wall
    return walls


def test_step_variance_periodic_outliers():
    walls = _jittery(slow={10: 600.0, 20: 600.0, 30: 600.0})
    f = _finding(_live(walls=walls), "step-variance")
    steady = walls[1:]
    median = sorted(steady)[len(steady) // 2]
    assert f.evidence["steps"] == 39
    assert f.evidence["median_ms"] == pytest.approx(median)
    assert f.evidence["outlier_steps"] == 3
    assert f.evidence["first_outliers"] == "10, 20, 30"
    assert f.evidence["period_steps"] == 10
    assert f.evidence["max_ms"] == pytest.approx(600.0)
    assert f.evidence["p95_ms"] == pytest.approx(600.0)
    assert median < f.evidence["outlier_threshold_ms"] < 120
    assert "every 10 steps" in f.title
    expected = 3 * (600 - median) / sum(steady) * 100
    assert f.saving_pct_max == pytest.approx(expected, abs=0.05)
    assert f.severity == "critical"
    assert "gc.freeze()" in f.snippet


def test_step_variance_irregular_outliers_have_no_period():
    f = _finding(_live(walls=_jittery(slow={5: 250.0, 12: 250.0, 31: 250.0})), "step-variance")
    assert f.evidence["period_steps"] is None
    assert "3 steps" in f.title
    assert f.severity == "warning"


def test_step_variance_ignores_profiled_steps_and_the_first():
    walls = _jittery()
    for i in range(2, 6):
        walls[i] = 300.0  # slowed by the profiler
    profiled = [i in range(2, 6) for i in range(len(walls))]
    record = _live(walls=walls, profiled=profiled)
    _absent(record, "step-variance")
    # The same slow steps, un-profiled, are outliers.
    assert _finding(_live(walls=walls), "step-variance").evidence["outlier_steps"] == 4


def test_step_variance_ignores_ordinary_jitter():
    walls = [5000.0] + [100.0 + (7 * i) % 11 for i in range(1, 40)]  # 100-110 ms
    _absent(_live(walls=walls), "step-variance")


def test_step_variance_threshold_is_five_robust_sigmas():
    # 29 steady steps of 100-102 ms and ten slower ones: median 102 ms, MAD 1 ms (floored at
    # 1% of the median), so the limit is 102 + 5 x 1.4826 x 1.02 = 109.56 ms. Ten steps at
    # 107 ms stay in; ten at 110 ms are outliers.
    within = _jittery(slow={i: 107.0 for i in range(3, 40, 4)})
    _absent(_live(walls=within), "step-variance")
    beyond = _jittery(slow={i: 110.0 for i in range(3, 40, 4)})
    f = _finding(_live(walls=beyond), "step-variance")
    assert f.evidence["outlier_steps"] == 10
    assert f.evidence["median_ms"] == pytest.approx(102.0)
    assert f.evidence["outlier_threshold_ms"] == pytest.approx(109.56, abs=0.01)
    assert f.evidence["period_steps"] == 4
    assert f.severity == "info"


def test_step_variance_skips_with_fewer_than_eight_steps():
    reason = _skip_reason(_live(walls=_jittery(n=8, slow={4: 900.0})), "step-variance")
    assert "at least 8" in reason and "found 7" in reason
    assert "found 0" in _skip_reason(_trace(_summary()), "step-variance")


def test_step_variance_ignores_merged_rows():
    record = _live(walls=_jittery(slow={10: 600.0, 20: 600.0, 30: 600.0}))
    record.steps.steps = [2] * len(record.steps.steps)  # rows merged: means, not single steps
    assert "found 0" in _skip_reason(record, "step-variance")


# ---------------------------------------------------------------------------------------------
# gpu-throttling


def _clocked_gpu(
    index: int = 0,
    util: list[float] | None = None,
    clocks: list[float] | None = None,
    reasons: list[int] | None = None,
    max_clock: float | None = 2000.0,
) -> GpuSeries:
    util = util if util is not None else [90.0] * 10
    return GpuSeries(
        index=index,
        max_sm_clock_mhz=max_clock,
        power_limit_w=700.0,
        utilization_pct=util,
        sm_clock_mhz=clocks if clocks is not None else [2000.0] * len(util),
        throttle_reasons=reasons if reasons is not None else [0] * len(util),
        temperature_c=[70.0] * len(util),
        power_w=[650.0] * len(util),
    )


def test_gpu_throttling_power_cap_warning():
    gpu = _clocked_gpu(clocks=[2000.0] * 5 + [1600.0] * 5, reasons=[0] * 5 + [0x4] * 5)
    f = _finding(_live(samples=_samples(gpu)), "gpu-throttling")
    # Half the busy samples ran 20% slow: 10% clock loss over busy time.
    assert f.saving_pct_max == pytest.approx(10.0)
    assert f.severity == "warning"
    assert f.evidence["busy_samples_throttled_pct"] == pytest.approx(50.0)
    assert f.evidence["reasons"] == "software power cap"
    assert f.evidence["max_temperature_c"] == pytest.approx(70.0)
    assert f.evidence["power_limit_w"] == pytest.approx(700.0)
    assert "nvidia-smi" in f.snippet


def test_gpu_throttling_counts_only_busy_samples_with_power_or_thermal_reasons():
    util = [90.0] * 10 + [10.0] * 4 + [90.0] * 6
    clocks = [2000.0] * 5 + [1600.0] * 5 + [300.0] * 4 + [1000.0] * 6
    # Idle samples at a low clock (even with a power reason) and busy samples held by the
    # application-clocks setting (0x2) or idle (0x1) reason are not throttling.
    reasons = [0] * 5 + [0x4] * 5 + [0x4] * 4 + [0x2, 0x1] * 3
    gpu = _clocked_gpu(util=util, clocks=clocks, reasons=reasons)
    f = _finding(_live(samples=_samples(gpu)), "gpu-throttling")
    busy = 16
    assert f.saving_pct_max == pytest.approx(5 * 0.2 / busy * 100, abs=0.05)
    assert f.evidence["busy_samples_throttled_pct"] == pytest.approx(5 / busy * 100, abs=0.1)


def test_gpu_throttling_thermal_is_critical_and_picks_the_worst_gpu():
    cool = _clocked_gpu(0, clocks=[1800.0] * 10, reasons=[0x4] * 10)
    hot = _clocked_gpu(1, clocks=[1000.0] * 10, reasons=[0x40 | 0x20] * 10)
    f = _finding(_live(samples=_samples(cool, hot)), "gpu-throttling")
    assert f.evidence["gpu"] == 1
    assert f.saving_pct_max == pytest.approx(50.0)
    assert f.severity == "critical"
    assert f.evidence["reasons"] == "software thermal slowdown, hardware thermal slowdown"


def test_gpu_throttling_silent_for_non_power_reasons():
    gpu = _clocked_gpu(clocks=[1400.0] * 10, reasons=[0x2] * 10)
    _absent(_live(samples=_samples(gpu)), "gpu-throttling")


def test_gpu_throttling_silent_without_max_clock():
    gpu = _clocked_gpu(clocks=[1000.0] * 10, reasons=[0x4] * 10, max_clock=None)
    _absent(_live(samples=_samples(gpu)), "gpu-throttling")


def test_gpu_throttling_skipped_on_traces():
    assert "NVML samples" in _skip_reason(_trace(_summary()), "gpu-throttling")


# ---------------------------------------------------------------------------------------------
# recompiles


def test_recompiles_are_info_with_the_counters():
    env = Environment(
        compile_used=True,
        dynamo_counters={
            "graph_break": {"Tensor.item": 3, "data-dependent branch": 1},
            "recompiles": {"size mismatch": 2},
            "stats": {"unique_graphs": 5},
            "frames": {"ok": 4},
        },
    )
    f = _finding(_live(env=env), "recompiles")
    assert f.severity == "info" and f.saving_pct_max == 0.0
    assert f.evidence["graph_breaks"] == 4
    assert f.evidence["recompiles"] == 2
    assert f.evidence["unique_graphs"] == 5
    assert f.evidence["frames_compiled"] == 4
    assert f.evidence["break:Tensor.item"] == 3
    assert "TORCH_LOGS=graph_breaks,recompiles" in f.snippet


@pytest.mark.parametrize(
    "env",
    [
        Environment(compile_used=True, dynamo_counters={"stats": {"unique_graphs": 1}}),
        Environment(compile_used=False),
        # Counters are process-wide: breaks from a compile before the block are not this run's.
        Environment(compile_used=False, dynamo_counters={"graph_break": {"Tensor.item": 2}}),
    ],
    ids=["clean-compile", "no-compile", "stale-counters"],
)
def test_recompiles_silent(env):
    _absent(_live(env=env), "recompiles")


# ---------------------------------------------------------------------------------------------
# Live-only rules on a trace-only record


@pytest.mark.parametrize(
    ("rule_id", "reason"),
    [
        ("cudnn-benchmark", "live capture"),
        ("recompiles", "live capture"),
        ("gpu-throttling", "NVML samples"),
        ("data-parallel", "NVML samples"),
        ("step-variance", "single, un-profiled steps"),
    ],
)
def test_live_only_rules_skip_trace_records(rule_id, reason):
    summary = _summary(
        math=_conv_math(30.0), memory=_memory(10.0, 12.0), launch=_launches(), top_ops=_conv_ops()
    )
    assert reason in _skip_reason(_trace(summary), rule_id)

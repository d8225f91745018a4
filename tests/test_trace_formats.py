"""Trace dialects and derived figures: synthetic traces of every dialect, and the real ones.

The synthetic traces are small and hand-checked: each test builds the events it needs, so the
expected numbers can be read off the test. The real traces (``tests/data/external``, see its
MANIFEST.tsv) are checked per dialect family.
"""

from __future__ import annotations

import functools
import gzip
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from tracedata import EXTERNAL

from torchdiag.record import TraceSummary
from torchdiag.traces.batch import BatchSizes
from torchdiag.traces.copies import copy_kind
from torchdiag.traces.events import Event
from torchdiag.traces.kernels import conv_layout, is_layout_transform
from torchdiag.traces.launches import quantile
from torchdiag.traces.load import read_trace, record_from_traces
from torchdiag.traces.runtime import GRAPH_LAUNCH, KERNEL_LAUNCH, OTHER, SYNC, runtime_kind


@functools.cache
def external(name: str) -> TraceSummary:
    return read_trace(EXTERNAL / name)


def x(cat: str, name: str, ts: float, dur: float, pid: Any = 1, tid: Any = 1, **args: Any) -> dict:
    event = {"ph": "X", "name": name, "pid": pid, "tid": tid, "ts": ts, "dur": dur, "args": args}
    if cat:
        event["cat"] = cat
    return event


def write(tmp_path: Path, doc: Any, name: str = "t.json") -> Path:
    path = tmp_path / name
    data = json.dumps(doc).encode()
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return path


def summary(tmp_path: Path, doc: Any, name: str = "t.json") -> TraceSummary:
    return read_trace(write(tmp_path, doc, name))


def kineto(events: list[dict], **meta: Any) -> dict:
    return {"schemaVersion": 1, "traceEvents": events, **meta}


# ---------------------------------------------------------------------------------------------
# Dialects


def test_bare_array_with_string_ids_and_duplicate_metadata(tmp_path):
    events = [
        {"name": "process_name", "ph": "M", "pid": "7", "tid": 0, "args": {"name": "python"}},
        {"name": "process_name", "ph": "M", "pid": "7", "tid": 0, "args": {"name": "python"}},
        x("user_annotation", "ProfilerStep#1", 0, 100, pid="7", tid="7"),
        x("cpu_op", "aten::mm", 10, 30, pid="7", tid="7"),
        # the same thread spelled as ints: one thread, so the launch nests in aten::mm
        x("cuda_runtime", "cudaLaunchKernel", 12, 5, pid=7, tid=7, correlation=1),
        x("kernel", "volta_sgemm_128x64_nn", 40, 20, pid=0, tid="stream 7", correlation=1),
        x("kernel", "volta_sgemm_128x64_nn", 70, 20, pid=0, tid="stream 8", correlation=2),
    ]
    s = summary(tmp_path, events)
    assert s.format == "kineto" and s.step_detection == "profiler-step"
    assert s.devices == [] and s.device_kind == "cuda" and s.streams == 2
    (mm,) = [o for o in s.top_ops if o.name == "aten::mm"]
    assert mm.gpu_ms == pytest.approx(0.020)
    assert s.steps[0].launches == 1 and s.launch.median_queue_us == pytest.approx(28)
    assert s.launch.short_kernels == 0  # 20 µs of kernel for 5 µs of launch


def test_begin_end_pairs_become_durations(tmp_path):
    events = [
        {
            "ph": "B",
            "name": "ProfilerStep#3",
            "cat": "user_annotation",
            "pid": 1,
            "tid": "1",
            "ts": 0,
        },
        {"ph": "B", "name": "aten::linear", "cat": "cpu_op", "pid": 1, "tid": 1, "ts": 10},
        {"ph": "B", "name": "aten::addmm", "cat": "cpu_op", "pid": 1, "tid": 1, "ts": 12},
        {"ph": "E", "pid": 1, "tid": 1, "ts": 30},
        {"ph": "E", "pid": 1, "tid": 1, "ts": 40},
        {"ph": "E", "pid": 1, "tid": "1", "ts": 100},
        {"ph": "E", "pid": 1, "tid": 2, "ts": 5},  # nothing open on thread 2
        {"ph": "B", "name": "never closed", "cat": "cpu_op", "pid": 1, "tid": 3, "ts": 50},
    ]
    s = summary(tmp_path, events)
    assert s.event_count == len(events)
    assert [(st.number, st.duration_ms) for st in s.steps] == [(3, pytest.approx(0.1))]
    ops = {o.name: o for o in s.top_ops}
    assert ops["aten::linear"].total_ms == pytest.approx(0.030)
    assert ops["aten::linear"].self_ms == pytest.approx(0.012)
    assert ops["aten::addmm"].total_ms == pytest.approx(0.018)
    assert any("1 'E' without 'B', 1 'B' never closed" in n for n in s.notes)


def test_display_time_unit_does_not_rescale(tmp_path):
    events = [x("cpu_op", "aten::add", 0.5, 1000.25), x("cpu_op", "aten::mul", 2000, 500)]
    s = summary(tmp_path, kineto(events, displayTimeUnit="ns", baseTimeNanoseconds=10**18))
    # ts and dur are microseconds whatever displayTimeUnit says
    assert s.span_ms == pytest.approx(2.4995)
    assert {o.name: o.total_ms for o in s.top_ops} == pytest.approx(
        {"aten::add": 1.00025, "aten::mul": 0.5}
    )
    assert any("baseTimeNanoseconds" in n for n in s.notes)


def test_early_kineto_categories_and_compute_properties(tmp_path):
    events = [
        x("Operator", "ProfilerStep#1", 0, 100, tid="11"),
        x(
            "Operator",
            "enumerate(DataLoader)#_SingleProcessDataLoaderIter.__next__",
            0,
            40,
            tid="11",
        ),
        x("Operator", "aten::conv2d", 50, 20, tid="11", **{"Input dims": [[8, 3, 32, 32]]}),
        x("Runtime", "cudaLaunchKernel", 55, 4, tid="11", correlation=9, **{"external id": 3}),
        x("Runtime", "cudaStreamSynchronize", 80, 5, tid="11", correlation=10),
        x("Kernel", "implicit_convolve_sgemm<float>", 60, 10, pid=0, tid="stream 7", correlation=9),
        x("Memcpy", "Memcpy HtoD", 41, 3, pid=0, tid="stream 7", bytes=1024),
    ]
    props = [{"id": 0, "name": "Tesla V100", "major": 7, "minor": 0, "multiProcessorCount": 80}]
    s = summary(tmp_path, kineto(events, computeProperties=props))
    assert s.format == "kineto-early"
    assert [(d.name, d.capability, d.multiprocessors) for d in s.devices] == [
        ("Tesla V100", "7.0", 80)
    ]
    assert s.steps[0].dataloader_ms == pytest.approx(0.040)
    assert s.dataloader_iterators == {"_SingleProcessDataLoaderIter": 1}
    assert s.batch_size == 8
    assert s.math.conv_ms == pytest.approx(0.010) and s.math.conv_nhwc_ms == 0
    assert s.math.non_tensor_core_ms == pytest.approx(0.010)
    assert [(c.name, c.direction, c.pageable, c.bytes) for c in s.copies] == [
        ("Memcpy HtoD", "HtoD", False, 1024)
    ]
    assert s.steps[0].syncs == 1


def test_autograd_profiler_legacy_format(tmp_path):
    events = [
        {"name": "aten::conv2d", "ph": "X", "ts": 0, "dur": 50, "tid": 1, "pid": "CPU functions"},
        {"name": "aten::relu", "ph": "X", "ts": 60, "dur": 5, "tid": 1, "pid": "CPU functions"},
        {"name": "aten::conv2d", "ph": "X", "ts": 70, "dur": 40, "tid": 1, "pid": "CPU functions"},
    ]
    s = summary(tmp_path, events)
    assert s.format == "autograd-legacy"
    assert {o.name: o.calls for o in s.top_ops} == {"aten::conv2d": 2, "aten::relu": 1}
    assert not s.has_gpu and s.step_detection == "fallback"
    assert s.steps[0].breakdown.cpu_only == pytest.approx(0.095)


def test_generic_chrome_trace_has_its_own_format_name(tmp_path):
    s = summary(tmp_path, {"traceEvents": [x("", "frame", 0, 10, pid=3)]})
    assert s.format == "chrome-trace" and s.top_ops == []
    assert any("no operator events: nothing to diagnose" in n for n in s.notes)


def rocm_trace(runtime: str = "hipLaunchKernel") -> dict:
    events = [
        x("user_annotation", "ProfilerStep#1", 0, 200),
        x("cpu_op", "aten::addmm", 10, 50, **{"Input type": ["c10::BFloat16"] * 3}),
        x("cuda_runtime", runtime, 20, 6, correlation=5),
        x("cuda_runtime", "hipStreamSynchronize", 70, 30, correlation=6),
        x("cuda_runtime", "hipMemcpyWithStream", 110, 20, correlation=7),
        x(
            "kernel",
            "Cijk_Ailk_Bljk_BBS_BH_MT64x64x64_MI16x16x16x1_SN",
            30,
            40,
            pid=2,
            tid=0,
            correlation=5,
        ),
        x("gpu_memcpy", "Memcpy HtoD (Host -> Device)", 115, 10, pid=2, tid=0, correlation=7),
    ]
    props = [{"id": 0, "name": "AMD Instinct MI300X", "computeMajor": 9, "computeMinor": 4}]
    return kineto(events, deviceProperties=props)


@pytest.mark.parametrize("launch", ["hipLaunchKernel", "hipExtModuleLaunchKernel"])
def test_rocm_runtime(tmp_path, launch):
    s = summary(tmp_path, rocm_trace(launch))
    assert s.device_kind == "rocm" and s.devices[0].kind == "rocm"
    assert s.launch.launches == 1 and s.steps[0].launches == 1
    assert s.top_kernels[0].kernel_class == "gemm" and s.top_kernels[0].tensor_core is True
    assert s.math.op_dtype_ms == pytest.approx({"c10::BFloat16": 0.040})
    assert s.steps[0].syncs == 2 and s.steps[0].sync_ms == pytest.approx(0.050)
    # the stream sync ends at 100 µs and the GPU starves until the copy starts at 115; nothing
    # runs on the GPU after the synchronous copy ends at 130, so it starves nothing
    assert s.steps[0].idle_after_sync_ms == pytest.approx(0.015)
    assert {x.name for x in s.syncs} == {"hipStreamSynchronize", "hipMemcpyWithStream"}


def test_rocm_without_device_properties_is_recognised_by_its_runtime(tmp_path):
    doc = rocm_trace()
    del doc["deviceProperties"]
    assert summary(tmp_path, doc).device_kind == "rocm"


def test_accelerator_without_cuda(tmp_path):
    events = [
        x("cpu_op", "aten::mm", 0, 50),
        x("xpu_runtime", "urEnqueueKernelLaunch", 10, 5, correlation=3),
        x("kernel", "gemm_kernel", 20, 10, pid=0, tid=1, correlation=3),
    ]
    s = summary(tmp_path, kineto(events))
    assert s.device_kind == "xpu" and s.launch.launches == 1 and s.kernel_count == 1


def test_cpu_only_and_nearly_empty_traces_say_what_is_missing(tmp_path):
    s = summary(tmp_path, kineto([x("cpu_op", "aten::add", 0, 5)]))
    assert not s.has_gpu and s.launch is None and s.math is None and s.occupancy is None
    assert "only 1 operator events: too few for reliable figures" in s.notes
    assert "no GPU activity: a CPU-only trace" in s.notes
    runtime_only = kineto(
        [x("cuda_runtime", "cudaGetDeviceCount", 0, 5)], deviceProperties=[{"id": 0, "name": "A"}]
    )
    s = summary(tmp_path, runtime_only)
    assert "no operator events: nothing to diagnose on the host side" in s.notes
    assert any("no GPU activity" in n and "1 device(s)" in n for n in s.notes)
    s = summary(tmp_path, kineto([]))
    assert s.notes == ["the trace holds no events: nothing to diagnose"]


# ---------------------------------------------------------------------------------------------
# Steps, syncs, launches, math


def test_fallback_steps_end_at_optimizer_steps(tmp_path):
    events = []
    for k in range(3):
        t = 1000 * k
        events += [
            x("cpu_op", "aten::linear", t, 300),
            x("user_annotation", "Optimizer.step#SGD.step", t + 500, 200),
            x("cpu_op", "aten::_foreach_add_", t + 550, 50),
            x("cpu_op", "aten::add_", t + 560, 10),
        ]
    s = summary(tmp_path, kineto(events))
    assert s.step_detection == "fallback"
    assert [(st.number, st.start_us, st.duration_ms) for st in s.steps] == [
        (0, 0, pytest.approx(0.7)),
        (1, 700, pytest.approx(1.0)),
        (2, 1700, pytest.approx(1.0)),
    ]
    assert any("Optimizer.step ends" in n for n in s.notes)
    (opt,) = s.optimizer_steps
    assert (opt.calls, opt.ops_per_call, opt.foreach_ops_per_call) == (3, 2.0, 1.0)
    assert opt.total_ms == pytest.approx(0.6)
    record = record_from_traces(write(tmp_path, kineto(events)))
    assert record.steps.detection == "optimizer" and record.steps.count == 3


def test_fallback_steps_from_a_repeated_annotation(tmp_path):
    events = []
    for k in range(4):
        t = 1000 * k
        events += [
            x("user_annotation", "train_step", t, 800),
            x("user_annotation", "forward", t + 10, 300),
            x("cpu_op", "aten::mm", t + 20, 100),
        ]
    s = summary(tmp_path, kineto(events))
    assert s.step_detection == "fallback"
    assert [(st.start_us, st.duration_ms) for st in s.steps] == [
        (1000 * k, pytest.approx(0.8)) for k in range(4)
    ]
    assert record_from_traces(write(tmp_path, kineto(events))).steps.detection == "manual"


def test_syncs_count_only_real_waits(tmp_path):
    events = [
        x("user_annotation", "ProfilerStep#1", 0, 1000),
        # .item() on a CPU tensor: no runtime wait inside, not a sync
        x("cpu_op", "aten::item", 10, 5),
        x("cpu_op", "aten::_local_scalar_dense", 11, 3),
        # .item() on a GPU tensor: a copy and a stream synchronisation inside
        x("cpu_op", "aten::item", 100, 100),
        x("cpu_op", "aten::_local_scalar_dense", 101, 98),
        x("cuda_runtime", "cudaMemcpyAsync", 105, 5, correlation=1),
        x("cuda_runtime", "cudaStreamSynchronize", 111, 80, correlation=2),
        x("cuda_runtime", "cudaStreamWaitEvent", 300, 2, correlation=3),  # GPU-side only
        x("cuda_runtime", "cudaLaunchKernel", 400, 5, correlation=4),
        x("kernel", "k", 420, 10, pid=0, tid=7, correlation=4),
        x("gpu_memcpy", "Memcpy DtoH (Device -> Pageable)", 150, 5, pid=0, tid=7, correlation=1),
        # the profiler's own synchronisation when it stops: not in any step
        x("cuda_runtime", "cudaDeviceSynchronize", 2000, 10, correlation=5),
    ]
    s = summary(tmp_path, kineto(events))
    stats = {x.name: (x.count, x.in_steps) for x in s.syncs}
    assert stats == {
        "cudaStreamSynchronize": (1, 1),
        "aten::item": (1, 1),
        "cudaDeviceSynchronize": (1, 0),
    }
    (step,) = s.steps
    assert step.syncs == 1 and step.sync_ms == pytest.approx(0.080)
    # the sync ends at 191 and the GPU starves until the next kernel starts at 420
    assert step.idle_after_sync_ms == pytest.approx((420 - 191) / 1000)
    assert s.copies[0].direction == "DtoH" and s.copies[0].pageable


def test_launch_statistics_and_graph_launches(tmp_path):
    events = [x("cpu_op", "aten::mm", 0, 500)]
    for i in range(5):
        events += [
            x("cuda_runtime", "cudaLaunchKernel", 10 + 50 * i, 4 + i, correlation=i),
            x("kernel", "void k<float>", 20 + 50 * i, 2 * i + 1, pid=0, tid=7, correlation=i),
        ]
    events += [
        x("cuda_runtime", "cudaGraphLaunch", 300, 8, correlation=99),
        x("kernel", "g1", 310, 5, pid=0, tid=7, correlation=99),
        x("kernel", "g2", 316, 5, pid=0, tid=7, correlation=99),
    ]
    launch = summary(tmp_path, kineto(events)).launch
    assert launch.launches == 5 and launch.cuda_graph_launches == 1
    assert launch.launch_ms == pytest.approx((4 + 5 + 6 + 7 + 8) / 1000)
    assert launch.median_launch_us == 6
    assert launch.median_kernel_us == 5  # 1 3 5 7 9 and the graph's 5 5
    assert launch.p90_kernel_us == pytest.approx(quantile([1, 3, 5, 5, 5, 7, 9], 0.9))
    assert launch.short_kernels == 3  # 1 < 4, 3 < 5, 5 < 6
    assert launch.median_queue_us == 10


def test_triton_kernels_take_their_tensor_core_use_from_the_launching_dtype(tmp_path):
    events = [
        x("cpu_op", "CompiledFunction", 0, 100, **{"Input type": ["c10::BFloat16"]}),
        x("cuda_runtime", "cuLaunchKernel", 10, 5, correlation=1),
        x("cpu_op", "CompiledFunction", 200, 100, **{"Input type": ["float"]}),
        x("cpu_op", "wrapper", 210, 50),  # no dtype of its own: inherits float
        x("cuda_runtime", "cuLaunchKernel", 220, 5, correlation=2),
        x("kernel", "triton_tem_fused_mm_0", 20, 30, pid=0, tid=7, correlation=1),
        x("kernel", "triton_tem_fused_mm_1", 230, 40, pid=0, tid=7, correlation=2),
        x("kernel", "triton_tem_fused_mm_2", 300, 50, pid=0, tid=7, correlation=3),  # unlaunched
    ]
    s = summary(tmp_path, kineto(events))
    m = s.math
    assert m.eligible_ms == pytest.approx(0.120)
    assert m.tensor_core_ms == pytest.approx(0.030) and m.unknown_ms == pytest.approx(0.090)
    assert m.op_dtype_ms == pytest.approx(
        {"float": 0.040, "c10::BFloat16": 0.030, "unknown": 0.050}
    )
    assert s.markers == {"compiled_regions": 2}


def test_markers(tmp_path):
    events = [
        x("user_annotation", "DistributedDataParallel.forward", 0, 10),
        x("user_annotation", "DataParallel.forward", 20, 10),
        x("user_annotation", "FSDP::pre_forward", 40, 1),
        x("user_annotation", "nccl:all_reduce", 50, 1),
        x("cpu_op", "aten::mm", 60, 1),
        x("cuda_runtime", "cudaGraphLaunch", 60, 1, correlation=1),
        x("kernel", "ncclDevKernel_AllReduce_Sum_bf16_RING_LL", 70, 5, pid=0, tid=8),
    ]
    assert summary(tmp_path, kineto(events)).markers == {
        "DataParallel": 1,
        "DistributedDataParallel": 1,
        "FullyShardedDataParallel": 1,
        "collectives": 1,
        "cuda_graph_launches": 1,
        "nccl_kernels": 1,
    }


def test_summary_is_deterministic_and_block_size_independent(tmp_path):
    path = write(tmp_path, rocm_trace(), "r.json.gz")
    runs = [msgspec.json.encode(read_trace(path, block_size=b)) for b in (7, 1 << 16, 1 << 24)]
    assert runs[0] == runs[1] == runs[2] == msgspec.json.encode(read_trace(path))


# ---------------------------------------------------------------------------------------------
# Small tables


@pytest.mark.parametrize(
    "name,kind",
    [
        ("cudaLaunchKernel", KERNEL_LAUNCH),
        ("cudaLaunchKernel_ptsz", KERNEL_LAUNCH),
        ("cuLaunchKernelEx", KERNEL_LAUNCH),
        ("hipExtModuleLaunchKernel", KERNEL_LAUNCH),
        ("cudaGraphLaunch", GRAPH_LAUNCH),
        ("cudaStreamSynchronize", SYNC),
        ("cuMemcpyDtoH_v2", SYNC),
        ("cudaMemcpy", SYNC),
        ("hipDeviceSynchronize", SYNC),
        ("cudaMemcpyAsync", OTHER),
        ("cudaStreamWaitEvent", OTHER),
        ("cudaEventRecord", OTHER),
    ],
)
def test_runtime_kinds(name, kind):
    assert runtime_kind(name) == kind


@pytest.mark.parametrize(
    "name,direction,pageable",
    [
        ("Memcpy HtoD (Pageable -> Device)", "HtoD", True),
        ("Memcpy DtoH (Device -> Pinned)", "DtoH", False),
        ("Memcpy DtoD (Device -> Device)", "DtoD", False),
        ("Memcpy PtoP (Device -> Device)", "PtoP", False),
        ("Memcpy HtoD", "HtoD", False),
        ("memcpy_dtoh", "other", False),
    ],
)
def test_copy_kinds(name, direction, pageable):
    assert copy_kind(name) == (direction, pageable)


def test_conv_layout_and_transforms():
    assert conv_layout("sm90_xmma_fprop_implicit_gemm_bf16_nhwckrsc_nhwc_tilesize128") == "nhwc"
    assert conv_layout("sm80_xmma_fprop_implicit_gemm_f32f32_nchwkcrs_nchw_tile") == "nchw"
    assert conv_layout("void implicit_convolve_sgemm<float, float, 128>") is None
    assert is_layout_transform("void cudnn::ops::nchwToNhwcKernel<float, float, float>")
    assert is_layout_transform("void cudnn::engines_precompiled::nhwcToNchwKernel<__half>")
    assert not is_layout_transform("void at::native::elementwise_kernel<transpose>")


def batch_of(calls: list[tuple[str, list, float, float]]) -> tuple[int | None, str | None]:
    sizes = BatchSizes()
    for name, dims, ts, dur in calls:
        raw = msgspec.Raw(json.dumps({"Input Dims": dims}).encode())
        sizes.add(Event(ph="X", cat="cpu_op", name=name, ts=ts, dur=dur, args=raw), (1, 1))
    return sizes.result()


def test_batch_size_tiers():
    linear3d = ("aten::linear", [[16, 512, 1024], [4096, 1024], [4096]])
    seq_first = ("aten::linear", [[512, 16, 1024], [3072, 1024], [3072]])
    flat = ("aten::addmm", [[1024], [8192, 1024], [1024, 1024], [], []])
    calls = [(*linear3d, 0, 10), (*linear3d, 20, 10), (*seq_first, 40, 10), (*flat, 60, 5)]
    calls += [(*flat, 80, 5), (*flat, 90, 5)]
    assert batch_of(calls) == (16, "aten::linear input dims")
    # a matmul nested in the linear that called it is the same layer: one vote
    nested = [(*seq_first, 0, 10), ("aten::matmul", [[512, 16, 1024], [1024, 3072]], 1, 8)]
    assert batch_of([*nested, (*linear3d, 20, 10)]) == (None, None)  # a tie says nothing
    conv = ("aten::conv2d", [[4, 3, 224, 224], [64, 3, 7, 7]], 0, 10)
    assert batch_of([conv, *calls]) == (4, "aten::conv2d input dims")
    assert batch_of([("aten::embedding", [[30000, 512], [32, 128]], 0, 1)]) == (
        32,
        "aten::embedding input dims",
    )
    assert batch_of([("aten::linear", [[], [3, 3]], 0, 1)]) == (None, None)


# ---------------------------------------------------------------------------------------------
# The real traces, per dialect family


def test_kineto_resnet50_early_format_with_dataloader_stall():
    s = external("kineto/resnet50_num_workers_0__worker0.pt.trace.json.gz")
    assert s.format == "kineto-early" and s.step_detection == "profiler-step"
    assert [st.number for st in s.steps] == list(range(5, 11))
    assert s.dataloader_iterators == {"_SingleProcessDataLoaderIter": 6}
    for step in s.steps:
        assert step.dataloader_ms > 0.15 * step.duration_ms
        assert step.syncs == 2  # the pageable input copies wait for the stream
    assert any(c.direction == "HtoD" and c.pageable for c in s.copies)
    assert s.batch_size == 32
    assert s.math.non_tensor_core_ms > 0.9 * s.math.eligible_ms  # fp32 on a V100
    (opt,) = s.optimizer_steps
    assert opt.name == "Optimizer.step#SGD.step" and opt.foreach_ops_per_call == 0


def test_kineto_compute_properties():
    s = external("kineto/gpu_metrics_input.json")
    assert s.format == "kineto-early"
    assert s.devices and s.devices[0].name.startswith("Tesla V100")


def test_legacy_autograd_trace_has_cpu_operators():
    s = external("luxmea/profiler_trace.json")
    assert s.format == "autograd-legacy" and not s.has_gpu
    assert s.event_count == 1442 and len(s.top_ops) == 50
    assert sum(o.calls for o in s.top_ops) > 1000
    assert s.steps[0].breakdown.cpu_only > 0


@pytest.mark.parametrize(
    "name",
    [
        "hta/mi250_minitoy_train_ROCm6_2_kineto.json.gz",
        "tracelens/mi300__resnet_act_checkpoint.json.gz",
    ],
)
def test_rocm_traces(name):
    s = external(name)
    assert s.device_kind == "rocm" and s.format == "kineto"
    assert s.launch.launches > 0 and s.kernel_class_ms.get("gemm", 0) > 0
    assert s.math.eligible_ms > 0 and s.math.tensor_core_ms > 0.9 * s.math.eligible_ms
    assert "other" not in {k.kernel_class for k in s.top_kernels if "Cijk_" in k.name}


def test_mi300_resnet_details():
    s = external("tracelens/mi300__resnet_act_checkpoint.json.gz")
    assert (s.rank, s.world_size, s.backend) == (0, 8, "nccl")
    assert s.markers["DistributedDataParallel"] == 3 and s.markers["nccl_kernels"] > 0
    assert s.math.conv_ms > 0 and s.batch_size == 10
    assert s.math.op_dtype_ms.get("c10::BFloat16", 0) > 0


def test_nearly_empty_traces_say_what_is_missing():
    cpu = external("hta/rank-34.Jul_15_10_52_41.1074.pt.trace.json.gz")
    assert (cpu.rank, cpu.world_size, cpu.backend) == (34, 300, "gloo")
    assert "only 4 operator events: too few for reliable figures" in cpu.notes
    assert "no GPU activity: a CPU-only trace" in cpu.notes
    assert cpu.markers == {"collectives": 10}
    empty = external("particle_transformer/profiler_trace.json")
    assert "no operator events: nothing to diagnose on the host side" in empty.notes
    assert any(n.startswith("no GPU activity") for n in empty.notes)
    # the profiler's closing cudaDeviceSynchronize is no sync of the (whole-trace) step
    assert empty.steps[0].syncs == 0 and empty.syncs[0].in_steps == 0


def test_cpu_only_trace_batch_from_shapes():
    s = external("dtu_mlops/trace.json")
    assert s.device_kind is None and s.batch_size == 5 and s.launch is None


def test_ranks_in_a_directory_make_one_record(tmp_path):
    for rank in (1, 0):
        name = f"trace_filter__sampled_rank-{rank}.json.gz"
        (tmp_path / name).symlink_to(EXTERNAL / "hta" / name)
    (tmp_path / "meta.json").write_text('{"note": "not a trace"}')
    calls: list[tuple[int, int | None]] = []
    record = record_from_traces(tmp_path, progress=lambda d, t: calls.append((d, t)))
    assert [t.rank for t in record.traces] == [0, 1]
    assert all(t.world_size == 128 and t.backend == "nccl" for t in record.traces)
    assert (record.rank, record.world_size) == (0, 128)
    assert record.environment.distributed.backend == "nccl"
    assert "meta.json" in record.collectors["trace"].reason
    by_rank = [{st.number: st.duration_ms for st in t.steps} for t in record.traces]
    assert record.steps.first_step == [551, 552]
    assert record.steps.wall_ms == [max(r[n] for r in by_rank) for n in (551, 552)]
    total = sum(f.stat().st_size for f in tmp_path.iterdir())
    assert calls and all(t == total for _, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert calls[-1][0] <= total


def test_distributed_single_file_sets_rank_and_world_size():
    s = external("hta/nccl_data.json.gz")
    assert (s.rank, s.world_size, s.backend) == (0, 2, "nccl")
    assert s.markers["DistributedDataParallel"] == 3 and s.markers["nccl_kernels"] == 21
    assert s.streams == 2

"""torch.profiler trace reader: streaming decoder, summary, kernel classes, run records."""

from __future__ import annotations

import functools
import gc
import gzip
import io
import json
from pathlib import Path

import msgspec
import pytest
from tracedata import EXTERNAL, H200

from torchdiag.record import TraceSummary
from torchdiag.traces.decode import NotATraceError, TraceDecoder, TraceError
from torchdiag.traces.intervals import merge_intervals, partition
from torchdiag.traces.kernels import classify_kernel, kernel_class, tensor_core
from torchdiag.traces.load import find_trace_files, read_trace, record_from_traces

H200_TRACES = sorted(H200.glob("*.pt.trace.json.gz"))


@functools.cache
def summary_of(path: Path) -> TraceSummary:
    return read_trace(path)


def h200(name: str) -> TraceSummary:
    return summary_of(H200 / f"{name}.pt.trace.json.gz")


def breakdown_parts(b) -> list[float]:
    return [
        b.compute,
        b.memcpy,
        b.memset,
        b.communication,
        b.input_wait,
        b.host_runtime,
        b.cpu_only,
        b.idle_host_wait,
        b.idle_other,
    ]


def assert_consistent_steps(s: TraceSummary) -> None:
    for step in s.steps:
        b = step.breakdown
        assert b.wall == pytest.approx(step.duration_ms)
        assert all(p >= 0 for p in breakdown_parts(b)), b
        assert sum(breakdown_parts(b)) == pytest.approx(b.wall, rel=1e-6, abs=1e-9)
        assert step.gpu_busy_ms <= b.wall * (1 + 1e-9)
        assert step.gpu_busy_ms == pytest.approx(
            b.compute + b.memcpy + b.memset + b.communication, rel=1e-9, abs=1e-9
        )


# ---------------------------------------------------------------------------------------------
# Decoder


def decode_all(data: bytes, *, block_size: int, chunk_size: int = 1 << 22) -> TraceDecoder:
    decoder = TraceDecoder(io.BytesIO(data), block_size=block_size, chunk_size=chunk_size)
    decoder.events = [e for chunk in decoder.chunks() for e in chunk]  # type: ignore[attr-defined]
    return decoder


def as_dict(e) -> dict:
    out = {f: getattr(e, f) for f in ("ph", "cat", "name", "pid", "tid", "ts", "dur", "id")}
    out["args"] = json.loads(bytes(e.args))
    return out


def expected_dict(raw: dict) -> dict:
    defaults = {
        "ph": "",
        "cat": "",
        "name": "",
        "pid": 0,
        "tid": 0,
        "ts": 0.0,
        "dur": 0.0,
        "id": None,
        "args": {},
    }
    return {k: raw.get(k, v) for k, v in defaults.items()}


TRICKY_EVENTS = [
    {
        "ph": "X",
        "cat": "cpu_op",
        "name": 'op },{ "ph": "X" }, {',
        "pid": 7,
        "tid": 7,
        "ts": 1.5,
        "dur": 2,
        "args": {"Input Dims": [[2, 3], []], "s": '}, {"a": 1}]'},
    },
    {
        "ph": "i",
        "cat": "cpu_instant_event",
        "name": "[memory]",
        "pid": "Spans",
        "tid": "t 1",
        "ts": 3,
        "s": "t",
        "args": {"nested": [{"a": {"b": [{}, {}]}}, {"c": '\\"},{'}]},
    },
    {"ph": "f", "id": 12, "pid": 0, "tid": 7, "ts": 4.25, "cat": "ac2g", "name": "ac2g", "bp": "e"},
    {"name": "process_name", "ph": "M", "pid": 7, "tid": 0, "args": {"name": "py\u00e9\u4e2d"}},
    {
        "ph": "X",
        "cat": "kernel",
        "name": "k" * 3000,
        "pid": 0,
        "tid": 7,
        "ts": 10,
        "dur": 0.5,
        "args": {"correlation": 5, "grid": [1, 1, 1]},
    },
    {},
] + [
    {
        "ph": "X",
        "cat": "cpu_op",
        "name": f"aten::op{i}",
        "pid": 7,
        "tid": 7,
        "ts": i,
        "dur": 1,
        "args": {"External id": i},
    }
    for i in range(40)
]


@pytest.mark.parametrize("indent", [None, 2])
@pytest.mark.parametrize("form", ["object", "array", "object-keys-after"])
@pytest.mark.parametrize("block_size,chunk_size", [(1, 1), (7, 50), (64, 1 << 22), (1 << 20, 300)])
def test_decoder_matches_json_loads(indent, form, block_size, chunk_size):
    if form == "array":
        doc: object = TRICKY_EVENTS
    elif form == "object":
        doc = {
            "schemaVersion": 1,
            "deviceProperties": [{"id": 0, "name": "},{"}],
            "traceEvents": TRICKY_EVENTS,
        }
    else:
        doc = {
            "schemaVersion": 1,
            "traceEvents": TRICKY_EVENTS,
            "INFO": [{"m": "x},{"}, {"m": "y"}],
            "distributedInfo": {"rank": 3},
            "traceName": 'a}, {"b',
            "baseTimeNanoseconds": 17,
        }
    data = json.dumps(doc, indent=indent, ensure_ascii=False).encode()
    decoder = decode_all(data, block_size=block_size, chunk_size=chunk_size)
    expected = json.loads(data)
    events = expected if isinstance(expected, list) else expected.pop("traceEvents")
    assert [as_dict(e) for e in decoder.events] == [expected_dict(e) for e in events]
    assert decoder.metadata == ({} if isinstance(expected, list) else expected)
    assert decoder.form == ("array" if form == "array" else "object")
    assert not decoder.trailing_data


@pytest.mark.parametrize(
    "data",
    [
        b"[]",
        b" [ \n ] ",
        b'{"traceEvents": []}',
        b"\xef\xbb\xbf[]",
        b'{"a": 1, "traceEvents" : [ ], "b": [{}, {}]}',
    ],
)
def test_decoder_empty_arrays(data):
    decoder = decode_all(data, block_size=3)
    assert decoder.events == []


def test_event_larger_than_many_default_blocks_is_read(tmp_path: Path) -> None:
    # The default block (1 MiB) is small; an element may still be up to MAX_ELEMENT_BYTES.
    big = {
        "ph": "X",
        "cat": "cpu_op",
        "name": "big",
        "ts": 1,
        "dur": 2,
        "args": {"s": "x" * 9_000_000},
    }
    events = [{"ph": "X", "cat": "cpu_op", "name": "a", "ts": 0, "dur": 5}, big, *TRICKY_EVENTS]
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"traceEvents": events}))
    assert read_trace(path).event_count == len(events)


@pytest.mark.parametrize("enabled", [True, False])
def test_read_leaves_the_garbage_collector_as_it_found_it(tmp_path: Path, enabled: bool) -> None:
    # The read pauses the cyclic collector (it is pure overhead there); the caller's setting
    # comes back, also when the read fails.
    good = tmp_path / "t.json"
    good.write_text(json.dumps({"traceEvents": TRICKY_EVENTS}))
    bad = tmp_path / "bad.json"
    bad.write_text('{"traceEvents": [{"ph": "X"}, {"ph"')
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        read_trace(good)
        assert gc.isenabled() is enabled
        with pytest.raises(TraceError):
            read_trace(bad)
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_decoder_reads_gzip_and_plain_alike(tmp_path):
    data = json.dumps({"traceEvents": TRICKY_EVENTS}).encode()
    (tmp_path / "t.json").write_bytes(data)
    (tmp_path / "t.json.gz").write_bytes(gzip.compress(data))
    plain = read_trace(tmp_path / "t.json", block_size=100)
    packed = read_trace(tmp_path / "t.json.gz", block_size=100)
    assert plain.event_count == packed.event_count == len(TRICKY_EVENTS)
    packed.origin = plain.origin
    assert msgspec.json.encode(plain) == msgspec.json.encode(packed)


@pytest.mark.parametrize(
    "data,error",
    [
        (b"", TraceError),
        (b"   ", TraceError),
        (b"hello", NotATraceError),
        (b'{"schemaVersion": 1}', NotATraceError),
        (b'{"traceEvents": [{"ph": "X"}, {"ph": "X", "ts": 1', TraceError),
        (b'{"traceEvents": [{"ph": "X"}, {"ph": "X"}]', TraceError),
        (b'{"traceEvents": [{"ph": "X"}, {"ph": "X" oops}, {"ph": "X"}]}', TraceError),
        (b'{"traceEvents": [1, 2]}', TraceError),
    ],
)
def test_decoder_errors(data, error):
    with pytest.raises(error):
        decode_all(data, block_size=5)


def test_decoder_skips_entries_that_are_not_events():
    decoder = decode_all(b'[{"ph": "X", "name": 5}, 3, {"ph": "i", "name": "ok"}]', block_size=4)
    assert [e.name for e in decoder.events] == ["ok"]
    assert decoder.invalid_events == 2


def test_truncated_gzip_is_a_trace_error(tmp_path):
    data = gzip.compress(json.dumps({"traceEvents": TRICKY_EVENTS * 50}).encode())
    path = tmp_path / "cut.json.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TraceError):
        read_trace(path)


# ---------------------------------------------------------------------------------------------
# Interval algebra


def test_partition_priorities_add_up():
    a = merge_intervals([0, 5, 30], [10, 12, 40])
    b = merge_intervals([8, 35], [20, 50])
    assert a == ([0, 30], [12, 40])
    parts = partition(-5, 45, [a, b])
    assert parts == pytest.approx([22, 13, 15])  # a: 0-12, 30-40; b: 12-20, 40-45; rest
    assert sum(parts) == pytest.approx(50)


# ---------------------------------------------------------------------------------------------
# Summary semantics on a small hand-made trace


def synthetic_trace() -> dict:
    def x(cat, name, ts, dur, pid=1, tid=1, **args):
        return {
            "ph": "X",
            "cat": cat,
            "name": name,
            "pid": pid,
            "tid": tid,
            "ts": ts,
            "dur": dur,
            "args": args,
        }

    events = [
        # GPU first and shuffled: real traces are not sorted either.
        x("kernel", "ncclDevKernel_AllReduce_Sum_f32", 120, 20, pid=0, tid=7, correlation=2),
        x("kernel", "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn", 110, 20, pid=0, tid=7, correlation=1),
        x("gpu_memcpy", "Memcpy HtoD (Pageable -> Device)", 150, 10, pid=0, tid=7),
        x("gpu_memset", "Memset (Device)", 155, 10, pid=0, tid=7),
        x(
            "kernel",
            "void at::native::vectorized_elementwise_kernel<4>",
            260,
            10,
            pid=0,
            tid=7,
            correlation=3,
        ),
        x("user_annotation", "ProfilerStep#7", 200, 100),
        x("user_annotation", "ProfilerStep#6", 100, 100),
        x("gpu_user_annotation", "ProfilerStep#6", 110, 60, pid=0, tid=7),
        x(
            "user_annotation",
            "enumerate(DataLoader)#_MultiProcessingDataLoaderIter.__next__",
            170,
            20,
        ),
        x(
            "cpu_op",
            "aten::linear",
            100,
            40,
            **{"Input type": ["float", "float", ""], "Input Dims": [[8, 4], [2, 4], []]},
        ),
        x("cpu_op", "aten::addmm", 100, 30),
        x("cuda_runtime", "cudaLaunchKernel", 101, 3, correlation=1),
        x("cuda_runtime", "cudaLaunchKernel", 105, 3, correlation=2),
        x("cuda_runtime", "cudaDeviceSynchronize", 192, 6),
        x("cpu_op", "aten::mul", 250, 20),
        x("cuda_runtime", "cudaLaunchKernel", 251, 2, correlation=3),
        {
            "ph": "i",
            "cat": "cpu_instant_event",
            "name": "[memory]",
            "pid": 1,
            "tid": 1,
            "ts": 210,
            "s": "t",
            "args": {
                "Total Allocated": 100,
                "Total Reserved": 200,
                "Device Id": 0,
                "Device Type": 1,
            },
        },
        {
            "ph": "i",
            "cat": "cpu_instant_event",
            "name": "[memory]",
            "pid": 1,
            "tid": 1,
            "ts": 205,
            "s": "t",
            "args": {
                "Total Allocated": 300,
                "Total Reserved": 400,
                "Device Id": 0,
                "Device Type": 1,
            },
        },
    ]
    return {
        "schemaVersion": 1,
        "deviceProperties": [
            {
                "id": 0,
                "name": "NVIDIA H100",
                "totalGlobalMem": 80,
                "computeMajor": 9,
                "computeMinor": 0,
                "numSms": 132,
            }
        ],
        "traceEvents": events,
        "distributedInfo": {"backend": "nccl", "rank": 2, "world_size": 4},
    }


def test_synthetic_summary(tmp_path):
    path = tmp_path / "syn.json"
    path.write_text(json.dumps(synthetic_trace()))
    s = read_trace(path)
    assert s.step_detection == "profiler-step"
    assert [st.number for st in s.steps] == [6, 7]
    assert s.rank == 2 and s.has_gpu and s.device_kind == "cuda" and s.format == "kineto"
    assert s.devices[0].capability == "9.0" and s.devices[0].multiprocessors == 132
    b6 = s.steps[0].breakdown
    # Step 6 is [100, 200] µs: comm 120-140, compute 110-120, memcpy 150-160, memset 160-165,
    # then, while the GPU is idle: DataLoader 170-190; runtime 101-104, 105-108, 192-198;
    # inside operators 100-101, 104-105, 108-110.
    assert b6.wall == pytest.approx(0.1)
    assert b6.communication == pytest.approx(0.020)
    assert b6.compute == pytest.approx(0.010)
    assert b6.memcpy == pytest.approx(0.010)
    assert b6.memset == pytest.approx(0.005)
    assert b6.input_wait == pytest.approx(0.020)
    assert b6.host_runtime == pytest.approx(0.012)
    assert b6.idle_host_wait == pytest.approx(0.004)
    assert b6.idle_other == pytest.approx(
        0.1 - 0.020 - 0.010 - 0.010 - 0.005 - 0.020 - 0.012 - 0.004
    )
    assert s.steps[0].kernels == 2 and s.steps[0].gpu_busy_ms == pytest.approx(0.045)
    assert s.steps[1].kernels == 1
    assert_consistent_steps(s)
    assert s.gpu_busy_ms == pytest.approx(0.055)
    assert s.kernel_count == 3 and s.kernel_time_ms == pytest.approx(0.05)
    ops = {o.name: o for o in s.top_ops}
    assert ops["aten::linear"].total_ms == pytest.approx(0.040)
    assert ops["aten::linear"].self_ms == pytest.approx(0.010)
    assert ops["aten::linear"].gpu_ms == pytest.approx(0.040)  # inclusive of aten::addmm
    assert ops["aten::addmm"].gpu_ms == pytest.approx(0.040)
    assert ops["aten::mul"].gpu_ms == pytest.approx(0.010)
    assert ops["aten::linear"].input_dtypes == ["float"]
    assert ops["aten::linear"].input_shapes == ["8x4, 2x4"]
    kernels = {k.name: k for k in s.top_kernels}
    assert kernels["ncclDevKernel_AllReduce_Sum_f32"].kernel_class == "communication"
    assert kernels["sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn"].tensor_core is True
    assert s.kernel_class_ms == pytest.approx(
        {"communication": 0.02, "gemm": 0.02, "elementwise": 0.01}
    )
    assert s.dataloader_iterators == {"_MultiProcessingDataLoaderIter": 1}
    (mem,) = s.memory
    assert mem.t_us == [205, 210] and mem.allocated_bytes == [300, 100]
    assert mem.peak_allocated_bytes == 300 and mem.peak_reserved_bytes == 400


def test_nested_same_name_ops_count_once(tmp_path):
    events = [
        {
            "ph": "X",
            "cat": "cpu_op",
            "name": "aten::conv2d",
            "pid": 1,
            "tid": 1,
            "ts": 0,
            "dur": 10,
        },
        {"ph": "X", "cat": "cpu_op", "name": "aten::conv2d", "pid": 1, "tid": 1, "ts": 1, "dur": 8},
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 2, "ts": 0, "dur": 4},
    ]
    path = tmp_path / "nested.json"
    path.write_text(json.dumps(events))
    s = read_trace(path)
    ops = {o.name: o for o in s.top_ops}
    assert ops["aten::conv2d"].calls == 2
    assert ops["aten::conv2d"].total_ms == pytest.approx(0.010)
    assert ops["aten::conv2d"].self_ms == pytest.approx(0.010)  # 2 outer + 8 inner
    assert s.step_detection == "fallback" and len(s.steps) == 1
    assert not s.has_gpu and s.device_kind is None
    assert s.steps[0].breakdown.cpu_only == pytest.approx(0.010)  # main process: both threads
    assert_consistent_steps(s)


def test_memory_timeline_is_downsampled_keeping_the_peak(tmp_path):
    events = [
        {
            "ph": "i",
            "cat": "cpu_instant_event",
            "name": "[memory]",
            "pid": 1,
            "tid": 1,
            "ts": (i * 7919) % 3000,
            "args": {
                "Total Allocated": (i * 7919) % 3000 + (10_000 if i == 1234 else 0),
                "Total Reserved": 5000,
                "Device Id": 1,
                "Device Type": 1,
            },
        }
        for i in range(3000)
    ]
    path = tmp_path / "mem.json"
    path.write_text(json.dumps({"traceEvents": events}))
    (mem,) = read_trace(path).memory
    assert mem.device == 1
    assert len(mem.t_us) <= 512 and mem.t_us == sorted(mem.t_us)
    assert mem.peak_allocated_bytes == max(mem.allocated_bytes) == 10_000 + (1234 * 7919) % 3000


def test_empty_trace(tmp_path):
    path = tmp_path / "empty.json"
    path.write_text('{"schemaVersion": 1, "traceEvents": []}')
    s = read_trace(path)
    assert s.event_count == 0 and s.steps == [] and s.step_detection == "none"


# ---------------------------------------------------------------------------------------------
# Kernel classification


@pytest.mark.parametrize(
    "name,cls,tc",
    [
        ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64", "gemm", True),
        ("sm80_xmma_gemm_f32f32_f32f32_f32_tn_n_tilesize128x128x8_stage3_ffma", "gemm", False),
        ("void cutlass::Kernel2<cutlass_80_simt_sgemm_128x256_8x4_nt_align1>(x)", "gemm", False),
        ("void cutlass::Kernel<cutlass_80_tensorop_s1688gemm_256x64_16x4_nn_align4>", "gemm", True),
        ("volta_sgemm_128x64_nn", "gemm", False),
        ("ampere_sgemm_32x128_tn", "gemm", False),
        ("nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT", "gemm", True),
        ("sm90_xmma_fprop_implicit_gemm_f32f32_tf32f32_f32_nhwckrsc_nhwc", "convolution", True),
        ("void implicit_convolve_sgemm<float, float, 128, 5, 5>(int)", "convolution", False),
        ("volta_scudnn_128x64_relu_interior_nn_v1", "convolution", False),
        ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7", "attention", True),
        (
            "fmha_cutlassF_f32_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel)",
            "attention",
            False,
        ),
        ("void flash_fwd_kernel<Flash_fwd_kernel_traits<128, 64, 64, 4>>", "attention", True),
        (
            "ncclDevKernel_AllReduce_Sum_f32_RING_LL(ncclDevKernelArgsStorage<4096ul>)",
            "communication",
            None,
        ),
        (
            "void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>>",
            "elementwise",
            None,
        ),
        ("void at::native::reduce_kernel<128, 4, at::native::ReduceOp<float>>", "reduction", None),
        ("void cudnn::bn_fw_tr_1C11_kernel_NCHW<float, float, int, 128>", "normalization", None),
        ("void at::native::elementwise_kernel<128, 2, direct_copy_kernel_cuda>", "copy", None),
        ("void at::native::(anonymous namespace)::max_pool_forward_nchw<float>", "other", None),
        ("triton_tem_fused_mm_0", "gemm", None),
        ("triton_poi_fused_add_0", "elementwise", None),
        ("void fbgemm_gpu::permute_2D_lengths_kernel<int>", "copy", None),
        # Volta
        ("volta_h884gemm_128x128_ldg8_nn", "gemm", True),
        ("volta_fp16_s884gemm_fp16_128x128_ldg8_f2f_nn", "gemm", True),
        (
            "volta_fp16_s884cudnn_fp16_128x128_ldg8_relu_f2f_exp_small_nhwc2nchw_tn_v1",
            "convolution",
            True,
        ),
        ("volta_scudnn_winograd_128x128_ldg1_ldg4_relu_tile148t_nt_v1", "convolution", False),
        # Turing
        ("turing_s1688gemm_fp16_128x128_ldg8_f2f_nn", "gemm", True),
        ("turing_h1688gemm_256x128_ldg8_nn", "gemm", True),
        # Ampere: TF32 and half tensor ops vs SIMT / FFMA
        ("ampere_bf16_s16816gemm_bf16_128x256_ldg8_f2f_stages_64x3_tn", "gemm", True),
        ("ampere_fp16_s16816gemm_fp16_64x64_sliced1x2_ldg8_f2f_stages_64x5_nn", "gemm", True),
        (
            "sm80_xmma_gemm_f32f32_tf32f32_f32_nn_n_tilesize128x128x16_stage4_warpsize2x2x1",
            "gemm",
            True,
        ),
        (
            "void cutlass::Kernel2<cutlass_80_wmma_tensorop_bf16_s161616gemm_bf16_32x32_128x1>",
            "gemm",
            True,
        ),
        (
            "void gemmSN_TN_kernel<float, 128, 16, 2, 4, 8, 9, false>(cublasGemmSmallNParams)",
            "gemm",
            False,
        ),
        (
            "void cudnn::detail::dgrad_engine<float, 512, 6, 5, 3, 3, 3, false>(int)",
            "convolution",
            False,
        ),
        (
            "void cudnn::cnn::wgrad_alg0_engine<float, 128, 6, 7, 3, 3, 5, false, 512>",
            "convolution",
            False,
        ),
        (
            "void cudnn::winograd_nonfused::winogradForwardData4x4<float, float>(x)",
            "convolution",
            False,
        ),
        # Hopper
        (
            "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1",
            "gemm",
            True,
        ),
        (
            "cutlass3x_sm90_tensorop_s64x128x16gemm_bf16_bf16_f32_bf16_bf16_128x128x64_1x1x1",
            "gemm",
            True,
        ),
        (
            "void flash::flash_fwd_splitkv_kernel<Flash_fwd_kernel_traits<128, 64>>",
            "attention",
            True,
        ),
        # Blackwell
        ("nvjet_sm100_tst_256x256_64x4_2x1_2cta_h_bz_TNT", "gemm", True),
        ("sm100_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize256x128x64_cgasize2x1x1", "gemm", True),
        ("kernel_cutlass_gemm_sm100_tcgen05_mma_bf16_bf16_f32", "gemm", True),
        # AMD: Tensile with and without matrix instructions, MIOpen, composable kernel, RCCL
        ("Cijk_Ailk_Bljk_BBS_BH_MT64x64x64_MI16x16x16x1_SN_1LDSB0_APM1", "gemm", True),
        ("Cijk_Ailk_Bljk_SB_MT64x64x8_SN_1LDSB0_APM1", "gemm", False),
        (
            "igemm_fwd_gtcx3_nhwc_bf16_bx0_ex1_bt128x128x32_wt32x32x8_ws1x1_wr2x2",
            "convolution",
            True,
        ),
        (
            "_ZN2ck16tensor_operation6device37kernel_batched_gemm_xdlops_bwd_weightINS_47",
            "gemm",
            True,
        ),
        ("rcclGenericKernel_Sum_f32", "communication", None),
    ],
)
def test_kernel_classes(name, cls, tc):
    assert kernel_class(name) == cls
    assert tensor_core(name) is tc
    assert classify_kernel(name) == (cls, tc)


# ---------------------------------------------------------------------------------------------
# Real H200 traces


@pytest.mark.parametrize("path", H200_TRACES, ids=lambda p: p.name.split(".")[0])
def test_h200_trace_summaries(path):
    s = summary_of(path)
    assert s.format == "kineto" and s.origin == path.name
    assert s.step_detection == "profiler-step"
    assert [st.number for st in s.steps] == [2, 3, 4, 5]
    assert_consistent_steps(s)
    assert s.has_gpu and s.device_kind == "cuda"
    assert [(d.name, d.capability) for d in s.devices] == [("NVIDIA H200", "9.0")]
    assert s.kernel_count > 0 and sum(st.kernels for st in s.steps) <= s.kernel_count
    assert 0 < s.gpu_busy_ms <= min(s.kernel_time_ms + 1e3, s.span_ms)
    assert 0 < len(s.top_kernels) <= 50 and 0 < len(s.top_ops) <= 50
    totals = [k.total_ms for k in s.top_kernels]
    assert totals == sorted(totals, reverse=True)
    assert sum(s.kernel_class_ms.values()) == pytest.approx(s.kernel_time_ms)
    for k in s.top_kernels:
        assert k.median_us <= k.max_us and k.calls > 0
    for op in s.top_ops:
        assert 0 <= op.self_ms <= op.total_ms + 1e-9
    assert s.memory and all(len(m.t_us) <= 512 for m in s.memory)
    assert all(m.peak_allocated_bytes == max(m.allocated_bytes) for m in s.memory)


def test_dataloader_stall_shows_input_wait():
    s = h200("dataloader_stall_w0")
    assert s.dataloader_iterators == {"_SingleProcessDataLoaderIter": 4}
    for step in s.steps:
        assert step.breakdown.input_wait > 0.5 * step.breakdown.wall
    healthy = h200("healthy_resnet_amp")
    assert all(st.breakdown.input_wait == 0 for st in healthy.steps)


def test_resnet_fp32_kernels():
    s = h200("resnet_fp32")
    matrix = [k for k in s.top_kernels if k.kernel_class in ("convolution", "gemm")]
    assert any(k.kernel_class == "convolution" for k in s.top_kernels[:10])
    for k in s.top_kernels:
        lowered = k.name.lower()
        if "implicit_gemm" in lowered or "convolve" in lowered:
            assert k.kernel_class == "convolution", k.name
        if "tf32" in lowered:
            assert k.tensor_core is True, k.name  # cuDNN's default TF32 convolutions
        elif any(m in lowered for m in ("sgemm", "ffma", "f32f32_f32f32")):
            assert k.tensor_core is False, k.name
    assert matrix
    amp = h200("healthy_resnet_amp")
    amp_matrix = [k for k in amp.top_kernels if k.kernel_class in ("convolution", "gemm")]
    tc_ms = sum(k.total_ms for k in amp_matrix if k.tensor_core)
    assert tc_ms > 0.8 * sum(k.total_ms for k in amp_matrix)
    assert any("c10::BFloat16" in op.input_dtypes for op in amp.top_ops)


def test_transformer_fp32_gemms_are_not_on_tensor_cores():
    fp32 = h200("transformer_fp32")
    gemm = [k for k in fp32.top_kernels if k.kernel_class == "gemm"]
    no_tc = sum(k.total_ms for k in gemm if k.tensor_core is False)
    assert no_tc > 0.9 * sum(k.total_ms for k in gemm)
    amp = h200("transformer_amp")
    assert all(k.tensor_core for k in amp.top_kernels if k.kernel_class == "gemm")


def test_op_gpu_time_links_kernels_to_operators():
    s = h200("healthy_resnet_amp")
    ops = {o.name: o for o in s.top_ops}
    assert ops["aten::cudnn_convolution"].gpu_ms > 0
    assert ops["aten::convolution"].gpu_ms >= ops["aten::cudnn_convolution"].gpu_ms
    assert "256x3x224x224, 64x3x7x7" in ops["aten::convolution"].input_shapes


def test_summary_is_deterministic_and_independent_of_block_size():
    path = H200 / "transformer_sync_each_step.pt.trace.json.gz"
    a = msgspec.json.encode(read_trace(path))
    b = msgspec.json.encode(read_trace(path))
    c = msgspec.json.encode(read_trace(path, block_size=1 << 16))
    assert a == b == c


def test_record_from_directory():
    record = record_from_traces(H200)
    assert [t.origin for t in record.traces] == [p.name for p in H200_TRACES]
    assert find_trace_files(H200) == H200_TRACES  # *.samples.json and summary.json left out
    assert record.source == "trace" and record.name == "h200"
    assert record.steps.detection == "profiler" and record.steps.count == 4
    assert record.environment.devices[0].name == "NVIDIA H200"
    assert record.environment.cuda_version == "13.0"
    assert record.started_utc.startswith("20")
    decoded = msgspec.json.decode(record.to_json())
    assert decoded["schema"] == "torchdiag.run/1"


# ---------------------------------------------------------------------------------------------
# Other real traces


def test_distributed_trace_record():
    record = record_from_traces(EXTERNAL / "hta" / "df_index_resolver.json.gz")
    assert record.name == "df_index_resolver.json.gz"
    assert (record.rank, record.world_size) == (1, 2)
    assert record.environment.distributed.backend == "nccl"
    assert record.started_utc.startswith("2022-11-30")
    assert len(record.environment.devices) == 2
    assert record.steps.detection == "profiler" and record.steps.count == 5
    (s,) = record.traces
    assert s.rank == 1 and s.kernel_count == 19370
    assert record.steps.wall_ms == [st.duration_ms for st in s.steps]
    assert_consistent_steps(s)
    assert all(st.breakdown.communication > 0 for st in s.steps)
    assert s.kernel_class_ms["communication"] > 0


def test_nccl_trace():
    s = summary_of(EXTERNAL / "hta" / "nccl_data.json.gz")
    assert s.rank == 0 and len(s.steps) == 3 and s.format == "kineto"
    assert any(k.kernel_class == "communication" for k in s.top_kernels)
    assert any("baseTimeNanoseconds" in n for n in s.notes)
    assert_consistent_steps(s)


def test_cpu_only_trace():
    s = summary_of(EXTERNAL / "dtu_mlops" / "trace.json")
    assert not s.has_gpu and s.kernel_count == 0 and s.device_kind is None
    assert s.step_detection == "fallback" and len(s.steps) == 1
    b = s.steps[0].breakdown
    assert b.cpu_only > 0.5 * b.wall and b.compute == 0
    assert_consistent_steps(s)
    assert s.top_ops[0].total_ms > 0 and s.top_ops[0].input_shapes
    assert s.memory == []  # host allocations only: no device timeline, and no note about them
    assert not any("allocator peak" in n for n in s.notes)


@pytest.mark.parametrize(
    "path",
    sorted(p for p in EXTERNAL.glob("*/*") if p.name != "MANIFEST.tsv")
    if EXTERNAL.is_dir()
    else [],
    ids=lambda p: p.name,
)
def test_external_traces_give_a_summary(path):
    s = summary_of(path)  # every one of them: no TraceError either
    assert_consistent_steps(s)
    assert s.event_count > 0 and s.format
    assert s.steps and s.step_detection in ("profiler-step", "fallback")
    if s.math is not None:
        m = s.math
        assert m.tensor_core_ms + m.non_tensor_core_ms + m.unknown_ms == pytest.approx(
            m.eligible_ms, abs=1e-9
        )
        assert sum(m.op_dtype_ms.values()) == pytest.approx(m.eligible_ms, abs=1e-6)
    for step in s.steps:
        assert 0 <= step.dataloader_ms <= step.duration_ms * (1 + 1e-9)
        assert step.sync_ms <= step.duration_ms * (1 + 1e-9)
        assert 0 <= step.idle_after_sync_ms <= step.duration_ms * (1 + 1e-9)


def test_record_from_directory_skips_json_that_is_not_a_trace(tmp_path):
    (tmp_path / "b.json").write_text(json.dumps(synthetic_trace()))
    (tmp_path / "config.json").write_text('{"lr": 0.1}')
    (tmp_path / "notes.txt").write_text("not json")
    record = record_from_traces(tmp_path)
    assert [t.origin for t in record.traces] == ["b.json"]
    assert "config.json" in (record.collectors["trace"].reason or "")
    assert (record.rank, record.world_size) == (2, 4)
    assert record.steps.first_step == [6, 7] and record.steps.wall_ms == pytest.approx([0.1] * 2)
    assert record.steps.input_wait_ms == pytest.approx([0.02, 0.0])
    with pytest.raises(NotATraceError):
        record_from_traces(tmp_path / "config.json")
    with pytest.raises(TraceError):
        record_from_traces([])


# ---------------------------------------------------------------------------------------------
# Derived figures on the H200 traces (each with one planted cause, see LABELS.md)


def sync_stat(s: TraceSummary, name: str):
    return next((x for x in s.syncs if x.name == name), None)


def known_dtype_ms(s: TraceSummary) -> dict[str, float]:
    assert s.math is not None
    return {k: v for k, v in s.math.op_dtype_ms.items() if k != "unknown"}


def test_sync_each_step_shows_syncs_inside_steps():
    s = h200("transformer_sync_each_step")
    n = len(s.steps)
    stream = sync_stat(s, "cudaStreamSynchronize")
    assert stream is not None and stream.in_steps >= 2 * n  # loss.item() and .cpu()
    device = sync_stat(s, "cudaDeviceSynchronize")
    # torch.cuda.synchronize() each step; the profiler's own one at stop lies outside the steps
    assert device is not None and device.in_steps == n and device.count == n + 1
    assert sync_stat(s, "aten::item").in_steps == n  # the operator that caused it
    for step in s.steps:
        assert step.syncs >= 3 and step.sync_ms > 0
        assert step.idle_after_sync_ms > 0
    healthy = h200("transformer_amp")
    assert all(
        st.syncs == 0 and st.sync_ms == 0 and st.idle_after_sync_ms == 0 for st in healthy.steps
    )
    assert all(x.in_steps == 0 for x in healthy.syncs)
    # aten::item on CPU tensors (the optimizer's step counters) does not synchronise
    assert sync_stat(healthy, "aten::item") is None
    assert any(op.name == "aten::item" and op.calls > 100 for op in healthy.top_ops + s.top_ops)


def test_dataloader_stall_figures():
    s = h200("dataloader_stall_w0")
    assert s.dataloader_iterators == {"_SingleProcessDataLoaderIter": 4}
    for step in s.steps:
        assert step.dataloader_ms > 0.6 * step.duration_ms
        assert step.breakdown.input_wait <= step.dataloader_ms + 1e-9
    pageable = [c for c in s.copies if c.direction == "HtoD" and c.pageable]
    assert pageable and pageable[0].name == "Memcpy HtoD (Pageable -> Device)"
    assert pageable[0].count == 8 and pageable[0].bytes > 100_000_000
    assert s.batch_size == 64
    record = record_from_traces(H200 / "dataloader_stall_w0.pt.trace.json.gz")
    assert record.steps.input_wait_ms == pytest.approx([st.dataloader_ms for st in s.steps])
    healthy = h200("healthy_resnet_amp")
    assert all(st.dataloader_ms == 0 for st in healthy.steps) and not healthy.copies[0].pageable


def test_fp32_runs_show_float_math():
    for name in ("resnet_fp32", "transformer_fp32"):
        dtypes = known_dtype_ms(h200(name))
        assert max(dtypes, key=dtypes.get) == "float"
        assert dtypes["float"] > 0.95 * sum(dtypes.values()), name
    t = h200("transformer_fp32").math
    assert t.non_tensor_core_ms > 0.95 * t.eligible_ms and t.tensor_core_ms == 0
    # cuDNN runs the fp32 convolutions as TF32 on tensor cores, reading NCHW data through
    # nchwToNhwc transposes: that is what the channels-last rule looks at
    r = h200("resnet_fp32").math
    assert r.tensor_core_ms > 0.8 * r.eligible_ms
    assert r.layout_transform_ms > 0.3 * r.conv_ms


def test_healthy_resnet_amp_math():
    s = h200("healthy_resnet_amp")
    m = s.math
    assert m.conv_ms > 0.9 * m.eligible_ms
    assert m.conv_nhwc_ms > 0.75 * m.conv_ms and m.conv_nchw_ms < 0.05 * m.conv_ms
    assert m.layout_transform_ms < 0.05 * m.conv_ms
    assert m.tensor_core_ms > 0.95 * m.eligible_ms
    dtypes = known_dtype_ms(s)
    assert dtypes["c10::BFloat16"] > 0.95 * sum(dtypes.values())
    assert (s.batch_size, s.batch_size_source) == (256, "aten::conv2d input dims")
    amp = h200("transformer_amp")
    assert amp.math.tensor_core_ms == pytest.approx(amp.math.eligible_ms)
    assert known_dtype_ms(amp) == pytest.approx({"c10::BFloat16": amp.math.eligible_ms})


def test_tiny_mlp_is_launch_bound():
    s = h200("tiny_mlp_launch_bound")
    launch = s.launch
    assert launch.launches == sum(st.launches for st in s.steps) == s.kernel_count
    assert all(st.launches > 500 for st in s.steps)
    assert launch.median_kernel_us < 3 and launch.median_kernel_us < launch.median_launch_us
    assert launch.short_kernels > 0.8 * launch.launches
    assert launch.median_queue_us < 50  # the GPU waits for each launch
    assert launch.p90_kernel_us >= launch.median_kernel_us and launch.cuda_graph_launches == 0
    (opt,) = s.optimizer_steps
    assert opt.name == "Optimizer.step#Adam.step" and opt.calls == 4
    assert opt.foreach_ops_per_call == 0 and opt.ops_per_call > 500
    assert opt.kernels_per_call > 200
    assert s.batch_size == 16
    fused = h200("transformer_amp").optimizer_steps[0]
    assert fused.foreach_ops_per_call > 5 and fused.kernels_per_call < 50


def test_small_batch_fills_few_sms():
    small = h200("resnet_small_batch")
    big = h200("healthy_resnet_amp")
    assert (small.batch_size, big.batch_size) == (4, 256)
    assert small.occupancy.sm_efficiency_pct < 60 < big.occupancy.sm_efficiency_pct
    assert small.occupancy.kernels_with_launch_info == small.kernel_count
    assert small.launch.median_kernel_us < big.launch.median_kernel_us
    for name in ("transformer_amp", "transformer_fp32", "transformer_sync_each_step"):
        assert h200(name).batch_size == 16, name


@pytest.mark.parametrize("path", H200_TRACES, ids=lambda p: p.name.split(".")[0])
def test_h200_derived_figures_are_consistent(path):
    s = summary_of(path)
    assert s.streams == 1 and s.markers == {} and s.world_size is None
    launch = s.launch
    assert launch.launches >= sum(st.launches for st in s.steps)
    assert launch.launch_ms > 0 and launch.median_launch_us > 0
    assert 0 <= launch.short_kernels <= launch.launches
    assert launch.p90_queue_us >= launch.median_queue_us
    m = s.math
    assert m.eligible_ms == pytest.approx(
        sum(v for k, v in s.kernel_class_ms.items() if k in ("gemm", "convolution", "attention"))
    )
    assert m.conv_ms == pytest.approx(s.kernel_class_ms.get("convolution", 0.0))
    assert m.conv_nhwc_ms + m.conv_nchw_ms <= m.conv_ms + 1e-9
    assert s.occupancy.kernels_with_launch_info == s.kernel_count
    assert 0 < s.occupancy.sm_efficiency_pct <= 100
    assert 0 < s.occupancy.achieved_occupancy_pct <= 100
    assert [o.calls for o in s.optimizer_steps] == [4]
    total_syncs = sum(x.in_steps for x in s.syncs if not x.name.startswith("aten::"))
    assert total_syncs == sum(st.syncs for st in s.steps)


def test_progress_reports_bytes_of_the_compressed_file():
    path = H200 / "healthy_resnet_amp.pt.trace.json.gz"
    calls: list[tuple[int, int | None]] = []
    a = read_trace(
        path, block_size=1 << 20, progress=lambda done, total: calls.append((done, total))
    )
    assert len(calls) > 3
    size = path.stat().st_size
    assert all(total == size for _, total in calls)
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[-1] == size
    assert msgspec.json.encode(a) == msgspec.json.encode(summary_of(path))


def test_length_in_matches_clip_then_length():
    from torchdiag.traces.intervals import clip, length, length_in

    iv = merge_intervals([0, 5, 30, 50], [10, 12, 40, 51])
    for a, b in [(-5, 100), (3, 35), (11, 11.5), (12, 30), (40, 50), (45, 46), (100, 200)]:
        assert length_in(iv, a, b) == pytest.approx(length(clip(iv, a, b)))


def test_rank_traces_read_in_parallel_match_the_sequential_read(monkeypatch):
    from torchdiag.traces import load

    folder = EXTERNAL / "hta"
    files = [folder / f"trace_filter__sampled_rank-{r}.json.gz" for r in (0, 1)]
    sequential = record_from_traces(files, jobs=1)
    monkeypatch.setattr(load, "POOL_MIN_BYTES", 0)  # these two are small: pool them anyway
    pooled = record_from_traces(files, jobs=2)
    assert pooled.to_json() == sequential.to_json()
    assert [t.rank for t in pooled.traces] == [0, 1]

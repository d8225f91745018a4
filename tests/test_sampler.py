"""Tests for the background sampler, its downsampling buffer and its host/NVML backends."""

from __future__ import annotations

import ctypes
import subprocess
import sys
import threading
import time
from types import SimpleNamespace
from typing import Any

import msgspec
import pynvml as real_nvml
import pytest

from torchdiag.capture.host_metrics import HostMetrics
from torchdiag.capture.nvml_metrics import NvmlMetrics
from torchdiag.capture.sampler import (
    THREAD_NAME,
    GpuDevice,
    GpuReading,
    HostReading,
    Merge,
    Sampler,
    SeriesBuffer,
    create_sampler,
)
from torchdiag.record import CollectorStatus, Samples

# ---------------------------------------------------------------------------------------------
# Fakes


class FakeClock:
    def __init__(self, start: float = 100.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class FakeHost:
    """Sample n (1-based) reads process_cpu_pct=n and per-core [n, 2n]."""

    def __init__(self, fail_at: int | None = None, block: threading.Event | None = None) -> None:
        self.status = CollectorStatus(available=True)
        self.cpu_count = 2
        self.memory_total_bytes = 1000
        self.calls = 0
        self.closed = False
        self._fail_at = fail_at
        self._block = block

    def read(self) -> HostReading:
        self.calls += 1
        if self._block is not None:
            self._block.wait(5)
        if self.calls == self._fail_at:
            raise RuntimeError("boom")
        n = float(self.calls)
        return HostReading(
            cpu_pct_per_core=[n, 2 * n],
            process_cpu_pct=n,
            process_rss_bytes=10 * n,
            worker_count=2.0,
            workers_cpu_pct=None if self.calls % 2 else n,
            workers_rss_bytes=0.0,
            memory_used_bytes=500.0,
        )

    def close(self) -> None:
        self.closed = True


class FakeGpus:
    """One GPU whose reads cycle through the given throttle masks."""

    def __init__(self, masks: list[int | None]) -> None:
        self.status = CollectorStatus(available=True)
        self.gpm_status = CollectorStatus(available=True)
        self.devices = [GpuDevice(index=3, name="Fake", gpm_supported=True)]
        self.calls = 0
        self.closed = False
        self._masks = masks

    def read(self) -> list[GpuReading]:
        mask = self._masks[self.calls % len(self._masks)]
        self.calls += 1
        return [GpuReading(utilization_pct=50.0, throttle_reasons=mask, gpm={"sm_active_pct": 7.0})]

    def close(self) -> None:
        self.closed = True


class FakeNvml:
    """Mimics the parts of pynvml the NVML backend uses; structs and errors are pynvml's own."""

    NVMLError = real_nvml.NVMLError
    NVMLError_NotSupported = real_nvml.NVMLError_NotSupported
    NVMLError_FunctionNotFound = real_nvml.NVMLError_FunctionNotFound
    NVMLError_NoPermission = real_nvml.NVMLError_NoPermission
    NVML_CLOCK_SM = real_nvml.NVML_CLOCK_SM
    NVML_TEMPERATURE_GPU = real_nvml.NVML_TEMPERATURE_GPU
    NVML_GPM_METRICS_GET_VERSION = real_nvml.NVML_GPM_METRICS_GET_VERSION
    NVML_GPM_METRIC_SM_UTIL = real_nvml.NVML_GPM_METRIC_SM_UTIL
    NVML_GPM_METRIC_SM_OCCUPANCY = real_nvml.NVML_GPM_METRIC_SM_OCCUPANCY
    NVML_GPM_METRIC_ANY_TENSOR_UTIL = real_nvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL
    NVML_GPM_METRIC_DRAM_BW_UTIL = real_nvml.NVML_GPM_METRIC_DRAM_BW_UTIL
    NVML_GPM_METRIC_FP32_UTIL = real_nvml.NVML_GPM_METRIC_FP32_UTIL
    NVML_GPM_METRIC_FP16_UTIL = real_nvml.NVML_GPM_METRIC_FP16_UTIL
    c_nvmlGpmMetricsGet_t = real_nvml.c_nvmlGpmMetricsGet_t

    def __init__(
        self,
        count: int = 2,
        *,
        gpm_supported: bool = True,
        init_error: Exception | None = None,
        errors: dict[str, Exception] | None = None,
    ) -> None:
        self.count = count
        self.gpm_supported = gpm_supported
        self.init_error = init_error
        # function name -> exception it raises (after `fail_after` successful calls)
        self.errors = errors or {}
        self.fail_after = 0
        self.calls: dict[str, int] = {}
        self.live_samples: dict[int, Any] = {}
        self.sample_ticks: dict[int, int] = {}
        self.tick = 0
        self.shut_down = False

    def _call(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        if name in self.errors and self.calls[name] > self.fail_after:
            raise self.errors[name]

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.shut_down = True

    def nvmlDeviceGetCount(self) -> int:
        return self.count

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        return SimpleNamespace(index=index)

    def nvmlDeviceGetName(self, handle: Any) -> str:
        return f"Fake GPU {handle.index}"

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        return f"GPU-{handle.index}{handle.index}{handle.index}a-0000"

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        return SimpleNamespace(total=80_000, used=1000 * (handle.index + 1), free=0)

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        self._call("nvmlDeviceGetUtilizationRates")
        return SimpleNamespace(gpu=90 + handle.index, memory=40)

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        self._call("nvmlDeviceGetPowerUsage")
        return 350_000

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int:
        return 700_000

    def nvmlDeviceGetClockInfo(self, handle: Any, clock: int) -> int:
        assert clock == real_nvml.NVML_CLOCK_SM
        return 1500

    def nvmlDeviceGetMaxClockInfo(self, handle: Any, clock: int) -> int:
        assert clock == real_nvml.NVML_CLOCK_SM
        return 1980

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        assert sensor == real_nvml.NVML_TEMPERATURE_GPU
        return 61

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Any) -> int:
        self._call("nvmlDeviceGetCurrentClocksEventReasons")
        return 0x4

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: Any) -> int:
        return 0x8

    def nvmlGpmQueryDeviceSupport(self, handle: Any) -> Any:
        self._call("nvmlGpmQueryDeviceSupport")
        return SimpleNamespace(isSupportedDevice=int(self.gpm_supported))

    def nvmlGpmSampleAlloc(self) -> Any:
        sample = ctypes.pointer(real_nvml.struct_c_nvmlGpmSample_t())
        self.live_samples[ctypes.addressof(sample.contents)] = sample
        return sample

    def nvmlGpmSampleFree(self, sample: Any) -> None:
        del self.live_samples[ctypes.addressof(sample.contents)]

    def nvmlGpmSampleGet(self, handle: Any, sample: Any) -> Any:
        self._call("nvmlGpmSampleGet")
        self.tick += 1
        self.sample_ticks[ctypes.addressof(sample.contents)] = self.tick
        return sample

    def nvmlGpmMetricsGet(self, request: Any) -> Any:
        self._call("nvmlGpmMetricsGet")
        assert request.version == real_nvml.NVML_GPM_METRICS_GET_VERSION
        first = ctypes.addressof(request.sample1.contents)
        second = ctypes.addressof(request.sample2.contents)
        assert first in self.live_samples and second in self.live_samples
        assert self.sample_ticks[first] < self.sample_ticks[second]
        for i in range(request.numMetrics):
            request.metrics[i].value = request.metrics[i].metricId * 1.5
            request.metrics[i].nvmlReturn = 0
        return request


def nvml_sampler(nvml: FakeNvml, clock: FakeClock, visible: str | None = None) -> Sampler:
    environ = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    gpus = NvmlMetrics(nvml, environ=environ, clock=clock)
    return Sampler(1.0, host=None, gpus=gpus, clock=clock, t0=clock.now)


def run_samples(sampler: Sampler, clock: FakeClock, count: int, step_s: float = 0.5) -> None:
    for _ in range(count):
        sampler.sample_once()
        clock.now += step_s


# ---------------------------------------------------------------------------------------------
# SeriesBuffer and downsampling


def test_rows_and_times_before_the_buffer_fills() -> None:
    clock = FakeClock()
    sampler = Sampler(0.5, max_rows=8, host=FakeHost(), gpus=None, clock=clock, t0=99.0)
    run_samples(sampler, clock, 3)
    samples = sampler.stop()
    assert samples.t_s == [1.0, 1.5, 2.0]
    assert samples.rows_merged == [1, 1, 1]
    assert samples.sample_count == 3
    assert samples.host is not None
    assert samples.host.process_cpu_pct == [1.0, 2.0, 3.0]
    assert samples.host.cpu_pct_per_core == [[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]]
    assert samples.host.cpu_count == 2 and samples.host.memory_total_bytes == 1000
    assert samples.gpus == []


def test_downsampling_keeps_at_most_max_rows_with_uniform_means() -> None:
    clock = FakeClock()
    host = FakeHost()
    sampler = Sampler(0.5, max_rows=8, host=host, gpus=None, clock=clock, t0=clock.now)
    run_samples(sampler, clock, 9)
    partial = sampler.snapshot()
    assert partial.rows_merged == [2, 2, 2, 2, 1]
    assert partial.host is not None and partial.host.process_cpu_pct[-1] == 9.0

    run_samples(sampler, clock, 31)
    samples = sampler.stop()
    assert len(samples.t_s) <= 8
    assert sum(samples.rows_merged) == 40 == samples.sample_count
    # 40 samples at max_rows=8 end as rows of 8 raw samples each.
    assert samples.rows_merged == [8] * 5
    assert samples.host is not None
    assert samples.host.process_cpu_pct == [4.5, 12.5, 20.5, 28.5, 36.5]
    assert samples.host.cpu_pct_per_core[0] == [4.5, 9.0]
    assert samples.t_s == [1.75, 5.75, 9.75, 13.75, 17.75]
    gaps = [b - a for a, b in zip(samples.t_s, samples.t_s[1:], strict=False)]
    assert all(gap == pytest.approx(4.0) for gap in gaps)
    # None-ignoring: workers_cpu_pct is None on odd samples, so a row averages its even samples.
    assert samples.host.workers_cpu_pct[0] == pytest.approx((2 + 4 + 6 + 8) / 4)
    assert host.calls == 40


def test_buffer_merge_rules_or_bitmask_and_none_ignoring_mean() -> None:
    buffer = SeriesBuffer(
        {"mask": Merge.BIT_OR, "mean": Merge.MEAN, "cores": Merge.ELEMENTWISE_MEAN}, max_rows=2
    )
    buffer.add(0.0, {"mask": 0x1, "mean": None, "cores": [10.0, 20.0]})
    buffer.add(1.0, {"mask": 0x4, "mean": 6.0, "cores": []})
    assert buffer.column("mask") == [0x1, 0x4]
    buffer.add(2.0, {"mask": None, "mean": None})
    buffer.add(3.0, {"mask": None})
    buffer.add(4.0, {"mask": 0x20, "mean": 2.0, "cores": [0.0, 40.0]})
    # After two halvings: one row of 4 raw samples and a partial row of 1.
    assert buffer.rows_merged() == [4, 1]
    assert buffer.samples_per_row == 4
    assert buffer.times() == [1.5, 4.0]
    assert buffer.column("mask") == [0x5, 0x20]
    assert buffer.column("mean") == [6.0, 2.0]
    assert buffer.column("cores") == [[10.0, 20.0], [0.0, 40.0]]
    assert len(buffer) == 2


def test_buffer_all_none_stays_none_and_odd_max_rows_rounds_down() -> None:
    buffer = SeriesBuffer({"x": Merge.MEAN, "m": Merge.BIT_OR}, max_rows=5)
    assert buffer.max_rows == 4
    for i in range(6):
        buffer.add(float(i), {})
    # Four single rows, halved to two when the fifth sample arrives; samples 5-6 make row 3.
    assert buffer.column("x") == [None, None, None]
    assert buffer.column("m") == [None, None, None]
    assert buffer.rows_merged() == [2, 2, 2]
    with pytest.raises(ValueError):
        SeriesBuffer({}, max_rows=1)


def test_gpu_throttle_masks_are_or_merged_through_the_sampler() -> None:
    clock = FakeClock()
    gpus = FakeGpus([0x1, 0x2, None, 0x8])
    sampler = Sampler(0.5, max_rows=2, host=None, gpus=gpus, clock=clock, t0=clock.now)
    run_samples(sampler, clock, 4)
    samples = sampler.stop()
    (gpu,) = samples.gpus
    assert gpu.index == 3 and gpu.name == "Fake"
    assert gpu.throttle_reasons == [0x3, 0x8]
    assert gpu.utilization_pct == [50.0, 50.0]
    assert gpu.power_w == [None, None]
    assert gpu.gpm is not None and gpu.gpm.sm_active_pct == [7.0, 7.0]
    assert gpu.gpm.fp16_active_pct == [None, None]
    assert samples.host is None
    assert gpus.closed


# ---------------------------------------------------------------------------------------------
# Failures


def test_backend_failing_mid_run_is_switched_off_and_others_continue() -> None:
    clock = FakeClock()
    host = FakeHost(fail_at=3)
    gpus = FakeGpus([0x0])
    sampler = Sampler(0.5, host=host, gpus=gpus, clock=clock, t0=clock.now)
    run_samples(sampler, clock, 5)
    collectors = sampler.collectors()
    assert collectors["host"] == CollectorStatus(available=False, reason="host: RuntimeError: boom")
    assert collectors["nvml"].available and collectors["gpm"].available
    samples = sampler.stop()
    assert host.calls == 3  # not retried after the failure
    assert samples.host is not None
    assert samples.host.process_cpu_pct == [1.0, 2.0, None, None, None]
    assert samples.host.cpu_pct_per_core[2:] == [[], [], []]
    assert samples.gpus[0].utilization_pct == [50.0] * 5
    assert samples.sample_count == 5
    assert host.closed and gpus.closed


def test_unavailable_backends_give_no_series_and_a_reason() -> None:
    host = FakeHost()
    host.status = CollectorStatus(available=False, reason="host: psutil broke")
    sampler = Sampler(0.5, host=host, gpus=None, clock=FakeClock())
    sampler.sample_once()
    assert host.calls == 0
    samples = sampler.stop()
    assert samples.host is None and samples.gpus == []
    assert samples.t_s == [0.0]
    collectors = sampler.collectors()
    assert collectors["host"].reason == "host: psutil broke"
    assert not collectors["nvml"].available and not collectors["gpm"].available


# ---------------------------------------------------------------------------------------------
# NVML backend with a fake pynvml


def test_fake_nvml_only_uses_names_that_exist_in_pynvml() -> None:
    names = [name for name in vars(FakeNvml) if name.startswith(("nvml", "NVML", "c_nvml"))]
    assert names
    missing = [name for name in names if not hasattr(real_nvml, name)]
    assert missing == []


def test_cuda_visible_devices_index_selects_that_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    clock = FakeClock()
    gpus = NvmlMetrics(FakeNvml(count=2), clock=clock)
    sampler = Sampler(0.5, host=None, gpus=gpus, clock=clock, t0=clock.now)
    run_samples(sampler, clock, 2)
    samples = sampler.stop()
    (gpu,) = samples.gpus
    assert gpu.index == 1
    assert gpu.name == "Fake GPU 1"
    assert gpu.uuid == "GPU-111a-0000"
    assert gpu.memory_total_bytes == 80_000
    assert gpu.power_limit_w == 700.0
    assert gpu.max_sm_clock_mhz == 1980.0
    assert gpu.utilization_pct == [91.0, 91.0]
    assert gpu.memory_utilization_pct == [40.0, 40.0]
    assert gpu.memory_used_bytes == [2000.0, 2000.0]
    assert gpu.power_w == [350.0, 350.0]
    assert gpu.sm_clock_mhz == [1500.0, 1500.0]
    assert gpu.temperature_c == [61.0, 61.0]
    assert gpu.throttle_reasons == [0x4, 0x4]


@pytest.mark.parametrize(
    ("visible", "expected"),
    [
        (None, [0, 1, 2]),
        ("2,0", [2, 0]),
        ("GPU-222", [2]),
        ("GPU-111a-0000,0", [1, 0]),
        ("0,-1,2", [0]),
        ("1,7,2", [1]),
        ("MIG-abc", [0, 1, 2]),
    ],
)
def test_cuda_visible_devices_parsing(visible: str | None, expected: list[int]) -> None:
    environ = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    gpus = NvmlMetrics(FakeNvml(count=3), environ=environ)
    assert [device.index for device in gpus.devices] == expected
    gpus.close()


def test_cuda_visible_devices_hiding_all_gpus_makes_nvml_unavailable() -> None:
    nvml = FakeNvml(count=2)
    gpus = NvmlMetrics(nvml, environ={"CUDA_VISIBLE_DEVICES": ""})
    assert not gpus.status.available
    assert "selects no GPU" in (gpus.status.reason or "")
    assert nvml.shut_down


def test_unsupported_power_leaves_only_power_empty() -> None:
    clock = FakeClock()
    nvml = FakeNvml(count=1, errors={"nvmlDeviceGetPowerUsage": real_nvml.NVMLError_NotSupported()})
    sampler = nvml_sampler(nvml, clock)
    run_samples(sampler, clock, 3)
    samples = sampler.stop()
    (gpu,) = samples.gpus
    assert gpu.power_w == [None, None, None]
    assert gpu.utilization_pct == [90.0, 90.0, 90.0]
    assert sampler.collectors()["nvml"].available
    assert nvml.calls["nvmlDeviceGetPowerUsage"] == 1  # remembered, not re-queried


def test_missing_clock_event_reasons_falls_back_to_throttle_reasons() -> None:
    clock = FakeClock()
    error = real_nvml.NVMLError_FunctionNotFound()
    nvml = FakeNvml(count=1, errors={"nvmlDeviceGetCurrentClocksEventReasons": error})
    sampler = nvml_sampler(nvml, clock)
    run_samples(sampler, clock, 2)
    assert sampler.stop().gpus[0].throttle_reasons == [0x8, 0x8]


def test_gpm_metrics_between_consecutive_samples() -> None:
    clock = FakeClock()
    nvml = FakeNvml(count=1)
    sampler = nvml_sampler(nvml, clock)
    assert sampler.collectors()["gpm"] == CollectorStatus(available=True)
    run_samples(sampler, clock, 2)
    sampler.sample_once()
    sampler.sample_once()  # no time since the last GPM sample: too short a window, skipped
    samples = sampler.stop()
    gpm = samples.gpus[0].gpm
    assert gpm is not None
    # The fake reports metricId * 1.5, so each column shows which metric fed it.
    assert gpm.sm_active_pct == [None, 2 * 1.5, 2 * 1.5, None]
    assert gpm.sm_occupancy_pct[1] == 3 * 1.5
    assert gpm.tensor_active_pct[1] == 5 * 1.5
    assert gpm.dram_bandwidth_pct[1] == 10 * 1.5
    assert gpm.fp32_active_pct[1] == 12 * 1.5
    assert gpm.fp16_active_pct[1] == 13 * 1.5
    assert nvml.calls["nvmlGpmSampleGet"] == 3
    assert nvml.live_samples == {}  # both samples freed at close
    assert nvml.shut_down


def test_gpm_unsupported_gives_no_gpm_series_and_a_reason() -> None:
    clock = FakeClock()
    nvml = FakeNvml(count=1, gpm_supported=False)
    sampler = nvml_sampler(nvml, clock)
    run_samples(sampler, clock, 2)
    samples = sampler.stop()
    assert samples.gpus[0].gpm is None
    assert samples.gpus[0].utilization_pct == [90.0, 90.0]
    status = sampler.collectors()["gpm"]
    assert not status.available
    assert status.reason == "gpm: GPU 0 (Fake GPU 0): GPM is not supported on this GPU"
    assert sampler.collectors()["nvml"].available
    assert nvml.live_samples == {}


def test_gpm_query_error_at_start_is_a_gpm_reason_not_an_nvml_failure() -> None:
    error = real_nvml.NVMLError_FunctionNotFound()
    gpus = NvmlMetrics(FakeNvml(count=1, errors={"nvmlGpmQueryDeviceSupport": error}), environ={})
    assert gpus.status.available
    assert not gpus.gpm_status.available
    assert "NVMLError_FunctionNotFound" in (gpus.gpm_status.reason or "")
    assert not gpus.devices[0].gpm_supported
    gpus.close()


def test_gpm_failing_mid_run_stops_gpm_only() -> None:
    clock = FakeClock()
    nvml = FakeNvml(count=1, errors={"nvmlGpmMetricsGet": real_nvml.NVMLError_Unknown()})
    nvml.fail_after = 1
    sampler = nvml_sampler(nvml, clock)
    run_samples(sampler, clock, 4)
    assert nvml.live_samples == {}  # freed as soon as GPM failed
    samples = sampler.stop()
    gpu = samples.gpus[0]
    assert gpu.gpm is not None and gpu.gpm.sm_active_pct == [None, 3.0, None, None]
    assert gpu.utilization_pct == [90.0] * 4
    collectors = sampler.collectors()
    assert collectors["nvml"].available
    assert not collectors["gpm"].available
    assert "NVMLError_Unknown" in (collectors["gpm"].reason or "")


def test_nvml_error_mid_run_disables_nvml_with_its_reason() -> None:
    clock = FakeClock()
    error = real_nvml.NVMLError_GpuIsLost()
    nvml = FakeNvml(count=1, errors={"nvmlDeviceGetUtilizationRates": error})
    nvml.fail_after = 2
    sampler = nvml_sampler(nvml, clock)
    run_samples(sampler, clock, 4)
    collectors = sampler.collectors()
    assert collectors["nvml"] == CollectorStatus(
        available=False, reason="nvml: NVMLError_GpuIsLost: GPU is lost"
    )
    assert not collectors["gpm"].available
    samples = sampler.stop()
    assert samples.gpus[0].utilization_pct == [90.0, 90.0, None, None]
    assert samples.sample_count == 4
    assert nvml.live_samples == {} and nvml.shut_down


def test_nvml_import_failure_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    gpus = NvmlMetrics()
    assert not gpus.status.available
    assert (gpus.status.reason or "").startswith("nvml: pynvml is not installed")
    assert gpus.read() == []
    gpus.close()


def test_nvml_init_failure_is_reported_and_sampling_goes_on() -> None:
    clock = FakeClock()
    nvml = FakeNvml(init_error=real_nvml.NVMLError_LibraryNotFound())
    gpus = NvmlMetrics(nvml, environ={})
    sampler = Sampler(0.5, host=FakeHost(), gpus=gpus, clock=clock, t0=clock.now)
    run_samples(sampler, clock, 2)
    samples = sampler.stop()
    assert samples.gpus == []
    assert samples.host is not None and samples.host.process_cpu_pct == [1.0, 2.0]
    collectors = sampler.collectors()
    assert collectors["nvml"] == CollectorStatus(
        available=False, reason="nvml: NVMLError_LibraryNotFound: NVML Shared Library Not Found"
    )
    assert not collectors["gpm"].available
    assert not nvml.shut_down  # init failed, so there is nothing to shut down


def test_no_gpu_makes_nvml_unavailable() -> None:
    nvml = FakeNvml(count=0)
    gpus = NvmlMetrics(nvml, environ={})
    assert gpus.status == CollectorStatus(available=False, reason="nvml: no NVIDIA GPU found")
    assert nvml.shut_down


# ---------------------------------------------------------------------------------------------
# The thread


def sampler_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == THREAD_NAME]


def wait_for(predicate: Any, timeout_s: float = 1.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def test_stop_is_prompt_with_a_long_interval_and_idempotent() -> None:
    host = FakeHost()
    sampler = Sampler(10.0, host=host, gpus=None)
    sampler.start()
    sampler.start()  # no second thread
    wait_for(lambda: host.calls >= 1)  # the first sample is taken at once
    (thread,) = sampler_threads()
    assert thread.daemon
    started = time.monotonic()
    samples = sampler.stop()
    assert time.monotonic() - started < 0.5
    assert samples.sample_count == 2  # first sample and the final one on stop
    assert sampler_threads() == []
    assert host.closed
    assert sampler.stop() is samples
    with pytest.raises(RuntimeError):
        sampler.start()


def test_thread_samples_on_its_interval_and_counts_its_cpu() -> None:
    sampler = Sampler(0.02, host=FakeHost(), gpus=None)
    sampler.start()
    time.sleep(0.15)
    samples = sampler.stop()
    assert samples.sample_count >= 4
    assert samples.t_s == sorted(samples.t_s)
    assert samples.sampler_cpu_s >= 0.0
    assert samples.interval_s == 0.02
    assert sampler_threads() == []


def test_stop_does_not_wait_for_a_hung_backend() -> None:
    release = threading.Event()
    host = FakeHost(block=release)
    sampler = Sampler(10.0, host=host, gpus=None)
    sampler.start()
    wait_for(lambda: host.calls >= 1)
    started = time.monotonic()
    samples = sampler.stop(timeout=0.1)
    assert time.monotonic() - started < 0.3
    assert samples.sample_count == 0
    assert not host.closed  # the thread is still inside read(): closing now would race it
    release.set()
    for thread in sampler_threads():
        thread.join(1.0)
    assert sampler_threads() == []
    assert host.closed  # closed by the thread on its way out
    assert sampler.stop().sample_count == 0


# ---------------------------------------------------------------------------------------------
# Real psutil and the real backends


def test_host_metrics_on_the_real_process_and_a_child() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        host = HostMetrics(worker_scan_interval_s=0.0)
        assert host.status.available
        reading = host.read()
        assert len(reading.cpu_pct_per_core) == host.cpu_count > 0
        assert (reading.process_rss_bytes or 0) > 0
        assert (reading.worker_count or 0) >= 1
        assert (reading.workers_rss_bytes or 0) > 0
        assert reading.workers_cpu_pct is not None and reading.workers_cpu_pct >= 0
        assert host.memory_total_bytes is not None
        assert 0 < (reading.memory_used_bytes or 0) <= host.memory_total_bytes
    finally:
        child.kill()
        child.wait()
    after = host.read()
    assert after.worker_count is not None and after.worker_count < (reading.worker_count or 0)
    host.close()


def test_create_sampler_runs_on_this_machine_and_serialises() -> None:
    sampler = create_sampler(0.05)
    sampler.start()
    time.sleep(0.1)
    samples = sampler.stop()
    assert samples.host is not None and samples.sample_count >= 2
    assert len(samples.host.process_rss_bytes) == len(samples.t_s)
    collectors = sampler.collectors()
    assert set(collectors) == {"host", "nvml", "gpm"}
    assert collectors["host"].available
    if not collectors["nvml"].available:
        assert (collectors["nvml"].reason or "").startswith("nvml: ")
        assert samples.gpus == []
    decoded = msgspec.json.decode(msgspec.json.encode(samples), type=Samples)
    assert decoded == samples

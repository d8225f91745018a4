"""GPU backend for the sampler: NVML device queries and GPM (GPU Performance Monitoring) metrics.

Only the GPUs this process can use are sampled: ``CUDA_VISIBLE_DEVICES`` is honoured when it
lists integer indices or ``GPU-`` UUIDs (full or unique prefix); anything else (MIG identifiers,
unparseable text) falls back to all devices. Indices are NVML's, which match CUDA's ordinals when
``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (and on machines with identical GPUs, in practice).

GPM metrics (Hopper and newer) are computed between two consecutive samples taken by
``nvmlGpmSampleGet``; the first reading of a run therefore has no GPM values.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torchdiag.capture.sampler import GpuDevice, GpuReading
from torchdiag.record import CollectorStatus

# NVML constant name -> GpmSeries field.
GPM_METRICS: dict[str, str] = {
    "NVML_GPM_METRIC_SM_UTIL": "sm_active_pct",
    "NVML_GPM_METRIC_SM_OCCUPANCY": "sm_occupancy_pct",
    "NVML_GPM_METRIC_ANY_TENSOR_UTIL": "tensor_active_pct",
    "NVML_GPM_METRIC_DRAM_BW_UTIL": "dram_bandwidth_pct",
    "NVML_GPM_METRIC_FP32_UTIL": "fp32_active_pct",
    "NVML_GPM_METRIC_FP16_UTIL": "fp16_active_pct",
}

# GPM values over a very short window are dominated by noise (NVIDIA recommends >= 100 ms);
# a reading closer than this to the previous GPM sample (e.g. the final one at stop) skips GPM.
MIN_GPM_WINDOW_S = 0.1

# Errors that mean "this one field is not available here": the column stays None and the query is
# not retried, but the device keeps being sampled.
_FIELD_ERRORS = ("NVMLError_NotSupported", "NVMLError_FunctionNotFound", "NVMLError_NoPermission")

_NVML_SUCCESS = 0


def _reason(prefix: str, exc: BaseException) -> str:
    return f"{prefix}: {type(exc).__name__}: {exc}"


def _text(value: Any) -> str:
    # pynvml returns str, but releases before 11.5 returned bytes.
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


@dataclass
class _GpmState:
    """Two reusable GPM sample buffers and one reusable metrics request for one device."""

    previous: Any
    current: Any
    request: Any
    fields: list[str]
    has_previous: bool = False
    previous_time: float = 0.0


@dataclass
class _Device:
    info: GpuDevice
    handle: Any
    gpm: _GpmState | None = None
    unsupported: set[str] = field(default_factory=set)


class NvmlMetrics:
    """Samples the visible NVIDIA GPUs through NVML. Construction never raises; see ``status``.

    ``nvml`` is the pynvml module (injectable for tests); by default ``import pynvml``.
    ``environ`` is where ``CUDA_VISIBLE_DEVICES`` is read (default ``os.environ``).
    """

    def __init__(
        self,
        nvml: Any = None,
        *,
        environ: Mapping[str, str] | None = None,
        gpm: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.status = CollectorStatus(available=True)
        self.gpm_status = CollectorStatus(available=False, reason="gpm: disabled")
        self._devices: list[_Device] = []
        self._gpm_problems: list[str] = []
        self._clock = clock
        self._initialized = False
        self._closed = False
        try:
            self._nvml = nvml if nvml is not None else importlib.import_module("pynvml")
        except ImportError as exc:
            self._nvml = None
            self._set_unavailable(f"nvml: pynvml is not installed ({exc})")
            return
        try:
            self._nvml.nvmlInit()
        except Exception as exc:
            self._set_unavailable(_reason("nvml", exc))
            return
        self._initialized = True
        self._field_errors = tuple(
            getattr(self._nvml, name) for name in _FIELD_ERRORS if hasattr(self._nvml, name)
        )
        self._reason_queries = [
            (name, getattr(self._nvml, name))
            for name in (
                "nvmlDeviceGetCurrentClocksEventReasons",
                "nvmlDeviceGetCurrentClocksThrottleReasons",  # before driver 535
            )
            if hasattr(self._nvml, name)
        ]
        try:
            self._open_devices(os.environ if environ is None else environ, gpm)
        except Exception as exc:
            self._set_unavailable(_reason("nvml", exc))
            self.close()

    @property
    def devices(self) -> list[GpuDevice]:
        """The sampled GPUs, in the order of :meth:`read`'s readings."""
        return [device.info for device in self._devices]

    def read(self) -> list[GpuReading]:
        """One reading per device. Unsupported fields are None; other NVML errors raise."""
        return [self._read_device(device) for device in self._devices]

    def close(self) -> None:
        """Free the GPM samples and shut NVML down. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for device in self._devices:
            self._free_gpm(device)
        if self._initialized:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()

    # -- construction --------------------------------------------------------------------------

    def _set_unavailable(self, reason: str) -> None:
        self.status = CollectorStatus(available=False, reason=reason)
        self.gpm_status = CollectorStatus(available=False, reason=f"gpm: needs NVML ({reason})")

    def _open_devices(self, environ: Mapping[str, str], gpm: bool) -> None:
        nvml = self._nvml
        count = int(nvml.nvmlDeviceGetCount())
        if count == 0:
            self._set_unavailable("nvml: no NVIDIA GPU found")
            self.close()
            return
        visible = environ.get("CUDA_VISIBLE_DEVICES")
        indices = self._visible_indices(count, visible)
        if not indices:
            self._set_unavailable(f"nvml: CUDA_VISIBLE_DEVICES={visible!r} selects no GPU")
            self.close()
            return
        for index in indices:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            device = _Device(info=GpuDevice(index=index), handle=handle)
            raw_name = self._query(device, "name", nvml.nvmlDeviceGetName, handle)
            uuid = self._query(device, "uuid", nvml.nvmlDeviceGetUUID, handle)
            memory = self._query(device, "memory", nvml.nvmlDeviceGetMemoryInfo, handle)
            power_limit_mw = self._query(
                device, "power_limit", nvml.nvmlDeviceGetEnforcedPowerLimit, handle
            )
            max_sm_clock = self._query(
                device, "max_sm_clock", nvml.nvmlDeviceGetMaxClockInfo, handle, nvml.NVML_CLOCK_SM
            )
            name = "" if raw_name is None else _text(raw_name)
            self._devices.append(device)  # before GPM so that close() frees what GPM allocates
            if gpm:
                self._open_gpm(device, index, name)
            device.info = GpuDevice(
                index=index,
                name=name,
                uuid=None if uuid is None else _text(uuid),
                memory_total_bytes=None if memory is None else int(memory.total),
                power_limit_w=None if power_limit_mw is None else power_limit_mw / 1000.0,
                max_sm_clock_mhz=None if max_sm_clock is None else float(max_sm_clock),
                gpm_supported=device.gpm is not None,
            )
        if gpm:
            self._update_gpm_status()

    def _visible_indices(self, count: int, visible: str | None) -> list[int]:
        """NVML indices named by ``CUDA_VISIBLE_DEVICES``, in its order; all if it is unset."""
        everything = list(range(count))
        if visible is None:
            return everything
        tokens = [token.strip() for token in visible.split(",") if token.strip()]
        if not all(_is_int(token) or token.startswith("GPU-") for token in tokens):
            return everything
        uuids: list[str] = []
        if any(token.startswith("GPU-") for token in tokens):
            nvml = self._nvml
            handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in everything]
            uuids = [_text(nvml.nvmlDeviceGetUUID(handle)) for handle in handles]
        indices: list[int] = []
        for token in tokens:
            if _is_int(token):
                index = int(token)
            else:
                matches = [i for i, uuid in enumerate(uuids) if uuid.startswith(token)]
                index = matches[0] if len(matches) == 1 else -1
            # Like CUDA: the list ends at the first entry that names no device.
            if not 0 <= index < count:
                break
            if index not in indices:
                indices.append(index)
        return indices

    def _open_gpm(self, device: _Device, index: int, name: str) -> None:
        nvml = self._nvml
        label = f"GPU {index}" + (f" ({name})" if name else "")
        try:
            supported = bool(nvml.nvmlGpmQueryDeviceSupport(device.handle).isSupportedDevice)
        except Exception as exc:  # no such function (old driver or pynvml) or not supported
            self._gpm_problems.append(f"{label}: {type(exc).__name__}: {exc}")
            return
        if not supported:
            self._gpm_problems.append(f"{label}: GPM is not supported on this GPU")
            return
        samples: list[Any] = []
        try:
            metric_ids = [(getattr(nvml, name), column) for name, column in GPM_METRICS.items()]
            # One request (about 20 kB) and two samples alternating as "previous" and "current",
            # reused for the whole run so that nothing is allocated per read.
            request = nvml.c_nvmlGpmMetricsGet_t()
            request.version = nvml.NVML_GPM_METRICS_GET_VERSION
            request.numMetrics = len(metric_ids)
            for i, (metric_id, _) in enumerate(metric_ids):
                request.metrics[i].metricId = metric_id
            samples.append(nvml.nvmlGpmSampleAlloc())
            samples.append(nvml.nvmlGpmSampleAlloc())
        except Exception as exc:
            for sample in samples:
                with contextlib.suppress(Exception):
                    nvml.nvmlGpmSampleFree(sample)
            self._gpm_problems.append(f"{label}: {type(exc).__name__}: {exc}")
            return
        previous, current = samples
        device.gpm = _GpmState(previous, current, request, [column for _, column in metric_ids])

    def _update_gpm_status(self) -> None:
        working = any(device.gpm is not None for device in self._devices)
        problems = "; ".join(self._gpm_problems)
        self.gpm_status = CollectorStatus(
            available=working, reason=f"gpm: {problems}" if problems else None
        )

    # -- sampling ------------------------------------------------------------------------------

    def _query(self, device: _Device, column: str, query: Callable[..., Any], *args: Any) -> Any:
        if column in device.unsupported:
            return None
        try:
            return query(*args)
        except self._field_errors:
            device.unsupported.add(column)
            return None

    def _read_device(self, device: _Device) -> GpuReading:
        nvml = self._nvml
        handle = device.handle
        utilization = self._query(device, "utilization", nvml.nvmlDeviceGetUtilizationRates, handle)
        memory = self._query(device, "memory", nvml.nvmlDeviceGetMemoryInfo, handle)
        power_mw = self._query(device, "power", nvml.nvmlDeviceGetPowerUsage, handle)
        sm_clock = self._query(
            device, "sm_clock", nvml.nvmlDeviceGetClockInfo, handle, nvml.NVML_CLOCK_SM
        )
        temperature = self._query(
            device, "temperature", nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU
        )
        reasons = None
        # The event-reasons call replaced the throttle-reasons one; a driver without it reports
        # FunctionNotFound once and the older call is used from then on.
        for name, query in self._reason_queries:
            reasons = self._query(device, name, query, handle)
            if reasons is not None or name not in device.unsupported:
                break
        return GpuReading(
            utilization_pct=None if utilization is None else float(utilization.gpu),
            memory_utilization_pct=None if utilization is None else float(utilization.memory),
            memory_used_bytes=None if memory is None else float(memory.used),
            power_w=None if power_mw is None else power_mw / 1000.0,
            sm_clock_mhz=None if sm_clock is None else float(sm_clock),
            temperature_c=None if temperature is None else float(temperature),
            throttle_reasons=None if reasons is None else int(reasons),
            gpm=self._read_gpm(device),
        )

    def _read_gpm(self, device: _Device) -> dict[str, float | None] | None:
        state = device.gpm
        if state is None:
            return None
        now = self._clock()
        if state.has_previous and now - state.previous_time < MIN_GPM_WINDOW_S:
            return None
        nvml = self._nvml
        try:
            nvml.nvmlGpmSampleGet(device.handle, state.current)
            values = None
            if state.has_previous:
                request = state.request
                request.sample1 = state.previous
                request.sample2 = state.current
                nvml.nvmlGpmMetricsGet(request)
                values = {}
                for i, column in enumerate(state.fields):
                    metric = request.metrics[i]
                    ok = getattr(metric, "nvmlReturn", _NVML_SUCCESS) == _NVML_SUCCESS
                    values[column] = float(metric.value) if ok else None
        except Exception as exc:
            # GPM failing must not cost the basic NVML columns: only GPM stops, on this device.
            self._gpm_problems.append(_reason(f"GPU {device.info.index}", exc))
            self._free_gpm(device)
            self._update_gpm_status()
            return None
        state.previous, state.current = state.current, state.previous
        state.has_previous = True
        state.previous_time = now
        return values

    def _free_gpm(self, device: _Device) -> None:
        state = device.gpm
        if state is None:
            return
        device.gpm = None
        for sample in (state.previous, state.current):
            with contextlib.suppress(Exception):
                self._nvml.nvmlGpmSampleFree(sample)


def _is_int(token: str) -> bool:
    try:
        int(token)
    except ValueError:
        return False
    return True

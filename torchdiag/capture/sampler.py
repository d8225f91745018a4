"""Background sampler: host and GPU metrics on a timer thread, in bounded memory.

A daemon thread named ``torchdiag-sampler`` reads a host backend (psutil, see
:mod:`torchdiag.capture.host_metrics`) and a GPU backend (NVML, see
:mod:`torchdiag.capture.nvml_metrics`) every ``interval_s`` seconds and appends one row to a
:class:`SeriesBuffer`. :meth:`Sampler.stop` returns the columns as a
:class:`~torchdiag.record.Samples`.

Memory bound: the buffer never holds more than ``max_rows`` rows. A row has
``2 + 6 + cpu_count + 13 * gpus`` values (time and merge count; six host scalars plus one value
per CPU core; seven NVML and six GPM values per GPU), so the sampler keeps at most
``max_rows * (8 + cpu_count + 13 * gpus)`` numbers however long the run is: with the default 1024
rows, 64 cores and 8 GPUs that is about 180k numbers (a few MB of Python floats). When the buffer
is full, adjacent rows are merged pairwise and every later row averages twice as many raw samples,
so rows stay evenly spaced in time.

Sampling never raises into training: a backend whose ``read()`` fails is switched off and reported
through :meth:`Sampler.collectors`; the other backends keep sampling.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from torchdiag.capture.series_buffer import Merge, SeriesBuffer
from torchdiag.record import CollectorStatus, GpmSeries, GpuSeries, HostSeries, Samples

THREAD_NAME = "torchdiag-sampler"

HOST_SCALAR_COLUMNS = (
    "process_cpu_pct",
    "process_rss_bytes",
    "worker_count",
    "workers_cpu_pct",
    "workers_rss_bytes",
    "memory_used_bytes",
)
GPU_MEAN_COLUMNS = (
    "utilization_pct",
    "memory_utilization_pct",
    "memory_used_bytes",
    "power_w",
    "sm_clock_mhz",
    "temperature_c",
)
GPM_COLUMNS = (
    "sm_active_pct",
    "sm_occupancy_pct",
    "tensor_active_pct",
    "dram_bandwidth_pct",
    "fp32_active_pct",
    "fp16_active_pct",
)


# ---------------------------------------------------------------------------------------------
# Backend contract


@dataclass(slots=True)
class HostReading:
    """One host sample. ``None`` means the value could not be read this time."""

    cpu_pct_per_core: list[float]
    process_cpu_pct: float | None = None
    process_rss_bytes: float | None = None
    worker_count: float | None = None
    workers_cpu_pct: float | None = None
    workers_rss_bytes: float | None = None
    memory_used_bytes: float | None = None


@dataclass(slots=True)
class GpuReading:
    """One sample of one GPU; ``gpm`` maps :data:`GPM_COLUMNS` names to values, or is ``None``."""

    utilization_pct: float | None = None
    memory_utilization_pct: float | None = None
    memory_used_bytes: float | None = None
    power_w: float | None = None
    sm_clock_mhz: float | None = None
    temperature_c: float | None = None
    throttle_reasons: int | None = None
    gpm: Mapping[str, float | None] | None = None


@dataclass(frozen=True, slots=True)
class GpuDevice:
    """What a GPU backend knows about a device once, at construction."""

    index: int
    name: str = ""
    uuid: str | None = None
    memory_total_bytes: int | None = None
    power_limit_w: float | None = None
    max_sm_clock_mhz: float | None = None
    gpm_supported: bool = False


class HostBackend(Protocol):
    """Reads host CPU and memory. Construction must not raise: failures go into ``status``."""

    @property
    def status(self) -> CollectorStatus: ...

    @property
    def cpu_count(self) -> int: ...

    @property
    def memory_total_bytes(self) -> int | None: ...

    def read(self) -> HostReading: ...

    def close(self) -> None: ...


class GpuBackend(Protocol):
    """Reads GPUs; ``read()`` returns one reading per entry of ``devices``, in the same order."""

    @property
    def status(self) -> CollectorStatus: ...

    @property
    def gpm_status(self) -> CollectorStatus: ...

    @property
    def devices(self) -> Sequence[GpuDevice]: ...

    def read(self) -> Sequence[GpuReading]: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------------------------------
# The sampler


def _failure_reason(collector: str, exc: BaseException) -> str:
    return f"{collector}: {type(exc).__name__}: {exc}"


class Sampler:
    """Samples host and GPU backends on a daemon thread into a bounded :class:`SeriesBuffer`.

    ``t0`` is the reference (a value of ``clock``) that ``Samples.t_s`` counts from; it defaults
    to ``clock()`` at construction. A backend that is ``None`` or unavailable at construction
    produces no series (``host=None`` / ``gpus=[]``); one that fails later keeps its series, with
    ``None`` from the failure on.
    """

    def __init__(
        self,
        interval_s: float = 0.5,
        *,
        max_rows: int = 1024,
        host: HostBackend | None,
        gpus: GpuBackend | None,
        clock: Callable[[], float] = time.monotonic,
        t0: float | None = None,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.interval_s = float(interval_s)
        self._clock = clock
        self._t0 = clock() if t0 is None else t0
        self._host_backend = host
        self._gpu_backend = gpus
        self._host = host if host is not None and host.status.available else None
        self._gpus = gpus if gpus is not None and gpus.status.available else None
        self._host_sampled = self._host is not None
        self._host_cpu_count = self._host.cpu_count if self._host is not None else 0
        self._host_memory_total = self._host.memory_total_bytes if self._host is not None else None
        self._devices: list[GpuDevice] = list(self._gpus.devices) if self._gpus is not None else []
        self._buffer = SeriesBuffer(self._column_merges(), max_rows)
        # Why a collector stopped mid-run, by collector name.
        self._failures: dict[str, str] = {}
        self._cpu_s = 0.0
        self._lock = threading.Lock()
        self._stop_lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_done = False
        self._close_on_thread_exit = False
        self._closed = False
        self._result: Samples | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the sampling thread (takes a first sample at once). A second call does nothing."""
        if self._result is not None:
            raise RuntimeError("this Sampler has been stopped; create a new one")
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> Samples:
        """Stop the thread (after one final sample), close the backends and return the series.

        Waits at most ``timeout`` seconds for the thread. If a backend call hangs past that, the
        series collected so far are returned and the thread closes the backends when the call
        returns. Later calls return the same result.
        """
        with self._stop_lock:
            if self._result is not None:
                return self._result
            self._stop_event.set()
            if self._thread is not None:
                self._thread.join(timeout)
            self._result = self.snapshot()
            with self._lock:
                self._closed = True
                close_now = self._thread is None or self._thread_done
                self._close_on_thread_exit = not close_now
            if close_now:
                self._close_backends()
            return self._result

    def collectors(self) -> dict[str, CollectorStatus]:
        """Status of ``"host"``, ``"nvml"`` and ``"gpm"`` (and ``"sampler"`` if its loop failed)."""
        failures = self._failures
        statuses: dict[str, CollectorStatus] = {}
        if self._host_backend is None:
            statuses["host"] = CollectorStatus(available=False, reason="host: no backend")
        elif "host" in failures:
            statuses["host"] = CollectorStatus(available=False, reason=failures["host"])
        else:
            statuses["host"] = self._host_backend.status
        gpus = self._gpu_backend
        if gpus is None:
            statuses["nvml"] = CollectorStatus(available=False, reason="nvml: no backend")
            statuses["gpm"] = CollectorStatus(available=False, reason="gpm: no NVML backend")
        elif "nvml" in failures:
            statuses["nvml"] = CollectorStatus(available=False, reason=failures["nvml"])
            statuses["gpm"] = CollectorStatus(
                available=False, reason=f"gpm: stopped with NVML ({failures['nvml']})"
            )
        else:
            statuses["nvml"] = gpus.status
            if gpus.status.available:
                statuses["gpm"] = gpus.gpm_status
            else:
                statuses["gpm"] = CollectorStatus(
                    available=False, reason=f"gpm: needs NVML ({gpus.status.reason})"
                )
        if "sampler" in failures:
            statuses["sampler"] = CollectorStatus(available=False, reason=failures["sampler"])
        return statuses

    # -- sampling ------------------------------------------------------------------------------

    def sample_once(self) -> None:
        """Read every working backend once and add a row. Never raises for a backend failure."""
        if self._closed:
            return
        cpu_start = time.thread_time()
        t = self._clock() - self._t0
        row: dict[Hashable, Any] = {}
        host = self._host
        if host is not None:
            try:
                reading = host.read()
            except Exception as exc:
                self._disable("host", exc)
            else:
                row[("host", "cpu_pct_per_core")] = reading.cpu_pct_per_core
                for name in HOST_SCALAR_COLUMNS:
                    row[("host", name)] = getattr(reading, name)
        gpus = self._gpus
        if gpus is not None:
            try:
                readings = gpus.read()
            except Exception as exc:
                self._disable("nvml", exc)
            else:
                for position, gpu in enumerate(readings):
                    for name in GPU_MEAN_COLUMNS:
                        row[("gpu", position, name)] = getattr(gpu, name)
                    row[("gpu", position, "throttle_reasons")] = gpu.throttle_reasons
                    if gpu.gpm is not None:
                        for name in GPM_COLUMNS:
                            row[("gpm", position, name)] = gpu.gpm.get(name)
        with self._lock:
            if self._closed:  # stop() gave up waiting for this sample; its result is out
                return
            self._buffer.add(t, row)
            self._cpu_s += time.thread_time() - cpu_start

    def snapshot(self) -> Samples:
        """The series collected so far (safe to call while the thread runs)."""
        with self._lock:
            buffer = self._buffer
            host = None
            if self._host_sampled:
                host = HostSeries(
                    cpu_count=self._host_cpu_count,
                    memory_total_bytes=self._host_memory_total,
                    cpu_pct_per_core=buffer.column(("host", "cpu_pct_per_core")),
                    **{name: buffer.column(("host", name)) for name in HOST_SCALAR_COLUMNS},
                )
            gpus = [self._gpu_series(i, device) for i, device in enumerate(self._devices)]
            return Samples(
                interval_s=self.interval_s,
                max_rows=buffer.max_rows,
                sample_count=buffer.sample_count,
                sampler_cpu_s=self._cpu_s,
                t_s=buffer.times(),
                rows_merged=buffer.rows_merged(),
                host=host,
                gpus=gpus,
            )

    # -- internals -----------------------------------------------------------------------------

    def _column_merges(self) -> dict[Hashable, Merge]:
        merges: dict[Hashable, Merge] = {}
        if self._host is not None:
            merges[("host", "cpu_pct_per_core")] = Merge.ELEMENTWISE_MEAN
            for name in HOST_SCALAR_COLUMNS:
                merges[("host", name)] = Merge.MEAN
        for position, device in enumerate(self._devices):
            for name in GPU_MEAN_COLUMNS:
                merges[("gpu", position, name)] = Merge.MEAN
            merges[("gpu", position, "throttle_reasons")] = Merge.BIT_OR
            if device.gpm_supported:
                for name in GPM_COLUMNS:
                    merges[("gpm", position, name)] = Merge.MEAN
        return merges

    def _gpu_series(self, position: int, device: GpuDevice) -> GpuSeries:
        buffer = self._buffer
        gpm = None
        if device.gpm_supported:
            gpm = GpmSeries(**{n: buffer.column(("gpm", position, n)) for n in GPM_COLUMNS})
        return GpuSeries(
            index=device.index,
            name=device.name,
            uuid=device.uuid,
            memory_total_bytes=device.memory_total_bytes,
            power_limit_w=device.power_limit_w,
            max_sm_clock_mhz=device.max_sm_clock_mhz,
            throttle_reasons=buffer.column(("gpu", position, "throttle_reasons")),
            gpm=gpm,
            **{name: buffer.column(("gpu", position, name)) for name in GPU_MEAN_COLUMNS},
        )

    def _disable(self, collector: str, exc: BaseException) -> None:
        # One failure switches the backend off for the rest of the run. Expected, per-field
        # failures (an unsupported NVML query, a worker process that exited) are absorbed inside
        # the backends, so an exception that reaches here is structural: GPU lost, driver gone,
        # NVML uninitialised. Retrying every interval for days would repeat calls that can each
        # block for seconds and would leave a series with holes that read like an idle GPU.
        with self._lock:
            self._failures.setdefault(collector, _failure_reason(collector, exc))
        if collector == "host":
            self._host = None
        else:
            self._gpus = None

    def _run(self) -> None:
        try:
            next_due = time.monotonic()
            while True:
                self.sample_once()
                next_due += self.interval_s
                now = time.monotonic()
                if next_due <= now:
                    # A sample took longer than the interval: skip the missed ticks, no burst.
                    next_due = now + self.interval_s
                if self._stop_event.wait(next_due - now):
                    break
            self.sample_once()
        except Exception as exc:  # a bug here must not surface in the training process
            with self._lock:
                self._failures["sampler"] = _failure_reason("sampler", exc)
        finally:
            with self._lock:
                self._thread_done = True
                close_now = self._close_on_thread_exit
            if close_now:
                self._close_backends()

    def _close_backends(self) -> None:
        for backend in (self._host_backend, self._gpu_backend):
            if backend is not None:
                # Closing is best effort: the data is already out.
                with contextlib.suppress(Exception):
                    backend.close()


def create_sampler(
    interval_s: float = 0.5,
    *,
    max_rows: int = 1024,
    clock: Callable[[], float] = time.monotonic,
    t0: float | None = None,
    gpus: bool = True,
) -> Sampler:
    """A :class:`Sampler` on the real backends: psutil for the host, NVML for the GPUs.

    Never raises for a missing psutil/NVML/GPU: those show up in :meth:`Sampler.collectors`.
    NVML initialisation happens here, in the caller's thread, and can take a few hundred ms.
    """
    from torchdiag.capture.host_metrics import HostMetrics
    from torchdiag.capture.nvml_metrics import NvmlMetrics

    return Sampler(
        interval_s,
        max_rows=max_rows,
        host=HostMetrics(),
        gpus=NvmlMetrics() if gpus else None,
        clock=clock,
        t0=t0,
    )

"""Means over the background sampler's series, weighted by the raw samples each row holds: the
GPUs' utilisation (all together and each device), their memory peaks, and the host's CPU."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torchdiag.record import RunRecord
from torchdiag.view.numbers import finite


@dataclass(frozen=True)
class GpuUse:
    """One sampled GPU: its mean NVML utilisation (percent), its highest sampled memory use and
    its total memory (bytes); ``None`` where the samples have none."""

    index: int
    name: str
    utilization_pct: float | None
    memory_peak_bytes: int | None
    memory_total_bytes: int | None


@dataclass(frozen=True)
class HostCpu:
    """The host's CPU over the samples: the mean busy share of all its cores (percent of the
    machine), and this process's mean CPU (percent of one core: 200 is two cores busy)."""

    cores: int
    machine_pct: float | None
    process_pct: float | None


def _weighted_sum(values: Sequence[float | None], merged: Sequence[int]) -> tuple[float, float]:
    """(sum of value x raw samples, raw samples) over the rows with a finite value."""
    weighted = total = 0.0
    for value, n in zip(values, merged, strict=False):
        if finite(value) and n > 0:
            weighted += value * n
            total += n
    return weighted, total


def mean_gpu_busy_share(record: RunRecord) -> float | None:
    """Mean NVML utilisation over sampled GPUs (0-1), or None without GPU samples.

    NVML utilisation only says a kernel was running; it is an upper bound on useful GPU work and
    so a safe input to bounds on what removing GPU idle time could save.
    """
    if record.samples is None or not record.samples.gpus:
        return None
    # Each row is the mean of rows_merged[i] raw samples: weight it accordingly.
    weighted = total = 0.0
    for gpu in record.samples.gpus:
        w, n = _weighted_sum(gpu.utilization_pct, record.samples.rows_merged)
        weighted += w
        total += n
    return weighted / total / 100.0 if total else None


def gpu_use(record: RunRecord) -> list[GpuUse]:
    """Each sampled GPU's mean utilisation and memory peak, in the samples' order ([] without)."""
    samples = record.samples
    if samples is None:
        return []
    out = []
    for gpu in samples.gpus:
        weighted, n = _weighted_sum(gpu.utilization_pct, samples.rows_merged)
        used = [v for v in gpu.memory_used_bytes if finite(v)]
        out.append(
            GpuUse(
                index=gpu.index,
                name=gpu.name,
                utilization_pct=weighted / n if n else None,
                memory_peak_bytes=int(max(used)) if used else None,
                memory_total_bytes=gpu.memory_total_bytes,
            )
        )
    return out


def host_cpu(record: RunRecord) -> HostCpu | None:
    """The host's mean CPU use over the samples, or None without host samples."""
    samples = record.samples
    host = samples.host if samples is not None else None
    if samples is None or host is None or not samples.t_s:
        return None
    # A row's cores averaged: the machine's busy share in that row.
    per_row: list[float | None] = [
        sum(cores) / len(cores) if cores else None for cores in host.cpu_pct_per_core
    ]
    machine, n = _weighted_sum(per_row, samples.rows_merged)
    process, m = _weighted_sum(host.process_cpu_pct, samples.rows_merged)
    cores = host.cpu_count or max((len(c) for c in host.cpu_pct_per_core), default=0)
    return HostCpu(
        cores=cores,
        machine_pct=machine / n if n else None,
        process_pct=process / m if m else None,
    )


def mean_gpm_tensor_pct(record: RunRecord) -> float | None:
    """Mean GPM tensor-core activity over sampled GPUs (percent), or None without GPM."""
    samples = record.samples
    if samples is None:
        return None
    weighted = total = 0.0
    for gpu in samples.gpus:
        if gpu.gpm is None:
            continue
        w, n = _weighted_sum(gpu.gpm.tensor_active_pct, samples.rows_merged)
        weighted += w
        total += n
    return weighted / total if total else None
